import assert from 'node:assert/strict'
import { test } from 'node:test'
import { QueueProcessor } from '../../src/master/queue.js'
import { Registry } from '../../src/master/registry.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskTable } from '../../src/master/tasks.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { StoreJournal } from '../../src/store/journal.js'
import { FlakyStore } from '../support/flaky-store.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'

// Issue 16, finding 7: QueueProcessor.track did `void p.finally(...)`, so an assignment whose
// write failed became an unhandled rejection, and Node ends a process on one.

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

test('an assignment whose task-table write throws is logged as an error, never an unhandled rejection, and the task is placed again', { timeout: 20_000 }, async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason)
  }
  process.on('unhandledRejection', onUnhandled)
  t.after(() => process.off('unhandledRejection', onUnhandled))

  const { log, lines } = memoryLogger('debug')
  const agent = await startAgent(t)
  const registry = new Registry()
  const journal = new StoreJournal(new FlakyStore(), registry, { log, limit: 1000 })
  journal.start(true)
  t.after(() => journal.close())
  const tasks = new TaskTable(journal)
  const queue = new QueueProcessor({ tasks, registry, clients: new WorkerClients(), log, heartbeatTimeoutMs: 60_000 })
  queue.start()
  t.after(() => queue.close())

  // A subscriber of the task table that throws on the first 'assigned' change: the transition the
  // assignment awaits rejects (the change itself is already in memory by then).
  let thrown: ((t: TaskRecord) => void) | null = null
  const failedOnce = new Promise<TaskRecord>((resolve) => (thrown = resolve))
  tasks.on('task-changed', (x) => {
    if (x.status !== 'assigned' || thrown === null) return
    const done = thrown
    thrown = null
    done(x)
    throw new Error('subscriber failed on assigned')
  })
  const task = await tasks.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: false })
  registry.register('w1', `127.0.0.1:${agent.port}`, Date.now())
  registry.connect('w1', { specs: { cpu: 2, memory: 4, storage: 10, gpu: 0 }, reportedAddress: null }, Date.now())

  const assigned = await failedOnce
  assert.equal(assigned.id, task.id)
  // An unhandled rejection is reported once the microtasks of the turn have run.
  await turn()
  await turn()
  assert.deepEqual(unhandled.map((r) => (r instanceof Error ? r.message : String(r))), [], 'no unhandled rejection')
  const logged = lines.find((l) => l.level === 50 && /queue operation/.test(l.msg))
  assert.ok(logged, 'the failure is logged at error level')
  assert.equal((logged.err as { message?: string } | undefined)?.message, 'subscriber failed on assigned')

  // The task was left 'assigned' to a worker that never got it: its heartbeats settle that, as
  // for an AssignTask answer lost, and it is placed again (and runs) without the master crashing.
  assert.equal(tasks.get(task.id)?.status, 'assigned')
  const running = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status === 'running' && resolve(x)))
  queue.onHeartbeat('w1', [])
  queue.onHeartbeat('w1', [])
  assert.equal((await running).workerId, 'w1')
  assert.deepEqual(unhandled, [])
})
