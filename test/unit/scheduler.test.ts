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
