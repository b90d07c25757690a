import assert from 'node:assert/strict'
import { test } from 'node:test'
import { atDeadline, DEADLINE_SLOT_MS } from '../../src/master/reconnect/deadlines.js'

// The probes' deadline wheel on a dial thread: deadlines a few ms apart share one timer and fire
// together, never before their deadline and at most one slot after it.

test('probe deadlines within one slot fire together, in one timer callback, not before their deadline', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 })
  const fired: number[] = []
  let callbacks = 0
  const start = Date.now()
  for (const offset of [3000, 3003, 3011, 3024]) atDeadline(start + offset, () => fired.push(Date.now() - start))
  // The deadline of a later slot: its own timer.
  atDeadline(start + 3000 + 2 * DEADLINE_SLOT_MS, () => callbacks++)
  t.mock.timers.tick(2999)
  assert.deepEqual(fired, [])
  t.mock.timers.tick(DEADLINE_SLOT_MS + 1)
  assert.equal(fired.length, 4)
  assert.equal(new Set(fired).size, 1, 'the four fired at the same moment')
  assert.ok(fired[0]! >= 3024 && fired[0]! <= 3024 + DEADLINE_SLOT_MS)
  assert.equal(callbacks, 0)
  t.mock.timers.tick(2 * DEADLINE_SLOT_MS)
  assert.equal(callbacks, 1)
})

test('a cancelled deadline does not fire; the slot\'s others still do, and the last cancel clears its timer', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 2_000_000 })
  const fired: string[] = []
  const start = Date.now()
  const cancelA = atDeadline(start + 100, () => fired.push('a'))
  atDeadline(start + 101, () => fired.push('b'))
  cancelA()
  cancelA()
  const cancelC = atDeadline(start + 500, () => fired.push('c'))
  cancelC()
  t.mock.timers.tick(1000)
  assert.deepEqual(fired, ['b'])
})
