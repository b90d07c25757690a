import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { CompletionReport } from '../../src/master/grpc.js'
import { WorkerDrains } from '../../src/master/drains.js'
import { QueueProcessor } from '../../src/master/queue.js'
import { Registry } from '../../src/master/registry.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskTable } from '../../src/master/tasks.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { schedulingState } from '../../src/shared/worker-scheduling.js'
import { StoreJournal } from '../../src/store/journal.js'
import { FlakyStore } from '../support/flaky-store.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'
import type { CloudaiError } from '../../src/shared/errors.js'

async function waitUntilTrue(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

test('during a store outage the queue still places tasks on workers; the store catches up when it answers', { timeout: 20_000 }, async (t) => {
  const { log } = memoryLogger('silent')
  const agent = await startAgent(t, { heartbeatIntervalMs: 1000 })

  const store = new FlakyStore()
  const registry = new Registry()
  const journal = new StoreJournal(store, registry, { log, limit: 1000, retryBaseMs: 20, retryCapMs: 50 })
  journal.start(true)
  t.after(() => journal.close())
  const tasks = new TaskTable(journal)
  const queue = new QueueProcessor({ tasks, registry, clients: new WorkerClients(), log, heartbeatTimeoutMs: 60_000 })
  queue.start()
  t.after(() => queue.close())
  const task = await tasks.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: false })

  registry.register('w1', `127.0.0.1:${agent.port}`, Date.now())
  store.failing = true
  const running = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status === 'running' && resolve(x)))
  registry.connect('w1', { specs: { cpu: 2, memory: 4, storage: 10, gpu: 0 }, reportedAddress: null }, Date.now())
  const placed = await running
  assert.equal(placed.workerId, 'w1')
  assert.equal(journal.healthy, false, 'placed and started while the store refused every write')
  assert.equal((await store.loadTasks())[0]?.status, 'queued', 'the store still holds the old state')

  store.failing = false
  await new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  assert.deepEqual(await store.loadTasks(), [tasks.get(task.id)], 'the store equals memory')
})

test('a completion counts only for an attempt the master gave that worker; a report without an attempt means that worker\'s current one, never any', async (t) => {
  const { tasks, queue } = queueOn(t)
  const task = await tasks.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: false })
  await tasks.transition(task.id, 'assigned', { workerId: 'w1', attempt: 2 }, null)
  await tasks.transition(task.id, 'running', {}, null)
  const report = (over: Partial<CompletionReport>): CompletionReport => ({
    task_id: task.id, worker_id: 'w1', status: 'completed', logs: 'out', result_location: '', output_files: [], exit_code: 0, has_exit_code: true,
    duration_ms: 1, started_at: 0, finished_at: 0, attempt: 2, reason: '', ...over,
  })
  assert.equal(await queue.onCompletion(report({ worker_id: 'w2', attempt: 0, logs: 'FORGED' })), false, 'another worker, attempt 0: not "any"')
  assert.equal(await queue.onCompletion(report({ worker_id: 'w2' })), false, 'another worker, the right attempt')
  assert.equal(await queue.onCompletion(report({ attempt: 1 })), false, 'an earlier attempt of this worker')
  assert.equal(await queue.onCompletion(report({ attempt: 3 })), false, 'an attempt never given')
  assert.equal(tasks.get(task.id)?.status, 'running')
  assert.equal(await queue.onCompletion(report({ attempt: 0 })), true, 'no attempt: this worker\'s current one')
  assert.equal(tasks.get(task.id)?.status, 'completed')
  assert.equal(await queue.onCompletion(report({ attempt: 0 })), true, 'the same report again: answered recorded (a redelivery), not applied twice')
  assert.deepEqual(tasks.get(task.id)?.history.map((h) => h.status), ['queued', 'assigned', 'running', 'completed'])
  assert.equal(await queue.onCompletion(report({ status: 'failed', logs: 'OTHER' })), false, 'another outcome for that attempt: ignored')
  assert.equal(tasks.get(task.id)?.logsTail, 'out')
})

test('a completion while the store is down is refused with CLOUDAI_STORE_DEGRADED and changes nothing; reported again once it answers, it is recorded once', async (t) => {
  const { store, journal, tasks, queue } = queueOn(t, { retryMs: [10, 20], storeRecovered: true })
  const task = await tasks.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: false })
  await tasks.transition(task.id, 'assigned', { workerId: 'w1', attempt: 1 }, null)
  await tasks.transition(task.id, 'running', {}, null)
  const report: CompletionReport = {
    task_id: task.id, worker_id: 'w1', status: 'completed', logs: 'out', result_location: '', output_files: [], exit_code: 0, has_exit_code: true,
    duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '',
  }
  const announced: string[] = []
  tasks.on('task-changed', (x) => announced.push(x.status))

  store.failing = true
  await assert.rejects(queue.onCompletion(report), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_DEGRADED')
  await assert.rejects(queue.onCompletion(report), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_DEGRADED', 'a redelivery during the outage too')
  assert.equal(tasks.get(task.id)?.status, 'running')
  assert.equal((await store.loadTasks())[0]?.status, 'running')
  assert.deepEqual(announced, [])

  const back = new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  store.failing = false
  await back
  assert.deepEqual(await Promise.all([queue.onCompletion(report), queue.onCompletion(report)]), [true, true], 'delivered twice at once: both recorded')
  assert.equal(await queue.onCompletion(report), true, 'a redelivery of a recorded attempt: recorded')
  assert.deepEqual(announced, ['completed'], 'announced once')
  assert.deepEqual((await store.loadTasks())[0]?.history.map((h) => h.status), ['queued', 'assigned', 'running', 'completed'])
})

test('a task failing after its last attempt while the store is down keeps its state until the store answers, then fails once', async (t) => {
  // Requeued at once (the default wait is the heartbeat timeout: a minute here).
  const { store, registry, journal, tasks, queue } = queueOn(t, { retryMs: [10, 20], requeueAfterMs: 0, storeRecovered: true })
  const task = await tasks.submit(parseTaskInput({ command: 'true', max_attempts: 1 }), { acceptWhileDegraded: false })
  await tasks.transition(task.id, 'assigned', { workerId: 'w1', attempt: 1 }, null)
  await tasks.transition(task.id, 'running', {}, null, { startsRun: true })
  registry.register('w1', '127.0.0.2:1', Date.now())
  registry.connect('w1', { specs: { cpu: 2, memory: 4, storage: 10, gpu: 0 }, reportedAddress: null }, Date.now())
  queue.start()
  const announced: string[] = []
  tasks.on('task-changed', (x) => announced.push(x.status))

  store.failing = true
  const writesBefore = store.failures
  registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  await waitUntilTrue(() => !journal.healthy, 'the store seen down')
  assert.equal(tasks.get(task.id)?.status, 'running', 'not failed in memory while the store cannot hold it')
  assert.deepEqual(announced, [])
  // Not a busy loop: the journal's backoff alone paces the attempts while the store is down.
  await waitUntilTrue(() => store.failures >= writesBefore + 4, 'a few journal retries')
  assert.equal(tasks.get(task.id)?.status, 'running')

  const failed = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.status === 'failed' && resolve(x)))
  store.failing = false
  const done = await failed
  assert.match(done.reason ?? '', /went inactive.*gave up after 1 attempt/)
  assert.deepEqual(announced, ['failed'])
  assert.deepEqual((await store.loadTasks())[0]?.history.map((h) => h.status), ['queued', 'assigned', 'running', 'failed'], 'in the store, once')
})

/** A task running on w1 as attempt 1, never placed by the queue (its target is nobody). */
async function runningOn(tasks: TaskTable, workerId: string): Promise<TaskRecord> {
  const task = await tasks.submit(parseTaskInput({ command: 'sleep 600', target_worker_id: 'nobody' }), { acceptWhileDegraded: false })
  await tasks.transition(task.id, 'assigned', { workerId, attempt: 1 }, null, { from: ['queued'] })
  return (await tasks.transition(task.id, 'running', {}, null, { workerId, attempt: 1, startsRun: true }))!
}

interface QueueSetup {
  /** Journal retry delays (ms), for tests that make the store fail and recover. */
  retryMs?: readonly [base: number, cap: number]
  requeueAfterMs?: number
  /** Pending final transitions retry when the journal recovers. */
  storeRecovered?: boolean
  onReleased?: (workerId: string) => void
}

/** A queue over the real journal and task table, on a store that fails on demand; closed after the test, not started. */
function queueOn(t: import('node:test').TestContext, o: QueueSetup = {}) {
  const { log } = memoryLogger('silent')
  const store = new FlakyStore()
  const registry = new Registry()
  const journal = new StoreJournal(store, registry, { log, limit: 1000, ...(o.retryMs ? { retryBaseMs: o.retryMs[0], retryCapMs: o.retryMs[1] } : {}) })
  journal.start(true)
  t.after(() => journal.close())
  const tasks = new TaskTable(journal)
  const queue = new QueueProcessor({ tasks, registry, clients: new WorkerClients(), log, heartbeatTimeoutMs: 60_000, requeueAfterMs: o.requeueAfterMs, onReleased: o.onReleased, ...(o.storeRecovered ? { storeRecovered: journal } : {}) })
  t.after(() => queue.close())
  return { log, store, registry, journal, tasks, queue }
}

const SPECS = { specs: { cpu: 2, memory: 4, storage: 10, gpu: 0 }, reportedAddress: null }
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

test('an inactive worker keeps its tasks through --requeue-after: back within it, nothing is requeued; past it they are', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  const { tasks, registry, queue } = queueOn(t, { requeueAfterMs: 5000 })
  queue.start()
  registry.register('w1', '127.0.0.2:9', Date.now())
  registry.connect('w1', SPECS, Date.now())
  const task = await runningOn(tasks, 'w1')

  registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  t.mock.timers.tick(4999)
  await flush()
  assert.equal(tasks.get(task.id)?.status, 'running', 'still its task during the wait')
  registry.connect('w1', SPECS, Date.now())
  t.mock.timers.tick(10_000)
  await flush()
  assert.equal(tasks.get(task.id)?.status, 'running', 'back within the wait: kept')
  assert.deepEqual(tasks.get(task.id)?.history.map((h) => h.status), ['queued', 'assigned', 'running'])

  registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  const requeued = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status === 'queued' && resolve(x)))
  t.mock.timers.tick(5000)
  const moved = await requeued
  assert.match(moved.reason ?? '', /worker w1 went inactive and did not come back within 5000ms; requeued/)
  assert.equal(moved.attempts, 1)
})

test('with --requeue-after 0 an inactive worker\'s tasks are requeued at once', async (t) => {
  const { tasks, registry, queue } = queueOn(t, { requeueAfterMs: 0 })
  queue.start()
  registry.register('w1', '127.0.0.2:9', Date.now())
  registry.connect('w1', SPECS, Date.now())
  const task = await runningOn(tasks, 'w1')
  const requeued = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status === 'queued' && resolve(x)))
  registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  assert.match((await requeued).reason ?? '', /worker w1 went inactive; requeued/)
})

test('the report of the attempt a task was requeued from is its result while it waits to run again; a cancelled run is none; a run started elsewhere wins', async (t) => {
  const { tasks, queue } = queueOn(t)
  const report = (taskId: string, over: Partial<CompletionReport> = {}): CompletionReport => ({
    task_id: taskId, worker_id: 'w1', status: 'completed', logs: 'out', result_location: '', output_files: [], exit_code: 0, has_exit_code: true,
    duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '', ...over,
  })
  const requeue = (id: string) => tasks.transition(id, 'queued', { workerId: null }, 'w1 went inactive; requeued', { workerId: 'w1', attempt: 1 })

  // Queued again, not placed since.
  const a = await runningOn(tasks, 'w1')
  await requeue(a.id)
  assert.equal(await queue.onCompletion(report(a.id, { status: 'cancelled', has_exit_code: false })), false, 'a cancelled run is no result')
  assert.equal(await queue.onCompletion(report(a.id, { worker_id: 'w2' })), false, 'only from the worker it ran on')
  assert.equal(await queue.onCompletion(report(a.id, { attempt: 2 })), false, 'only for that attempt')
  assert.equal(tasks.get(a.id)?.status, 'queued')
  assert.equal(await queue.onCompletion(report(a.id)), true)
  const done = tasks.get(a.id)!
  assert.deepEqual({ status: done.status, workerId: done.workerId, attempt: done.attempt, attempts: done.attempts, exitCode: done.exitCode }, { status: 'completed', workerId: 'w1', attempt: 1, attempts: 1, exitCode: 0 })
  const history = done.history.length
  assert.equal(await queue.onCompletion(report(a.id)), true, 'a redelivery of the recorded result is answered recorded...')
  assert.equal(tasks.get(a.id)?.history.length, history, '...and changes nothing')

  // Placed on w2 as attempt 2 but not confirmed started there: w1's result still counts.
  const b = await runningOn(tasks, 'w1')
  await requeue(b.id)
  await tasks.transition(b.id, 'assigned', { workerId: 'w2', attempt: 2 }, null, { from: ['queued'] })
  assert.equal(await queue.onCompletion(report(b.id, { status: 'failed', exit_code: 4, reason: 'exit code 4' })), true)
  assert.deepEqual({ status: tasks.get(b.id)?.status, workerId: tasks.get(b.id)?.workerId, attempt: tasks.get(b.id)?.attempt, exitCode: tasks.get(b.id)?.exitCode }, { status: 'failed', workerId: 'w1', attempt: 1, exitCode: 4 })
  assert.deepEqual(tasks.onWorkerTasks('w2'), [])

  // Started on w2: w1's late result is ignored, the run on w2 stays.
  const c = await runningOn(tasks, 'w1')
  await requeue(c.id)
  await tasks.transition(c.id, 'assigned', { workerId: 'w2', attempt: 2 }, null, { from: ['queued'] })
  await tasks.transition(c.id, 'running', {}, null, { workerId: 'w2', attempt: 2, startsRun: true })
  assert.equal(await queue.onCompletion(report(c.id)), false)
  assert.deepEqual({ status: tasks.get(c.id)?.status, workerId: tasks.get(c.id)?.workerId, attempts: tasks.get(c.id)?.attempts }, { status: 'running', workerId: 'w2', attempts: 2 })
})

test('a task its inactive worker was failed for while the store was down is not failed when that worker comes back running it before the store answers', async (t) => {
  const { store, registry, journal, tasks, queue } = queueOn(t, { retryMs: [10, 20], requeueAfterMs: 0, storeRecovered: true })
  const once1 = await tasks.submit(parseTaskInput({ command: 'sleep 600', max_attempts: 1, target_worker_id: 'nobody' }), { acceptWhileDegraded: false })
  const twice = await tasks.submit(parseTaskInput({ command: 'sleep 600', max_attempts: 1, target_worker_id: 'nobody' }), { acceptWhileDegraded: false })
  registry.register('w1', '127.0.0.2:1', Date.now())
  registry.register('w2', '127.0.0.2:2', Date.now())
  registry.connect('w1', SPECS, Date.now())
  registry.connect('w2', SPECS, Date.now())
  for (const [task, w] of [[once1, 'w1'], [twice, 'w2']] as const) {
    await tasks.transition(task.id, 'assigned', { workerId: w, attempt: 1 }, null, { from: ['queued'] })
    await tasks.transition(task.id, 'running', {}, null, { workerId: w, attempt: 1, startsRun: true })
  }
  queue.start()
  const announced: string[] = []
  tasks.on('task-changed', (x) => announced.push(`${x.id === once1.id ? 'w1' : 'w2'}:${x.status}`))

  // Both workers go silent while the store is down: out of attempts, both tasks wait to be failed.
  store.failing = true
  registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  registry.markInactive('w2', 'heartbeat-timeout', Date.now())
  await waitUntilTrue(() => !journal.healthy, 'the store seen down')
  await flush()
  // w1 comes back and its heartbeats list its run; w2 stays away.
  registry.connect('w1', SPECS, Date.now())
  const listed = [{ taskId: once1.id, cpu: 0, memory: 0, gpu: 0, status: 'running', attempt: 1 }]
  registry.heartbeat('w1', { cpu: 0, memory: 0, storage: 0, gpu: 0 }, listed, Date.now())
  queue.onHeartbeat('w1', listed)

  const failed = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.status === 'failed' && resolve(x)))
  const recovered = new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  store.failing = false
  await recovered
  assert.equal((await failed).id, twice.id, 'the worker still away: its task fails')
  await flush()
  assert.equal(tasks.get(once1.id)?.status, 'running', 'the worker that came back keeps its run')
  assert.deepEqual({ workerId: tasks.get(once1.id)?.workerId, attempt: tasks.get(once1.id)?.attempt, attempts: tasks.get(once1.id)?.attempts }, { workerId: 'w1', attempt: 1, attempts: 1 })
  assert.deepEqual(announced, ['w2:failed'])
  queue.onHeartbeat('w1', listed)
  assert.equal(tasks.get(once1.id)?.status, 'running')
})

test('a task a drain requeued spends no attempt, is not withdrawn back onto the worker that still lists it, and waits until that worker no longer does, uncordoned or not', async (t) => {
  const { tasks, registry, queue, journal } = queueOn(t)
  queue.start()
  registry.register('w1', '127.0.0.2:9', Date.now())
  registry.connect('w1', SPECS, Date.now())
  registry.setScheduling('w1', { cordonedAt: Date.now(), drain: { startedAt: Date.now(), deadline: Date.now(), force: true, drainedAt: null } })
  const submitted = await tasks.submit(parseTaskInput({ command: 'sleep 600', target_worker_id: 'w1' }), { acceptWhileDegraded: false })
  await tasks.transition(submitted.id, 'assigned', { workerId: 'w1', attempt: 1 }, null, { from: ['queued'] })
  const task = (await tasks.transition(submitted.id, 'running', {}, null, { workerId: 'w1', attempt: 1, startsRun: true }))!
  assert.equal(task.attempts, 1)

  assert.deepEqual(await queue.evict('w1', 'worker w1 is drained with --force'), [task.id])
  const requeued = tasks.get(task.id)!
  assert.deepEqual({ status: requeued.status, attempts: requeued.attempts, attempt: requeued.attempt }, { status: 'queued', attempts: 0, attempt: 1 })
  // The worker has not stopped it yet: its heartbeat still lists that attempt.
  const listed = [{ taskId: task.id, cpu: 0, memory: 0, gpu: 0, status: 'running', attempt: 1 }]
  queue.onHeartbeat('w1', listed)
  await flush()
  assert.equal(tasks.get(task.id)?.status, 'queued', 'not withdrawn back onto the draining worker')
  // Uncordoned while it still runs there: not placed (on it or anywhere) until it no longer lists it.
  registry.setScheduling('w1', null)
  // A placement would be written through the journal: once it has settled twice, none was made.
  await flush()
  await journal.sync()
  await flush()
  await journal.sync()
  assert.deepEqual(tasks.get(task.id)?.history.map((h) => h.status), ['queued', 'assigned', 'running', 'queued'], 'held back while w1 still lists it: not placed again')
  queue.onHeartbeat('w1', listed)
  await flush()
  assert.equal(tasks.get(task.id)?.status, 'queued')
  assert.equal(tasks.get(task.id)?.attempts, 0)
})

const listing = (taskId: string) => [{ taskId, cpu: 0, memory: 0, gpu: 0, status: 'running', attempt: 1 }]
const drainNow = (drainedAt: number | null) => ({ cordonedAt: Date.now(), drain: { startedAt: Date.now(), deadline: Date.now(), force: true, drainedAt } })
const completedReport = (taskId: string): CompletionReport => ({
  task_id: taskId, worker_id: 'w1', status: 'completed', logs: 'out', result_location: '', output_files: [], exit_code: 0, has_exit_code: true,
  duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '',
})

/** A queue with the drains wired to it as the master wires them, both started. */
function drainsOn(t: import('node:test').TestContext, o: QueueSetup = {}) {
  const evicted: string[] = []
  let wired: WorkerDrains | null = null
  const q = queueOn(t, { ...o, onReleased: (id) => wired?.released(id) })
  const evict = (id: string, why: string): Promise<string[]> => {
    evicted.push(id)
    return q.queue.evict(id, why)
  }
  const drains = new WorkerDrains({ registry: q.registry, tasks: q.tasks, evict, busyOn: (id) => q.queue.busyOn(id), log: q.log })
  wired = drains
  q.queue.start()
  drains.start()
  t.after(() => drains.close())
  return { ...q, drains, evicted }
}

test('after a master restart, a task requeued off a drained worker (or one past its drain deadline) is not withdrawn back onto it when its heartbeat still lists the run', async (t) => {
  const { tasks, registry, queue, journal } = queueOn(t)
  queue.start()
  const ids: string[] = []
  for (const [w, drainedAt] of [['w1', Date.now()], ['w2', null]] as const) {
    registry.register(w, '127.0.0.2:9', Date.now())
    registry.connect(w, SPECS, Date.now())
    const task = await runningOn(tasks, w)
    // What a master restarted after the eviction loaded: the task queued off the worker, its drain
    // stored; what it had in memory of the eviction is gone.
    await tasks.transition(task.id, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `worker ${w} is drained and its drain deadline passed; requeued`, { workerId: w, attempt: 1, refundsRun: true })
    registry.setScheduling(w, drainNow(drainedAt))
    ids.push(task.id)
  }
  queue.onHeartbeat('w1', listing(ids[0]!))
  queue.onHeartbeat('w2', listing(ids[1]!))
  // A withdrawal would be written through the journal: once it has settled twice, none was made.
  for (let i = 0; i < 2; i++) {
    await flush()
    await journal.sync()
  }
  assert.equal(tasks.get(ids[0]!)?.status, 'queued', 'not withdrawn back onto the drained worker')
  assert.equal(tasks.get(ids[1]!)?.status, 'queued', 'not withdrawn back onto the worker past its drain deadline')
})

test('a run a drain stopped that completed before the cancel landed counts as the attempt it was', async (t) => {
  const { tasks, registry, queue } = queueOn(t)
  queue.start()
  registry.register('w1', '127.0.0.2:9', Date.now())
  registry.connect('w1', SPECS, Date.now())
  registry.setScheduling('w1', drainNow(null))
  const task = await runningOn(tasks, 'w1')
  assert.deepEqual(await queue.evict('w1', 'worker w1 is drained with --force'), [task.id])
  assert.equal(tasks.get(task.id)?.attempts, 0, 'the stopped run is taken back')
  assert.equal(await queue.onCompletion(completedReport(task.id)), true, 'it finished first: its result is the task\'s')
  const done = tasks.get(task.id)!
  assert.deepEqual({ status: done.status, attempts: done.attempts, attempt: done.attempt }, { status: 'completed', attempts: 1, attempt: 1 })
})

test('a drain deadline that passes while the worker is inactive requeues nothing: what it still has is cancelled and requeued once it is active again', async (t) => {
  const { tasks, registry, drains, evicted } = drainsOn(t)
  registry.register('w1', '127.0.0.2:9', Date.now())
  registry.connect('w1', SPECS, Date.now())
  const task = await runningOn(tasks, 'w1')
  registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  drains.drain('w1', { deadlineMs: null, force: true })
  // The deadline fires on the next tick.
  await new Promise((resolve) => setTimeout(resolve, 20))
  await flush()
  assert.deepEqual(evicted, [], 'an inactive worker cannot be told to stop: nothing is requeued behind its back')
  assert.equal(tasks.get(task.id)?.status, 'running')
  const requeued = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status === 'queued' && resolve(x)))
  registry.connect('w1', SPECS, Date.now())
  const moved = await requeued
  assert.deepEqual(evicted, ['w1'])
  assert.match(moved.reason ?? '', /drain deadline passed while it was inactive; requeued/)
  assert.equal(moved.attempts, 0)
})

test('a drain is done only once its worker no longer lists the tasks it requeued off it', async (t) => {
  const { tasks, registry, queue, drains } = drainsOn(t)
  registry.register('w1', '127.0.0.2:9', Date.now())
  registry.connect('w1', SPECS, Date.now())
  const task = await runningOn(tasks, 'w1')
  queue.onHeartbeat('w1', listing(task.id))
  drains.drain('w1', { deadlineMs: null, force: true })
  await waitUntilTrue(() => tasks.get(task.id)?.status === 'queued', 'the task requeued off w1')
  await flush()
  const state = (): string => schedulingState(registry.get('w1')?.scheduling)
  assert.equal(state(), 'draining', 'it still runs the task (its SIGTERM grace)')
  queue.onHeartbeat('w1', listing(task.id))
  assert.equal(state(), 'draining')
  queue.onHeartbeat('w1', [])
  assert.equal(state(), 'drained', 'it let go of it')
})

test('a placement whose assignment was being written when its worker was drained is not sent: it goes back to the queue, no run counted, and the worker is drained', async (t) => {
  const agent = await startAgent(t, { heartbeatIntervalMs: 1000 })
  const { tasks, registry, drains } = drainsOn(t)
  registry.register('w1', `127.0.0.1:${agent.port}`, Date.now())
  // The drain comes while the 'assigned' write is under way (in memory, not yet durable).
  tasks.on('task-changed', (x) => {
    if (x.status === 'assigned' && !registry.get('w1')?.scheduling) drains.drain('w1', { deadlineMs: null, force: false })
  })
  const task = await tasks.submit(parseTaskInput({ command: 'sleep 30' }), { acceptWhileDegraded: false })
  const left = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status !== 'assigned' && x.history.some((h) => h.status === 'assigned') && resolve(x)))
  registry.connect('w1', SPECS, Date.now())
  const moved = await left
  assert.equal(moved.status, 'queued', 'not sent to the worker')
  assert.match(moved.reason ?? '', /cordoned while the task's assignment was written; requeued/)
  assert.equal(moved.attempts, 0)
  await waitUntilTrue(() => schedulingState(registry.get('w1')?.scheduling) === 'drained', 'w1 drained')
  assert.deepEqual(tasks.onWorkerTasks('w1'), [])
})
