import assert from 'node:assert/strict'
import { test } from 'node:test'
import { candidate, EMPTY, neverFitsReason, pickWorker, place, type Candidate } from '../../src/master/scheduler.js'
import type { TaskRecord, WorkerRecord } from '../../src/shared/types.js'

const worker = (id: string, cpu: number, memory: number, gpu = 0, isActive = true): WorkerRecord => ({
  id, address: `h:${id.length}`, isActive, specs: { cpu, memory, storage: 100, gpu }, usage: null, runningTasks: [], reportedAddress: null,
  registeredAt: 0, connectedAt: 0, lastHeartbeat: 0, disconnectedAt: null, reconnects: 0, credential: null,
})
const task = (req: Partial<TaskRecord['req']>, targetWorkerId: string | null = null): TaskRecord => ({
  id: 't', name: '', command: 'true', dockerImage: '', req: { cpu: 0, memory: 0, storage: 0, gpu: 0, ...req }, targetWorkerId, userId: '', timeoutS: 0, maxAttempts: 3, env: {},
  status: 'queued', workerId: null, attempts: 0, attempt: 0, submittedAt: 0, assignedAt: null, startedAt: null, finishedAt: null, exitCode: null, reason: null, logsTail: '', updatedAt: 0, history: [],
})
const cand = (w: WorkerRecord, held = EMPTY): Candidate => ({ worker: w, held: { ...held }, tasks: 0, busyCpu: held.cpu })

test('free capacity is specs minus what placed tasks hold; the least loaded worker that fits wins', () => {
  const a = worker('a', 4, 8)
  const b = worker('b', 4, 8)
  assert.equal(pickWorker(task({ cpu: 2 }), [cand(a, { cpu: 3, memory: 0, storage: 0, gpu: 0 }), cand(b)])?.id, 'b')
  assert.equal(pickWorker(task({ cpu: 2 }), [cand(a, { cpu: 1, memory: 0, storage: 0, gpu: 0 }), cand(b, { cpu: 2, memory: 0, storage: 0, gpu: 0 })])?.id, 'a')
  assert.equal(pickWorker(task({ cpu: 2 }), [cand(a, { cpu: 3, memory: 0, storage: 0, gpu: 0 }), cand(b, { cpu: 3, memory: 0, storage: 0, gpu: 0 })]), null)
  assert.equal(pickWorker(task({ memory: 8 }), [cand(a, { cpu: 0, memory: 0.5, storage: 0, gpu: 0 })]), null)
  assert.equal(pickWorker(task({ gpu: 1 }), [cand(a), cand(worker('g', 4, 8, 1))])?.id, 'g')
})

test('inactive workers and workers with unknown specs are never picked; a target is honoured, never substituted', () => {
  assert.equal(pickWorker(task({}), [cand(worker('off', 8, 8, 0, false))]), null)
  assert.equal(pickWorker(task({}, 'b'), [cand(worker('a', 8, 8)), cand(worker('b', 1, 1))])?.id, 'b')
  assert.equal(pickWorker(task({ cpu: 2 }, 'b'), [cand(worker('a', 8, 8)), cand(worker('b', 1, 1))]), null)
})

test('a task no registered worker could ever fit is reported as such', () => {
  assert.match(neverFitsReason(task({ cpu: 64 }), [worker('a', 4, 8), worker('b', 8, 8, 0, false)]) ?? '', /no registered worker is large enough for 64 CPU/)
  assert.equal(neverFitsReason(task({ cpu: 4 }), [worker('a', 4, 8)]), null)
  const unknown = { ...worker('u', 0, 0), specs: null }
  assert.equal(neverFitsReason(task({ cpu: 64 }), [worker('a', 4, 8), unknown]), null, 'a worker that never connected might fit')
  assert.equal(neverFitsReason(task({}), []), null, 'no workers yet: it waits')
})

test('tasks without resource requests spread: six on two idle workers go three to each', () => {
  const cs = [candidate(worker('worker-1', 4, 8)), candidate(worker('worker-2', 4, 8))]
  const got: string[] = []
  for (let i = 0; i < 6; i++) {
    const t = task({})
    const w = pickWorker(t, cs)!
    place(cs.find((c) => c.worker.id === w.id)!, t)
    got.push(w.id)
  }
  assert.deepEqual(got, ['worker-1', 'worker-2', 'worker-1', 'worker-2', 'worker-1', 'worker-2'])
})

test('every task weighs at least one core in the ranking, and equal loads go to the worker with fewer tasks, then the lower id', () => {
  // Five tasks without requests on a 4-core worker weigh more than one 1-core task on another.
  const busy = candidate(worker('a', 4, 8))
  for (let i = 0; i < 5; i++) place(busy, task({}))
  const one = candidate(worker('b', 4, 8))
  place(one, task({ cpu: 1 }))
  assert.equal(pickWorker(task({}), [busy, one])?.id, 'b')
  // An 8-core worker takes twice the tasks of a 4-core one before it ranks as loaded.
  const big = candidate(worker('big', 8, 8))
  const small = candidate(worker('small', 4, 8))
  const got = { big: 0, small: 0 }
  for (let i = 0; i < 12; i++) {
    const t = task({})
    const w = pickWorker(t, [big, small])!
    place(w.id === 'big' ? big : small, t)
    got[w.id as 'big' | 'small']++
  }
  assert.deepEqual(got, { big: 8, small: 4 })
  // Equal load (both at half their cores), fewer tasks wins: one 2-core task against two 1-core ones.
  const x = candidate(worker('x', 4, 8))
  place(x, task({ cpu: 1 }))
  place(x, task({ cpu: 1 }))
  const y = candidate(worker('y', 4, 8))
  place(y, task({ cpu: 2 }))
  assert.equal(pickWorker(task({}), [x, y])?.id, 'y')
})

test('a suspect worker is never picked, however idle', () => {
  const suspect = { ...worker('a', 64, 64), suspect: { since: 1, reason: 'AssignTask failed (UNAVAILABLE: connect ECONNREFUSED)' } }
  assert.equal(pickWorker(task({}), [candidate(suspect), cand(worker('b', 4, 8), { cpu: 3, memory: 0, storage: 0, gpu: 0 })])?.id, 'b')
  assert.equal(pickWorker(task({}, 'a'), [candidate(suspect)]), null, 'not even as a target: the task waits for it')
})

test('a cordoned or draining worker is never picked: other workers take the task, one that targets it waits', () => {
  const cordoned = { ...worker('a', 8, 8), scheduling: { cordonedAt: 1, drain: null } }
  const draining = { ...worker('d', 8, 8), scheduling: { cordonedAt: 1, drain: { startedAt: 1, deadline: null, force: false, drainedAt: null } } }
  const free = worker('z', 1, 1)
  assert.equal(pickWorker(task({}), [cand(cordoned), cand(draining), cand(free)])?.id, 'z', 'even the busier, smaller worker is preferred')
  assert.equal(pickWorker(task({}), [cand(cordoned), cand(draining)]), null)
  assert.equal(pickWorker(task({}, 'a'), [cand(cordoned), cand(free)]), null, 'a task for a cordoned worker waits, never substituted')
  assert.equal(pickWorker(task({}, 'a'), [cand({ ...cordoned, scheduling: null }), cand(free)])?.id, 'a', 'uncordoned: it takes it')
  assert.equal(neverFitsReason(task({ cpu: 4 }, 'a'), [cordoned]), null, 'cordoned is not "never fits": it waits')
})
