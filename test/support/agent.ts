import type { TestContext } from 'node:test'
import type { WorkerConfig } from '../../src/config.js'
import type { Logger } from '../../src/shared/log.js'
import { WorkerAgent, type WorkerAgentDeps } from '../../src/worker/agent.js'
import { tempDir } from './cluster.js'
import { memoryLogger } from './log.js'

/** A real worker agent in this process on 127.0.0.1, port 0, a temp data dir; closed after the test. */
export async function startAgent(t: TestContext, config: Partial<WorkerConfig> = {}, log: Logger = memoryLogger('silent').log, deps: Omit<WorkerAgentDeps, 'log'> = {}): Promise<WorkerAgent> {
  const agent = new WorkerAgent(
    {
      id: 'w1',
      host: '127.0.0.1',
      port: 0,
      masters: [],
      advertise: null,
      heartbeatIntervalMs: 100,
      joinMaxBackoffMs: 500,
      dataDir: config.dataDir ?? tempDir(t, 'cloudai-worker-'),
      killGraceMs: 500,
      taskRetentionMs: 7 * 86_400_000,
      token: null,
      tokenFile: null,
      masterAuth: 'proof',
      clusterToken: null,
      tls: null,
      log: { level: 'silent', pretty: false },
      ...config,
    },
    { log, ...deps },
  )
  await agent.start()
  t.after(() => agent.close())
  return agent
}
