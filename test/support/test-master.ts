import { checkAnswersOf } from './contract.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import type pino from 'pino'
import { MASTER_DEFAULTS, type MasterConfig } from '../../src/config.js'
import type { Logger } from '../../src/shared/log.js'
import type { ControlService } from '../../src/master/control-service.js'
import { Master } from '../../src/master/master.js'
import { MemoryStore } from '../../src/store/memory.js'
import type { Store } from '../../src/store/store.js'
import { RawClient } from './grpc-client.js'
import { memoryLogger } from './log.js'
import { RawWorker } from './raw-worker.js'

// The real master in the test's own process, for the tests of its front ends (HTTP API, WebSocket,
// prompt): the same composition root `cloudai master` runs, on the in-memory store (or the store
// the test gives, e.g. one that fails or is slow), gRPC and HTTP on ports the OS picks on 127.0.0.1,
// its key and lock in a temp dir. Started once per test file (before/after), since a start costs
// what a file of small tests does; tests that share one pick ids of their own.

export interface TestMaster {
  master: Master
  /** The control service the HTTP API and the prompt are given. */
  control: ControlService
  store: Store
  config: MasterConfig
  /** http://127.0.0.1:<port> */
  base: string
  /** 127.0.0.1:<port>, as a Host header names it. */
  host: string
  port: number
  /** The master's logger (anything else logging to it shows in `lines` too). */
  log: Logger
  /** What the master logged, parsed. */
  lines: ReturnType<typeof memoryLogger>['lines']
  /** Stops the master (idempotent) and removes its temp dir. */
  close(): Promise<void>
}

/** Settings of a test master: on loopback, ports by the OS, no dial pool or telemetry threads until a worker connects. */
export function testMasterConfig(dataDir: string, overrides: Partial<MasterConfig> = {}): MasterConfig {
  return {
    ...MASTER_DEFAULTS,
    grpcHost: '127.0.0.1',
    grpcPort: 0,
    httpHost: '127.0.0.1',
    httpPort: 0,
    dataDir,
    // Dials on the main thread: no Piscina pool to start and stop for a file of API tests.
    dialer: 'inline',
    // A thread per connected worker: none while no worker connects.
    telemetryThreads: 'per-worker',
    shutdownGraceMs: 1000,
    // A file of tests shares this master, and some of them (20,000 workers, lists of many MB) hold
    // the process's one event loop for seconds on a busy machine: with the default 5 s the master
    // lost its lease there and the next tests got 503 CLOUDAI_NOT_LEADER. No test of this master
    // is about the lease (the failover tests run real masters with their own flags).
    leaseTimeoutMs: 60_000,
    log: { level: 'debug', pretty: false },
    ...overrides,
  }
}

export async function startTestMaster(opts: { config?: Partial<MasterConfig>; store?: Store; level?: pino.LevelWithSilent } = {}): Promise<TestMaster> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cloudai-test-master-'))
  const config = testMasterConfig(dataDir, opts.config)
  const { log, lines } = memoryLogger(opts.level ?? 'debug')
  const store = opts.store ?? new MemoryStore()
  const master = new Master(config, { log, store })
  let closed: Promise<void> | null = null
  const close = (): Promise<void> =>
    (closed ??= master.close().finally(() => rmSync(dataDir, { recursive: true, force: true })))
  try {
    await master.start()
  } catch (err) {
    await close()
    throw err
  }
  const port = master.httpPort
  // Every answer of this master to the test's fetch calls is checked against the OpenAPI document.
  checkAnswersOf(`http://127.0.0.1:${port}`)
  return { master, control: master.control, store, config, log, base: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, port, lines, close }
}

/**
 * A worker of the test master made of its gRPC side alone (RawWorker: it answers AssignTask,
 * CancelTask and MasterRegister as the test says) and a gRPC client that makes its calls to the
 * master (RegisterWorker, ReportTaskCompletion): registered by the operator, then connected, so
 * active. It stays active for the master's heartbeat timeout (15 s by default) without heartbeats.
 */
export async function joinRawWorker(t: TestContext, m: TestMaster, id: string): Promise<{ worker: RawWorker; client: RawClient }> {
  const worker = await new RawWorker().start(t)
  await m.control.registerWorker({ worker_id: id, worker_ip: worker.address })
  const client = new RawClient(t, m.master.advertiseAddress)
  const ack = await client.call('RegisterWorker', { worker_id: id, worker_ip: worker.address, total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 })
  if (!ack.success) throw new Error(`RegisterWorker of ${id} was refused: ${ack.message}`)
  if (!m.control.getWorker(id).is_active) throw new Error(`worker ${id} is not active after RegisterWorker`)
  return { worker, client }
}

/** A master of the test's own (a whole table printed, a store of its own), stopped when the test ends. */
export async function ownMaster(t: TestContext, opts: Parameters<typeof startTestMaster>[0] = {}): Promise<TestMaster> {
  const own = await startTestMaster(opts)
  t.after(() => own.close())
  return own
}
