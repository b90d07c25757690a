import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TaskEvent } from '../../bench/chaos/events.js'
import type { FaultRecord } from '../../bench/chaos/faults.js'
import { checkInvariants, type CheckInput, type TaskView } from '../../bench/chaos/invariants.js'
import type { RunLine, SubmittedTask, TaskKind } from '../../bench/chaos/tasks.js'

// The chaos suite's checker on made-up end states: each invariant breaks on the state that breaks
// it and on nothing else; at-least-once duplicates are counted with their cause, never a breach.

const T0 = Date.parse('2026-12-01T10:00:00Z')
const at = (s: number): string => new Date(T0 + s * 1000).toISOString()

function view(id: string, steps: [status: string, s: number, worker?: string, reason?: string][], extra: Partial<TaskView> = {}): TaskView {
  const history = steps.map(([status, s, worker, reason]) => ({ status, at: at(s), worker_id: worker ?? null, reason: reason ?? null }))
  const last = history[history.length - 1]!
  return { task_id: id, status: last.status, worker_id: last.worker_id, attempts: 1, exit_code: last.status === 'completed' ? 0 : null, reason: last.reason, history, ...extra }
}

const done = (id: string): TaskView => view(id, [['queued', 0], ['assigned', 1, 'w1'], ['running', 1, 'w1'], ['completed', 2, 'w1']])
const task = (id: string, kind: TaskKind = 'short', ack: 201 | 202 = 201, masterStart = 1): SubmittedTask => ({ id, kind, submittedAt: T0, ack, masterStart })
const events = (...statuses: string[]): TaskEvent[] => statuses.map((status, i) => ({ status, previous: i === 0 ? null : statuses[i - 1]!, at: T0 + i, masterStart: 1 }))
const runs = (...ids: string[]): RunLine[] => ids.map((taskId) => ({ taskId, pid: 0 }))

function input(over: Partial<CheckInput>): CheckInput {
  return { acknowledged: [], views: new Map(), events: new Map(), runs: [], faults: [], heartbeatTimeoutMs: 3000, killedWhileDegraded: new Set(), ...over }
}

const fault: FaultRecord = { kind: 'worker-kill', target: 'w1', injectedAt: T0 + 1000, clearedAt: T0 + 3000, heldMs: 2000, recoveredAt: T0 + 4000, recoveryMs: 1000, healed: false, note: '' }

test('chaos checker: a run where every task ended once holds every invariant, and a duplicate run is counted with its requeue and fault', () => {
  const dup = view('t-dup', [['queued', 0], ['assigned', 1, 'w1'], ['running', 1, 'w1'], ['queued', 5, undefined, 'worker w1 went inactive; requeued'], ['assigned', 5, 'w2'], ['running', 5, 'w2'], ['completed', 6, 'w2']], { attempts: 2 })
  const failed = view('t-fail', [['queued', 0], ['assigned', 1, 'w1'], ['running', 1, 'w1'], ['failed', 1, 'w1', 'exit code 7']], { exit_code: 7 })
  const v = checkInvariants(input({
    acknowledged: [task('t-ok'), task('t-dup', 'sleep'), task('t-fail', 'fail')],
    views: new Map([['t-ok', done('t-ok')], ['t-dup', dup], ['t-fail', failed]]),
    events: new Map([['t-ok', events('queued', 'assigned', 'running', 'completed')]]),
    runs: runs('t-ok', 't-dup', 't-dup', 't-fail'),
    faults: [fault],
  }))
  assert.deepEqual(v.breaches, [])
  assert.equal(v.figures.completed, 2)
  assert.equal(v.figures.failedOwnExit, 1)
  assert.equal(v.figures.ranMoreThanOnce, 1)
  assert.equal(v.figures.extraRuns, 1)
  const cause = v.findings.ranMoreThanOnce[0]!.cause!
  assert.match(cause, /went inactive; requeued/)
  assert.match(cause, /worker-kill of w1/)
})

test('chaos checker: an acknowledged task the master does not know is lost, unless it was accepted not durable by a master the suite killed while degraded', () => {
  const v = checkInvariants(input({
    acknowledged: [task('t-lost'), task('t-journal', 'short', 202, 3), task('t-202-other', 'short', 202, 1)],
    views: new Map([['t-lost', null], ['t-journal', null], ['t-202-other', null]]),
    killedWhileDegraded: new Set([3]),
  }))
  assert.equal(v.figures.lost, 2)
  assert.equal(v.figures.lostNotDurable, 1)
  assert.deepEqual(v.findings.lost.map((f) => f.taskId), ['t-lost', 't-202-other'])
  assert.equal(v.breaches.length, 1)
})

test('chaos checker: a task not final at the end is stuck', () => {
  const v = checkInvariants(input({ acknowledged: [task('t')], views: new Map([['t', view('t', [['queued', 0], ['assigned', 1, 'w1'], ['running', 1, 'w1']])]]), runs: runs('t') }))
  assert.equal(v.figures.stuck, 1)
  assert.match(v.breaches.join('\n'), /stuck/)
})

test('chaos checker: completed twice and moved backwards, seen in the /ws events only (the history lost the first completion)', () => {
  const v = checkInvariants(input({
    acknowledged: [task('t', 'sleep')],
    views: new Map([['t', done('t')]]),
    events: new Map([['t', events('queued', 'assigned', 'running', 'completed', 'queued', 'assigned', 'running', 'completed')]]),
    runs: runs('t', 't'),
  }))
  assert.equal(v.figures.completedTwice, 1)
  assert.equal(v.figures.movedBackwards, 1)
  assert.match(v.findings.movedBackwards[0]!.cause!, /\/ws event 4/)
})

test('chaos checker: a final state followed by another in the history moved backwards', () => {
  const back = view('t', [['queued', 0], ['assigned', 1, 'w1'], ['running', 1, 'w1'], ['failed', 2, 'w1', 'exit code 7'], ['queued', 3], ['assigned', 3, 'w1'], ['running', 3, 'w1'], ['failed', 4, 'w1', 'exit code 7']], { exit_code: 7, attempts: 2 })
  const v = checkInvariants(input({ acknowledged: [task('t', 'fail')], views: new Map([['t', back]]), runs: runs('t', 't') }))
  assert.equal(v.figures.movedBackwards, 1)
  assert.equal(v.figures.completedTwice, 0)
  assert.match(v.findings.movedBackwards[0]!.cause!, /history entry 4/)
})

test('chaos checker: a task given up because AssignTask to a dead worker failed breaks three invariants: failed because of its worker, attempts without runs, placed again at once', () => {
  const why = 'AssignTask to worker w1 failed (connect ECONNREFUSED 127.0.0.1:1)'
  const black = view('t', [['queued', 0], ['assigned', 1, 'w1'], ['queued', 1, undefined, `${why}; requeued`], ['assigned', 1, 'w1'], ['queued', 1, undefined, `${why}; requeued`], ['assigned', 1, 'w1'], ['failed', 1, 'w1', `${why}; gave up after 3 attempt(s)`]], { attempts: 3 })
  const v = checkInvariants(input({ acknowledged: [task('t')], views: new Map([['t', black]]) }))
  assert.equal(v.figures.failedDeadOrPausedWorker, 1)
  assert.equal(v.figures.placementsNeverRan, 3)
  assert.equal(v.figures.failedAssignments, 3)
  assert.equal(v.figures.maxPlacements, 3)
  assert.equal(v.figures.retriesWithoutBackoff, 2)
  assert.equal(v.breaches.length, 3)
})

test('chaos checker: a fault that did not recover within the deadline is a breach', () => {
  const v = checkInvariants(input({ faults: [{ ...fault, recoveredAt: null, recoveryMs: null, healed: true }] }))
  assert.equal(v.figures.faultsNotRecovered, 1)
  assert.match(v.breaches.join('\n'), /not recovered/)
})

test('chaos checker: after a failed AssignTask, a placement elsewhere, or on the same worker a while later, is no retry without backoff', () => {
  const why = 'AssignTask to worker w1 failed (deadline exceeded); requeued'
  const ok = view('t', [['queued', 0], ['assigned', 1, 'w1'], ['queued', 1, undefined, why], ['assigned', 1.1, 'w2'], ['queued', 1.2, undefined, 'AssignTask to worker w2 failed (x); requeued'], ['assigned', 3, 'w2'], ['running', 3, 'w2'], ['completed', 4, 'w2']])
  const v = checkInvariants(input({ acknowledged: [task('t')], views: new Map([['t', ok]]), runs: runs('t') }))
  assert.equal(v.figures.retriesWithoutBackoff, 0)
  assert.equal(v.figures.failedAssignments, 2)
  assert.deepEqual(v.breaches, [])
})

test('chaos checker: placed again on the worker at once after its AssignTask failed is no retry without backoff when that worker ran something in between (it answers again)', () => {
  const why = 'AssignTask to worker w1 failed (deadline exceeded); requeued'
  const t1 = view('t1', [['queued', 0], ['assigned', 1, 'w1'], ['queued', 6, undefined, why], ['assigned', 6.2, 'w1'], ['running', 6.3, 'w1'], ['completed', 7, 'w1']])
  // Another task's AssignTask to w1, sent before the pause and answered right after it.
  const t2 = view('t2', [['queued', 1], ['assigned', 1.5, 'w1'], ['running', 6.1, 'w1'], ['completed', 7, 'w1']])
  const seen = checkInvariants(input({ acknowledged: [task('t1'), task('t2')], views: new Map([['t1', t1], ['t2', t2]]), runs: [...runs('t1'), ...runs('t2')] }))
  assert.equal(seen.figures.retriesWithoutBackoff, 0)
  // Without that answer, the same placement is one.
  const alone = checkInvariants(input({ acknowledged: [task('t1')], views: new Map([['t1', t1]]), runs: runs('t1') }))
  assert.equal(alone.figures.retriesWithoutBackoff, 1)
})
