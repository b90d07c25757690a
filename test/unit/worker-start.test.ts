import assert from 'node:assert/strict'
import { createServer, type AddressInfo } from 'node:net'
import { test } from 'node:test'
import { isCloudaiError } from '../../src/shared/errors.js'
import { WorkerAgent } from '../../src/worker/agent.js'
import { startAgent } from '../support/agent.js'
import { tempDir, waitUntil } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

// A worker whose start fails closes what it started, as the master does: the data directory's
// lock above all, so that the next worker on the directory (a restart with the port fixed) starts.

test('a worker whose start fails (its port is in use) lets go of its data directory and leaves nothing running: the next worker there starts', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const taken = (blocker.address() as AddressInfo).port
  const dataDir = tempDir(t, 'cloudai-worker-')
  // Handles of this process, but for close requests under way (the loop's, not ours to count).
  const handles = (): string[] => process.getActiveResourcesInfo().filter((r) => r !== 'CloseReq').sort()
  const before = handles()

  const failing = new WorkerAgent({
    id: 'w1', host: '127.0.0.1', port: taken, masters: [], advertise: null, heartbeatIntervalMs: 100, joinMaxBackoffMs: 500, dataDir, killGraceMs: 500,
    taskRetentionMs: 7 * 86_400_000, token: null, tokenFile: null, masterAuth: 'proof', clusterToken: null, tls: null, log: { level: 'silent', pretty: false },
  }, { log: memoryLogger('silent').log })
  await assert.rejects(failing.start(), (err: unknown) => isCloudaiError(err) && err.code === 'CLOUDAI_BAD_CONFIG' && /cannot listen for gRPC/.test(err.message))
  // The socket of the refused bind closes on a later turn of the loop.
  await waitUntil(() => JSON.stringify(handles()) === JSON.stringify(before), 'the handles of before the start', 5000).catch(() => undefined)
  assert.deepEqual(handles(), before, 'no handle of the failed start is left')

  const next = await startAgent(t, { dataDir })
  assert.ok(next.port > 0 && next.port !== taken)
})
