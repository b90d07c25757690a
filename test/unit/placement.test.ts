import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { callUnary } from '../../src/shared/proto.js'
import type { TaskAckMsg } from '../../src/shared/wire.js'
import type { CompletionReport } from '../../src/master/grpc.js'
import { PrunedTasks } from '../../src/master/pruned-tasks.js'
import { MAX_ASSIGNS_PER_WORKER } from '../../src/master/queue.js'
import { startPlacement } from '../support/placement.js'
import { RawWorker } from '../support/raw-worker.js'

// The queue's placement path against workers that are real gRPC servers recording what they get
// (test/support/raw-worker.ts): how work spreads, what a refusal does, and what a cancel that lands
// in the middle of an assignment sends.

const SENTINEL = 'sentinel'

test('six tasks without resource requests on two idle workers run three on each', async (t) => {
  const p = startPlacement(t)
  const w1 = await new RawWorker().start(t)
  const w2 = await new RawWorker().start(t)
  const ids = []
  for (let i = 0; i < 6; i++) ids.push(await p.submit({ command: `echo ${i}` }))
  p.join('worker-1', w1.address)
  p.join('worker-2', w2.address)
  const placed = await Promise.all(ids.map((id) => p.until(id, (x) => x.status === 'running')))
  const on = (w: string): number => placed.filter((x) => x.workerId === w).length
  assert.deepEqual([on('worker-1'), on('worker-2')], [3, 3])
  assert.deepEqual([w1.count('AssignTask'), w2.count('AssignTask')], [3, 3])
})

test('a worker is sent at most MAX_ASSIGNS_PER_WORKER tasks before it answers: the rest of a long queue goes to the next worker that joins, and to it again as it answers', async (t) => {
  const p = startPlacement(t)
  const w1 = await new RawWorker().start(t)
  const w2 = await new RawWorker().start(t)
  let answer!: () => void
  const gate = new Promise<void>((resolve) => (answer = resolve))
  w1.onAssign = async () => {
    await gate
    return { success: true, message: 'started' }
  }
  const ids = []
  for (let i = 0; i < MAX_ASSIGNS_PER_WORKER * 3; i++) ids.push(await p.submit({ command: `echo ${i}` }))
  p.join('worker-1', w1.address)
  await w1.when(() => w1.count('AssignTask') >= MAX_ASSIGNS_PER_WORKER)
  // Worker 1 answers nothing yet: everything else is worker 2's, in parts of the bound as it answers.
  p.join('worker-2', w2.address)
  const rest = ids.filter((id) => p.tasks.get(id)?.workerId !== 'worker-1')
  await Promise.all(rest.map((id) => p.until(id, (x) => x.status === 'running' && x.workerId === 'worker-2')))
  assert.equal(w1.count('AssignTask'), MAX_ASSIGNS_PER_WORKER, 'nothing more for worker 1 while its calls are under way')
  assert.equal(w2.count('AssignTask'), MAX_ASSIGNS_PER_WORKER * 2)
  answer()
  const placed = await Promise.all(ids.map((id) => p.until(id, (x) => x.status === 'running')))
  assert.equal(placed.filter((x) => x.workerId === 'worker-1').length, MAX_ASSIGNS_PER_WORKER)
})

test('a worker that answers AssignTask with INVALID_ARGUMENT fails the task at once with its reason: one call, no attempt spent, nothing retried', async (t) => {
  const p = startPlacement(t)
  const w = await new RawWorker().start(t)
  const why = 'docker_image "x" is not an image reference (CLOUDAI_BAD_FIELD)'
  w.onAssign = () => ({ code: grpc.status.INVALID_ARGUMENT, details: why })
  const id = await p.submit()
  p.join('worker-1', w.address)
  // Either the task ends, or the master sends it again (what it did before): whichever comes first.
  await Promise.race([p.until(id, (x) => x.status === 'failed' || x.status === 'completed'), w.when(() => w.count('AssignTask') >= 2)])
  const failed = p.tasks.get(id)!
  assert.equal(w.count('AssignTask'), 1, 'sent once')
  assert.equal(failed.status, 'failed')
  assert.ok(failed.reason?.includes(why), failed.reason ?? '')
  assert.equal(failed.attempts, 0, 'no run started')
  assert.equal(p.registry.get('worker-1')?.suspect ?? null, null, 'the worker answered: it is not suspect')
})

test('a cancel that lands while the assignment is being written sends no AssignTask at all (nor a CancelTask)', async (t) => {
  const p = startPlacement(t)
  const w = await new RawWorker().start(t)
  const id = await p.submit()
  const release = p.store.hold()
  const assigned = p.until(id, (x) => x.status === 'assigned')
  p.join('worker-1', w.address)
  // In memory the task is assigned; its write is held open in the store.
  const before = await assigned
  const cancelled = p.queue.cancel(before, 'cancelled by the operator')
  release()
  const done = await cancelled
  assert.equal(done?.status, 'cancelled')
  await p.queue.close()
  assert.equal(w.count('AssignTask'), 0, 'never sent')
  assert.equal(w.count('CancelTask'), 0, 'nothing to cancel there')
  assert.equal(p.tasks.get(id)?.status, 'cancelled')
})

test('a cancel that lands while AssignTask is under way sends CancelTask only after the worker answered it; the task ends cancelled and stops there', async (t) => {
  const p = startPlacement(t)
  const w = await new RawWorker().start(t)
  let answer!: () => void
  const gate = new Promise<void>((resolve) => (answer = resolve))
  w.onAssign = async () => {
    await gate
    return { success: true, message: 'started' }
  }
  const id = await p.submit()
  p.join('worker-1', w.address)
  await w.when((e) => e.method === 'AssignTask' && e.phase === 'received')
  const done = await p.queue.cancel(p.tasks.get(id)!, 'cancelled by the operator')
  assert.equal(done?.status, 'cancelled')
  // Calls on one channel open their streams in order: once this one has arrived, a CancelTask the
  // master sent at the cancel would have arrived too.
  await callUnary<{ task_id: string }, TaskAckMsg>(p.clients.get('worker-1', w.address), 'CancelTask', { task_id: SENTINEL }, 5000).promise
  answer()
  await w.when((e) => e.method === 'AssignTask' && e.phase === 'answered')
  await w.when((e) => e.method === 'CancelTask' && e.taskId === id && e.phase === 'received')
  const order = w.events.filter((e) => e.taskId !== SENTINEL).map((e) => `${e.method}:${e.phase}`)
  assert.deepEqual(order.slice(0, 3), ['AssignTask:received', 'AssignTask:answered', 'CancelTask:received'], 'CancelTask after the AssignTask answer')
  await p.queue.close()
  assert.equal(w.events.filter((e) => e.method === 'CancelTask' && e.taskId === id && e.phase === 'received').length, 1)
  assert.deepEqual([...w.running], [], 'not left running on the worker')
  assert.equal(p.tasks.get(id)?.status, 'cancelled')
})

test('a worker that answers AssignTask with success=false fails the task at once with its reason, no attempt spent, and is not suspect', async (t) => {
  const p = startPlacement(t)
  const w = await new RawWorker().start(t)
  w.onAssign = () => ({ success: false, message: 'docker_image is set but no Docker engine answers on worker worker-1' })
  const id = await p.submit({ docker_image: 'alpine:3.20' })
  p.join('worker-1', w.address)
  const failed = await p.until(id, (x) => x.status === 'failed')
  assert.match(failed.reason ?? '', /refused by worker worker-1: docker_image is set but no Docker engine answers/)
  assert.equal(failed.attempts, 0)
  assert.equal(w.count('AssignTask'), 1)
  assert.equal(p.registry.get('worker-1')?.suspect ?? null, null)
})

/**
 * A worker answering as the real agent does (src/worker/agent.ts assignTask) whose first AssignTask
 * starts the run but is answered after the master's deadline: later calls for another attempt are
 * refused naming attempt 1 (held_attempt). `hold` delays the answer to those calls.
 */
function lateStarter(w: RawWorker, hold: () => Promise<void>): { runs: Map<string, number> } {
  const runs = new Map<string, number>()
  w.onAssign = async (req) => {
    const here = runs.get(req.task_id)
    if (here === undefined) {
      runs.set(req.task_id, req.attempt)
      await new Promise((resolve) => setTimeout(resolve, 600))
      return { success: true, message: 'started' }
    }
    await hold()
    if (here === req.attempt) return { success: true, message: 'already running', held_attempt: 0 }
    return { success: false, message: `attempt ${req.attempt} not started: this worker already runs attempt ${here}`, held_attempt: here }
  }
  return { runs }
}

const USAGE = { cpu: 1, memory: 1, storage: 1, gpu: 0 }

function heartbeat(p: ReturnType<typeof startPlacement>, workerId: string, taskId: string, attempt: number): void {
  const listed = [{ taskId, cpu: 0, memory: 0, gpu: 0, status: 'running', attempt }]
  p.registry.heartbeat(workerId, USAGE, listed, Date.now())
  p.queue.onHeartbeat(workerId, listed)
}

test('an AssignTask past its deadline whose run started: the heartbeat listing attempt 1 while the task is queued again takes it back as attempt 1, counted once, nothing cancelled', async (t) => {
  const p = startPlacement(t, { rpcTimeoutMs: 300, dialTimeoutMs: 200 })
  const w = await new RawWorker().start(t)
  lateStarter(w, async () => {})
  let probeAnswers = false
  w.onRegister = () => (probeAnswers ? { success: true, message: 'already connected' } : { code: grpc.status.UNAVAILABLE, details: 'not yet' })
  const id = await p.submit({ command: 'sleep 60' })
  p.join('worker-1', w.address)
  await p.until(id, (x) => x.status === 'queued' && x.attempt === 1)
  heartbeat(p, 'worker-1', id, 1)
  const back = await p.until(id, (x) => x.status === 'running')
  assert.deepEqual({ workerId: back.workerId, attempt: back.attempt, attempts: back.attempts }, { workerId: 'worker-1', attempt: 1, attempts: 1 })
  const cleared = new Promise((resolve) => p.registry.once('worker-cleared', resolve))
  probeAnswers = true
  await cleared
  for (let i = 0; i < 3; i++) heartbeat(p, 'worker-1', id, 1)
  assert.equal(await p.queue.onCompletion({ task_id: id, worker_id: 'worker-1', status: 'completed', logs: '', result_location: '', output_files: [], exit_code: 0, has_exit_code: true, duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '' }), true)
  const done = p.tasks.get(id)!
  assert.deepEqual({ status: done.status, attempt: done.attempt, attempts: done.attempts }, { status: 'completed', attempt: 1, attempts: 1 })
  assert.equal(w.count('CancelTask'), 0, 'the live run was never cancelled')
  assert.equal(w.count('AssignTask'), 1)
})

test('an AssignTask past its deadline whose run started: a heartbeat listing attempt 1 while attempt 2\'s AssignTask to the same worker is under way cancels nothing; the worker names attempt 1 and the task keeps it, counted once', async (t) => {
  const p = startPlacement(t, { rpcTimeoutMs: 300, dialTimeoutMs: 200 })
  const w = await new RawWorker().start(t)
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  lateStarter(w, () => held)
  const id = await p.submit({ command: 'sleep 60' })
  p.join('worker-1', w.address)
  await p.until(id, (x) => x.status === 'queued' && x.attempt === 1)
  // The probe clears it; attempt 2 goes to it, and its answer is held while heartbeats list attempt 1.
  await w.when((e) => e.method === 'AssignTask' && e.phase === 'received' && w.count('AssignTask') === 2)
  assert.equal(p.tasks.get(id)?.attempt, 2)
  heartbeat(p, 'worker-1', id, 1)
  heartbeat(p, 'worker-1', id, 1)
  release()
  const kept = await p.until(id, (x) => x.status === 'running')
  assert.deepEqual({ workerId: kept.workerId, attempt: kept.attempt, attempts: kept.attempts }, { workerId: 'worker-1', attempt: 1, attempts: 1 })
  for (let i = 0; i < 3; i++) heartbeat(p, 'worker-1', id, 1)
  assert.equal(await p.queue.onCompletion({ task_id: id, worker_id: 'worker-1', status: 'completed', logs: '', result_location: '', output_files: [], exit_code: 0, has_exit_code: true, duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '' }), true)
  assert.deepEqual({ status: p.tasks.get(id)?.status, attempts: p.tasks.get(id)?.attempts }, { status: 'completed', attempts: 1 })
  assert.equal(w.count('CancelTask'), 0, 'the live run was never cancelled')
})

test('a run of a task removed by retention that its worker still lists gets CancelTask; one listed by a worker it was never placed on gets nothing', async (t) => {
  const p = startPlacement(t, { retention: { retentionMs: 0, maxFinished: 100_000, outputTailBytes: 1024 } })
  const w1 = await new RawWorker().start(t)
  const w2 = await new RawWorker().start(t)
  const id = await p.submit({ command: 'sleep 60', target_worker_id: 'worker-1' })
  p.join('worker-1', w1.address)
  p.join('worker-2', w2.address)
  await p.until(id, (x) => x.status === 'running')
  // It finished there (say a stray copy of the run still goes on), and the task was then pruned.
  assert.equal(await p.queue.onCompletion({ task_id: id, worker_id: 'worker-1', status: 'completed', logs: '', result_location: '', output_files: [], exit_code: 0, has_exit_code: true, duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '' }), true)
  assert.deepEqual(p.tasks.prune(), [id])
  assert.equal(p.tasks.get(id), undefined)

  const cancelsBefore = w1.count('CancelTask')
  const listed = [{ taskId: id, cpu: 0, memory: 0, gpu: 0, status: 'running', attempt: 1 }]
  p.registry.heartbeat('worker-1', USAGE, listed, Date.now())
  p.queue.onHeartbeat('worker-1', listed)
  await w1.when(() => w1.count('CancelTask') > cancelsBefore)
  assert.equal(w1.events.filter((e) => e.method === 'CancelTask').at(-1)?.taskId, id)

  p.registry.heartbeat('worker-2', USAGE, listed, Date.now())
  p.queue.onHeartbeat('worker-2', listed)
  // A call on the same client after any the queue made: when it is answered, nothing else came first.
  await callUnary<{ task_id: string }, TaskAckMsg>(p.clients.get('worker-2', w2.address), 'CancelTask', { task_id: SENTINEL }, 2000).promise
  assert.deepEqual(w2.events.filter((e) => e.method === 'CancelTask' && e.phase === 'received').map((e) => e.taskId), [SENTINEL], 'never placed there: the worker\'s business')
})

test('pruned task ids are remembered up to a bound, the oldest dropped first', () => {
  const pruned = new PrunedTasks(3)
  for (let i = 1; i <= 5; i++) pruned.add(`t${i}`, ['w1'])
  pruned.add('t6', [])
  assert.equal(pruned.size, 3)
  assert.deepEqual(['t1', 't2', 't3', 't4', 't5', 't6'].map((id) => pruned.wasPlacedOn(id, 'w1')), [false, false, true, true, true, false])
  assert.equal(pruned.wasPlacedOn('t5', 'w2'), false)
})

const SPECS = { cpu: 4, memory: 8, storage: 100, gpu: 0 }
const report = (id: string, over: Partial<CompletionReport> = {}): CompletionReport => ({ task_id: id, worker_id: 'worker-1', status: 'completed', logs: '', result_location: '', output_files: [], exit_code: 0, has_exit_code: true, duration_ms: 1, started_at: 0, finished_at: 0, attempt: 1, reason: '', ...over })

test('a task held back for the first heartbeat of its returning worker goes to another worker when that one goes inactive again first', { timeout: 10_000 }, async (t) => {
  const p = startPlacement(t, { requeueAfterMs: 0 })
  const w1 = await new RawWorker().start(t)
  const id = await p.submit({ command: 'sleep 60' })
  p.join('worker-1', w1.address)
  await p.until(id, (x) => x.status === 'running' && x.workerId === 'worker-1')
  p.registry.markInactive('worker-1', 'heartbeat-timeout', Date.now())
  await p.until(id, (x) => x.status === 'queued')
  // Back, but no heartbeat yet: whether it still runs the task is not known, so the task waits.
  p.registry.connect('worker-1', { specs: SPECS, reportedAddress: null }, Date.now())
  const w2 = await new RawWorker().start(t)
  p.join('worker-2', w2.address)
  // Let the drain that worker-2's arrival asked for run (on the next turn: setImmediate): it holds the task back.
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(p.tasks.get(id)?.status, 'queued', 'held back for worker-1\'s first heartbeat')
  // Gone again before saying anything: nothing holds the task any more.
  p.registry.markInactive('worker-1', 'heartbeat-timeout', Date.now())
  const moved = await p.until(id, (x) => x.status === 'running')
  assert.equal(moved.workerId, 'worker-2')
})

test('a result of the attempt a task was requeued from, reported while the next placement is being written, is the task\'s result: the decision is made again from the task as it is', { timeout: 20_000 }, async (t) => {
  const p = startPlacement(t, { requeueAfterMs: 0 })
  const w1 = await new RawWorker().start(t)
  const id = await p.submit({ command: 'sleep 60' })
  p.join('worker-1', w1.address)
  await p.until(id, (x) => x.status === 'running' && x.workerId === 'worker-1')
  const w2 = await new RawWorker().start(t)
  // The requeue's write is held, so the task's next transition (the drain's 'assigned' on
  // worker-2) waits in line behind it; the report, read while the task is queued, lines up after.
  const release = p.store.hold()
  p.registry.markInactive('worker-1', 'heartbeat-timeout', Date.now())
  await p.until(id, (x) => x.status === 'queued')
  p.join('worker-2', w2.address)
  const placing = p.until(id, (x) => x.status === 'assigned' && x.workerId === 'worker-2')
  // The drain runs on the next turn of the event loop (setImmediate): let it line up first.
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  const answer = p.queue.onCompletion(report(id))
  assert.equal(p.tasks.get(id)?.status, 'queued', 'read while queued')
  release()
  await placing
  assert.equal(await answer, true, 'recorded, not dropped as stale')
  const done = p.tasks.get(id)!
  assert.deepEqual({ status: done.status, workerId: done.workerId, attempt: done.attempt, attempts: done.attempts }, { status: 'completed', workerId: 'worker-1', attempt: 1, attempts: 1 })
  await w2.when((e) => e.method === 'CancelTask' && e.taskId === id)
})

test('a run its worker reports cancelled that this master never cancelled (the worker shut down) goes back to the queue, its run counted; an operator cancel stays final', async (t) => {
  const p = startPlacement(t)
  const w1 = await new RawWorker().start(t)
  p.join('worker-1', w1.address)
  const id = await p.submit({ command: 'sleep 60', max_attempts: 2 })
  await p.until(id, (x) => x.status === 'running' && x.workerId === 'worker-1')
  w1.onAssign = () => ({ code: grpc.status.UNAVAILABLE, details: 'keep it queued' })
  assert.equal(await p.queue.onCompletion(report(id, { status: 'cancelled', has_exit_code: false, reason: 'worker shutting down' })), true)
  const back = p.tasks.get(id)!
  assert.equal(back.status, 'queued', 'not cancelled: nobody asked for it')
  assert.equal(back.attempts, 1)
  assert.match(back.reason ?? '', /worker worker-1 stopped it \(worker shutting down\)/)

  const other = await p.submit({ command: 'sleep 60' })
  w1.onAssign = () => ({ success: true, message: 'started' })
  await p.until(other, (x) => x.status === 'running')
  const cancelled = await p.queue.cancel(p.tasks.get(other)!, 'by the operator')
  assert.equal(cancelled?.status, 'cancelled')
  assert.equal(await p.queue.onCompletion(report(other, { status: 'cancelled', has_exit_code: false, reason: 'cancelled' })), true, 'its report is the cancel it asked for')
  assert.equal(p.tasks.get(other)?.status, 'cancelled')
})
