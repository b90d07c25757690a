import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DialBudget } from '../../src/master/reconnect/budget.js'
import { fastRedialDelay, RedialSchedule } from '../../src/master/reconnect/schedule.js'

test('re-dials of a recently lost worker start at about 250 ms and double, with jitter, up to the 1.5 s cap', () => {
  const top = [0, 1, 2, 3, 4, 10, 100].map((n) => fastRedialDelay(n, 250, 1500, () => 1))
  assert.deepEqual(top, [250, 500, 1000, 1500, 1500, 1500, 1500])
  const bottom = [0, 1, 2, 3, 40].map((n) => fastRedialDelay(n, 250, 1500, () => 0))
  assert.deepEqual(bottom, [125, 250, 500, 750, 750], 'never less than half the ceiling: a rack lost at once is spread, not dialled in the same millisecond')
})

test('the schedule hands out the most overdue worker first, nothing for a worker while its dial is in flight', () => {
  const s = new RedialSchedule({ fastWindowMs: 60_000, random: () => 1 })
  s.lost('a', 1000) // due at 1250
  s.lost('b', 900) // due at 1150
  assert.equal(s.nextDueAt(), 1150)
  assert.equal(s.takeDue(1100), null, 'nothing due yet')
  assert.equal(s.takeDue(2000), 'b')
  assert.equal(s.takeDue(2000), 'a')
  assert.equal(s.takeDue(2000), null, 'both in flight now')
  assert.equal(s.nextDueAt(), null)
  s.dialSettled('a', 2100)
  assert.equal(s.nextDueAt(), 2600, 'the second re-dial after 500 ms')
  s.forget('a')
  assert.equal(s.nextDueAt(), null, 'a worker back (or unregistered) has nothing due')
  assert.equal(s.size, 1)
})

test('a worker past its fast window leaves the schedule: from then on the pass dials it, once per interval', () => {
  const s = new RedialSchedule({ fastWindowMs: 10_000, random: () => 1 })
  s.lost('w', 0)
  let t = 0
  let dials = 0
  for (;;) {
    const due = s.nextDueAt()
    if (due === null) break
    t = due
    // Due after its window closed: it leaves instead.
    if (s.takeDue(t) === null) break
    dials++
    s.dialSettled('w', t + 10)
  }
  assert.equal(s.has('w'), false)
  assert.ok(t < 10_000 + 1500, `its last re-dial is about the window's end (${t} ms)`)
  assert.ok(dials >= 8 && dials <= 12, `re-dialled ${dials} times in 10 s: after the first few, once per 1.5 s`)
  const none = new RedialSchedule({ fastWindowMs: 0 })
  none.lost('w', 0)
  assert.equal(none.size, 0, 'a 0 window schedules nothing')
})

test('the budget starts at most its rate in dials per second, a second\'s worth at once, and holds at most its in-flight cap', () => {
  const b = new DialBudget({ ratePerSec: 10, maxInflight: 100 }, 0)
  let n = 0
  while (b.tryTake(0)) n++
  assert.equal(n, 10, 'a quiet second\'s worth at once')
  assert.equal(b.waitMs(0), 100, 'the next token in 1/rate s')
  assert.equal(b.tryTake(50), false)
  assert.equal(b.tryTake(100), true)
  for (let i = 0; i < 11; i++) b.release()
  let later = 0
  while (b.tryTake(60_000)) later++
  assert.equal(later, 10, 'an idle minute does not bank a minute\'s worth')
  const capped = new DialBudget({ ratePerSec: 1000, maxInflight: 3 }, 0)
  assert.deepEqual([capped.tryTake(0), capped.tryTake(0), capped.tryTake(0), capped.tryTake(0)], [true, true, true, false])
  capped.release()
  assert.equal(capped.tryTake(0), true, 'a settled dial frees its place')
  capped.untake()
  assert.equal(capped.inflight, 2)
})
