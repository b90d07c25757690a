import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Liveness } from '../../src/master/liveness.js'
import { Registry } from '../../src/master/registry.js'
import { C, Counters } from '../../src/master/counters.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'

const specs = { cpu: 1, memory: 1, storage: 1, gpu: 0 }
const usage = { cpu: 0, memory: 0, storage: 0, gpu: 0 }

test('a worker silent for longer than the heartbeat timeout becomes inactive, logged once', () => {
  const clock = new ManualClock()
  const { log, lines } = memoryLogger()
  const r = new Registry()
  const inactive: string[] = []
  r.on('worker-inactive', (w) => inactive.push(w.id))
  const counters = new Counters()
  const live = new Liveness(r, { timeoutMs: 15_000, log, clock, counters })
  live.start()
  r.register('w1', 'a:1', clock.now())
  r.register('w2', 'a:2', clock.now())
  r.connect('w1', { specs, reportedAddress: null }, clock.now())
  r.connect('w2', { specs, reportedAddress: null }, clock.now())

  // w2 keeps heartbeating every 5 s; w1 goes silent.
  for (let i = 0; i < 3; i++) {
    clock.advance(5_000)
    r.heartbeat('w2', usage, [], clock.now())
  }
  assert.deepEqual(inactive, [], 'not before the timeout has passed')
  clock.advance(1_000 + live.sweepMs)
  assert.deepEqual(inactive, ['w1'])
  assert.equal(r.get('w2')?.isActive, true)
  clock.advance(60_000)
  assert.deepEqual(inactive, ['w1', 'w2'])
  assert.equal(lines.filter((l) => l.msg.startsWith('Worker w1 became inactive')).length, 1)
  assert.equal(counters.raw(C.HEARTBEAT_TIMEOUTS), 2, 'cloudai_worker_heartbeat_timeouts_total counts each')
  live.close()
  assert.equal(clock.pending, 0, 'close() leaves no timer behind')
})

test('never-connected (registered, offline) workers are not swept', () => {
  const clock = new ManualClock()
  const r = new Registry()
  const live = new Liveness(r, { timeoutMs: 1_000, log: memoryLogger().log, clock })
  r.register('w1', 'a:1', clock.now())
  clock.advance(10_000)
  assert.deepEqual(live.sweep(), [])
})

test('a worker that timed out and came back times out again; one unregistered while active is never swept', () => {
  const clock = new ManualClock()
  const r = new Registry()
  const inactive: string[] = []
  r.on('worker-inactive', (w) => inactive.push(w.id))
  const live = new Liveness(r, { timeoutMs: 1_000, log: memoryLogger().log, clock })
  for (const id of ['w1', 'w2']) {
    r.register(id, `a:${id}`, clock.now())
    r.connect(id, { specs, reportedAddress: null }, clock.now())
  }
  r.unregister('w2')
  clock.advance(2_000)
  assert.deepEqual(live.sweep(), ['w1'])
  assert.deepEqual(live.sweep(), [], 'inactive now: not swept again')
  r.connect('w1', { specs, reportedAddress: null }, clock.now())
  clock.advance(500)
  assert.deepEqual(live.sweep(), [], 'back, and within the timeout')
  clock.advance(1_000)
  assert.deepEqual(live.sweep(), ['w1'])
  assert.deepEqual(inactive, ['w1', 'w1'])
})
