import assert from 'node:assert/strict'
import { test } from 'node:test'
import { RequeueTimers } from '../../src/master/requeue-timer.js'

test('an inactive worker\'s tasks are requeued once the wait is over, unless its wait ends first; 0 requeues at once; close clears every timer', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  const expired: string[] = []
  const timers = new RequeueTimers({ afterMs: 5000, onExpired: (id) => expired.push(id) })
  timers.wait('w1')
  assert.equal(timers.isWaiting('w1'), false, 'nothing before start()')
  timers.start()

  timers.wait('w1')
  timers.wait('w1')
  timers.wait('w2')
  assert.equal(timers.size, 2, 'one wait per worker')
  t.mock.timers.tick(4999)
  assert.deepEqual(expired, [])
  assert.equal(timers.end('w2'), true, 'w2 came back')
  assert.equal(timers.end('w2'), false)
  t.mock.timers.tick(1)
  assert.deepEqual(expired, ['w1'], 'w1 did not')
  assert.equal(timers.isWaiting('w1'), false)
  t.mock.timers.tick(60_000)
  assert.deepEqual(expired, ['w1'], 'w2 never')

  timers.wait('w3')
  timers.close()
  t.mock.timers.tick(60_000)
  assert.deepEqual(expired, ['w1'], 'closed: cleared, not fired')
  assert.equal(timers.size, 0)
  timers.wait('w4')
  assert.equal(timers.size, 0, 'no new wait once closed')

  const atOnce: string[] = []
  const zero = new RequeueTimers({ afterMs: 0, onExpired: (id) => atOnce.push(id) })
  zero.start()
  zero.wait('w1')
  assert.deepEqual(atOnce, ['w1'], '--requeue-after 0: at once')
  assert.equal(zero.size, 0)
})
