import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Lane, laneLayout } from '../../src/master/telemetry/lane.js'
import { LaneQueue } from '../../src/master/telemetry/queue.js'
import { LANES_PER_CHUNK, LaneSlab } from '../../src/master/telemetry/slab.js'

// The shared structures behind a heartbeat's path: the queue of lanes with work, the lane's
// queued flag, and the slab the lanes come from.

test('the queue of lanes with work hands lanes over in order and refuses a push when full, raising the overflow once', () => {
  const q = LaneQueue.create(4)
  for (const lane of [7, 3, 9, 1]) assert.equal(q.push(lane), true)
  assert.equal(q.length, 4)
  assert.equal(q.push(5), false, 'full')
  assert.equal(q.overflows, 1)
  assert.equal(q.takeOverflow(), true)
  assert.equal(q.takeOverflow(), false, 'taken once')
  assert.deepEqual([q.pop(), q.pop(), q.pop(), q.pop(), q.pop()], [7, 3, 9, 1, -1])
  // It wraps: many more pushes than slots.
  for (let i = 0; i < 1000; i++) {
    assert.equal(q.push(i), true)
    assert.equal(q.pop(), i)
  }
  assert.equal(q.length, 0)
})

test('a lane is queued once until its thread takes it, however many heartbeats land in it', () => {
  const lane = Lane.create(laneLayout(3_600_000, 5000))
  lane.open(0)
  const q = LaneQueue.create(8)
  for (let i = 0; i < 5; i++) {
    lane.write(Date.now(), i, 0, 0, 0, 0)
    if (lane.markQueued()) q.push(0)
  }
  assert.equal(q.length, 1, 'five heartbeats, one entry')
  // The thread takes it and clears the flag before draining: the next heartbeat queues it again.
  assert.equal(q.pop(), 0)
  lane.clearQueued()
  lane.write(Date.now(), 9, 0, 0, 0, 0)
  assert.equal(lane.markQueued(), true)
})

test('the slab hands out lanes chunk by chunk, reuses a freed lane only once its thread finished a drain round since, and reopens it cleared with a new generation', () => {
  const now = 1_000_000
  let rounds = 7
  const chunks: number[] = []
  const slab = new LaneSlab(laneLayout(3_600_000, 5000), (index) => chunks.push(index))
  const first = Array.from({ length: LANES_PER_CHUNK + 1 }, () => slab.allocate())
  assert.deepEqual(first.slice(0, 3), [0, 1, 2])
  assert.deepEqual(chunks, [0, 1], 'a chunk when the first one is full, not a buffer per lane')
  const lane = slab.lane(5)
  const gen = lane.open(0)
  lane.write(now, 50, 0, 0, 0, 0)
  lane.drain((s) => lane.record(s), { at: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0 })
  assert.equal(lane.processed, 1)
  slab.release(5, () => rounds)
  assert.equal(lane.owner, -1, 'free: its thread skips it')
  assert.equal(slab.allocate(), LANES_PER_CHUNK + 1, 'not reused at once: its thread may still be draining it')
  assert.equal(slab.allocate(), LANES_PER_CHUNK + 2, 'nor while that thread has not finished a round, however long that takes')
  rounds++
  assert.equal(slab.allocate(), 5, 'reused once its thread finished a round')
  assert.ok(lane.open(1) > gen, 'a new generation: summaries of the old worker are dropped')
  assert.equal(lane.owner, 1)
  assert.equal(lane.processed, 0)
  assert.deepEqual(lane.history(), [], 'cleared')
  assert.equal(lane.latestSample(), null)
  assert.equal(chunks.length, 2)
})

test('an idle thread waiting for work is woken by the first lane queued, and does not wait when one is already queued', { timeout: 20_000 }, async () => {
  const q = LaneQueue.create(8)
  // A wait of a minute: ending before the test's timeout means the push woke it.
  const waiting = q.idle(60_000)
  assert.equal(q.push(3), true)
  await waiting
  assert.equal(q.pop(), 3)
  assert.equal(q.push(4), true)
  await q.idle(60_000)
  assert.equal(q.length, 1, 'the lane is still there for the thread to take')
})
