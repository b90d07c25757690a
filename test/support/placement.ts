import type { TestContext } from 'node:test'
import { InlineDialer } from '../../src/master/reconnect/dialer.js'
import { QueueProcessor } from '../../src/master/queue.js'
import { Registry } from '../../src/master/registry.js'
import { SuspectProbes } from '../../src/master/suspects.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskTable } from '../../src/master/tasks.js'
import type { TaskRetention } from '../../src/master/task-retention.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import type { TaskRecord, WorkerSpecs } from '../../src/shared/types.js'
import { StoreJournal } from '../../src/store/journal.js'
import { FlakyStore } from './flaky-store.js'
import { memoryLogger } from './log.js'

// The master's placement path without its servers: the registry, the task table over a journal on
// the in-memory store (which can hold its writes open), the queue, and the probes of suspect
// workers on an inline dialer. Workers are whatever listens at the addresses a test joins.

export interface Placement {
  registry: Registry
  tasks: TaskTable
  queue: QueueProcessor
  /** The queue's clients: a call on one reaches its worker after every call the queue made on it before. */
  clients: WorkerClients
  store: FlakyStore
  lines: ReturnType<typeof memoryLogger>['lines']
  /** Registered by the operator, then connected (RegisterWorker) with these specs: active. */
  join(id: string, address: string, specs?: WorkerSpecs): void
  submit(body?: object): Promise<string>
  /** Resolves with the task once `pred` holds for it. */
  until(id: string, pred: (t: TaskRecord) => boolean): Promise<TaskRecord>
}

export function startPlacement(t: TestContext, opts: { rpcTimeoutMs?: number; dialTimeoutMs?: number; retention?: TaskRetention; requeueAfterMs?: number } = {}): Placement {
  const { log, lines } = memoryLogger('debug')
  const store = new FlakyStore()
  const registry = new Registry()
  const journal = new StoreJournal(store, registry, { log, limit: 10_000 })
  journal.start(true)
  const tasks = new TaskTable(journal, Date.now, opts.retention)
  const clients = new WorkerClients()
  const queue = new QueueProcessor({ tasks, registry, clients, log, heartbeatTimeoutMs: 60_000, requeueAfterMs: opts.requeueAfterMs, rpcTimeoutMs: opts.rpcTimeoutMs ?? 5000 })
  const dialer = new InlineDialer()
  const probes = new SuspectProbes(registry, dialer, { masterId: 'master-test', masterAddress: () => '127.0.0.1:1', dialTimeoutMs: opts.dialTimeoutMs ?? 1000, log, baseDelayMs: 20, maxDelayMs: 200 })
  probes.start()
  queue.start()
  t.after(async () => {
    store.holdTasks = null
    await queue.close()
    await probes.close()
    await dialer.close()
    await journal.close()
  })
  return {
    registry,
    tasks,
    queue,
    clients,
    store,
    lines,
    join(id, address, specs = { cpu: 4, memory: 8, storage: 100, gpu: 0 }) {
      registry.register(id, address, Date.now())
      registry.connect(id, { specs, reportedAddress: null }, Date.now())
    },
    async submit(body = { command: 'true' }) {
      return (await tasks.submit(parseTaskInput(body), { acceptWhileDegraded: false })).id
    },
    until(id, pred) {
      const now = tasks.get(id)
      if (now && pred(now)) return Promise.resolve(now)
      return new Promise((resolve) => {
        const on = (x: TaskRecord): void => {
          if (x.id !== id || !pred(x)) return
          tasks.off('task-changed', on)
          resolve(x)
        }
        tasks.on('task-changed', on)
      })
    },
  }
}
