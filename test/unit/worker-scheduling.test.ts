import assert from 'node:assert/strict'
import { test } from 'node:test'
import { CloudaiError } from '../../src/shared/errors.js'
import { MAX_DRAIN_DEADLINE_S, parseDrainRequest, readWorkerScheduling, schedulingState } from '../../src/shared/worker-scheduling.js'

const refused = (code: string, field?: string) => (err: unknown): boolean => {
  assert.ok(err instanceof CloudaiError)
  assert.equal(err.code, code)
  if (field) assert.equal(err.details?.field, field)
  return true
}

test('a drain body takes deadline_s (seconds, above 0, at most a week; absent or null: none) and force (a boolean), nothing else', () => {
  assert.deepEqual(parseDrainRequest({}), { deadlineMs: null, force: false })
  assert.deepEqual(parseDrainRequest({ deadline_s: 90, force: false }), { deadlineMs: 90_000, force: false })
  assert.deepEqual(parseDrainRequest({ deadline_s: 0.5 }), { deadlineMs: 500, force: false })
  assert.deepEqual(parseDrainRequest({ deadline_s: null, force: true }), { deadlineMs: null, force: true })
  assert.deepEqual(parseDrainRequest({ deadline_s: MAX_DRAIN_DEADLINE_S }), { deadlineMs: MAX_DRAIN_DEADLINE_S * 1000, force: false })
  for (const deadline_s of [0, -1, MAX_DRAIN_DEADLINE_S + 1, '60', Number.NaN, true, [1]]) {
    assert.throws(() => parseDrainRequest({ deadline_s }), refused('CLOUDAI_BAD_FIELD', 'deadline_s'), JSON.stringify(deadline_s))
  }
  for (const force of ['true', 1, null]) assert.throws(() => parseDrainRequest({ force }), refused('CLOUDAI_BAD_FIELD', 'force'))
  assert.throws(() => parseDrainRequest({ deadline: 60 }), refused('CLOUDAI_BAD_REQUEST', 'deadline'))
  assert.throws(() => parseDrainRequest([]), refused('CLOUDAI_BAD_REQUEST'))
  assert.throws(() => parseDrainRequest('x'), refused('CLOUDAI_BAD_REQUEST'))
})

test('a stored scheduling state is read field by field: a damaged one reads as none, a damaged drain as a plain cordon', () => {
  const drain = { startedAt: 5, deadline: 10, force: true, drainedAt: null }
  assert.deepEqual(readWorkerScheduling({ cordonedAt: 4, drain }), { cordonedAt: 4, drain })
  assert.deepEqual(readWorkerScheduling({ cordonedAt: 4, drain: { startedAt: 5, deadline: 'soon', force: 'yes', drainedAt: -1 } }), { cordonedAt: 4, drain: { startedAt: 5, deadline: null, force: false, drainedAt: null } })
  assert.deepEqual(readWorkerScheduling({ cordonedAt: 4, drain: { startedAt: 'x' } }), { cordonedAt: 4, drain: null })
  for (const v of [null, undefined, 'cordoned', {}, { cordonedAt: -1 }, { cordonedAt: '4' }]) assert.equal(readWorkerScheduling(v), null, JSON.stringify(v))
  assert.equal(schedulingState(null), 'eligible')
  assert.equal(schedulingState({ cordonedAt: 1, drain: null }), 'cordoned')
  assert.equal(schedulingState({ cordonedAt: 1, drain }), 'draining')
  assert.equal(schedulingState({ cordonedAt: 1, drain: { ...drain, drainedAt: 11 } }), 'drained')
})
