import assert from 'node:assert/strict'
import { test } from 'node:test'
import { once } from 'node:events'
import { Worker } from 'node:worker_threads'
import { IdleHeap } from '../../src/master/reconnect/idle-heap.js'

const MiB = 1024 * 1024

test('a thread compacts once it is idle after its heap grew, not while a batch is in flight, and waits its turn', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  let heap = 10 * MiB
  const outcomes: ('compacted' | 'busy' | 'unavailable')[] = []
  let next: 'compacted' | 'busy' = 'compacted'
  const idle = new IdleHeap(() => {
    outcomes.push(next)
    if (next === 'compacted') heap = 12 * MiB
    return next
  }, () => heap, 2000, 16 * MiB)
  // A pass that leaves the heap where it was: nothing to give back.
  idle.begin()
  idle.end()
  t.mock.timers.tick(5000)
  assert.deepEqual(outcomes, [], 'a heap that did not grow is left alone')
  // A burst grows it; two batches, the first ending while the second is in flight.
  idle.begin()
  idle.begin()
  heap = 40 * MiB
  idle.end()
  t.mock.timers.tick(5000)
  assert.deepEqual(outcomes, [], 'a batch still in flight')
  idle.end()
  t.mock.timers.tick(1999)
  // A batch that starts before the idle time is up puts it off, even if it ends at once.
  idle.begin()
  t.mock.timers.tick(10)
  idle.end()
  t.mock.timers.tick(1999)
  assert.deepEqual(outcomes, [], 'busy again before the idle time')
  // Another dial thread is compacting: this one tries again an idle time later.
  next = 'busy'
  t.mock.timers.tick(1)
  assert.deepEqual(outcomes, ['busy'])
  next = 'compacted'
  t.mock.timers.tick(2000)
  assert.deepEqual(outcomes, ['busy', 'compacted'])
  assert.equal(idle.compactions, 1)
  // Measured from what the compaction left: growing 12 -> 20 MiB is less than the growth asked.
  idle.begin()
  heap = 20 * MiB
  idle.end()
  t.mock.timers.tick(5000)
  assert.equal(idle.compactions, 1, 'growth counts from the heap the last compaction left')
  idle.begin()
  heap = 30 * MiB
  idle.end()
  t.mock.timers.tick(2000)
  assert.equal(idle.compactions, 2)
})

test('a thread whose runtime refuses, or whose collection throws, stops trying and keeps dialling', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  let calls = 0
  let heap = 0
  const idle = new IdleHeap(() => {
    calls++
    throw new Error('no collector')
  }, () => heap, 100, 1)
  idle.begin()
  heap = 10
  idle.end()
  t.mock.timers.tick(100)
  idle.begin()
  heap = 20
  idle.end()
  t.mock.timers.tick(1000)
  assert.equal(calls, 1)
  assert.equal(idle.compactions, 0)
  // More end() than begin() (a batch that failed twice over) never counts below zero.
  idle.end()
  idle.begin()
  t.mock.timers.tick(1000)
  assert.equal(calls, 1)
})

test('the compacting collector empties the pages of a fragmented old space, on a worker thread, in turns through its lock', async () => {
  // On a thread of its own, as a dial thread: the flags it sets are the process's, and so is the test runner's heap.
  const src = `
    const { parentPort } = require('node:worker_threads')
    import(${JSON.stringify(new URL('../../src/master/reconnect/idle-heap.js', import.meta.url).href)}).then(({ compactingCollector, oldSpaceBytes }) => {
      const lock = new Int32Array(new SharedArrayBuffer(4))
      let junk = []
      for (let i = 0; i < 300000; i++) junk.push({ a: 'x' + i, b: [i, i] })
      // One object in 50 lives on, on every page: a collection alone frees no page.
      const keep = junk.filter((_, i) => i % 50 === 0)
      junk = null
      const compact = compactingCollector(lock)
      const before = oldSpaceBytes()
      // From a timer, as IdleHeap calls it: called in the turn that made the garbage, it moved
      // nothing in this probe (the objects the running script still reaches may not be moved).
      setTimeout(() => {
        Atomics.store(lock, 0, 1)
        const whileHeld = compact()
        Atomics.store(lock, 0, 0)
        const outcome = compact()
        parentPort.postMessage({ before, after: oldSpaceBytes(), kept: keep.length, gcGlobal: typeof globalThis.gc, whileHeld, outcome, lockAfter: Atomics.load(lock, 0) })
      }, 0)
    })
  `
  const worker = new Worker(src, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 8 } })
  const [r] = (await once(worker, 'message')) as [{ before: number; after: number; kept: number; gcGlobal: string; whileHeld: string; outcome: string; lockAfter: number }]
  await once(worker, 'exit')
  assert.equal(r.kept, 6000)
  assert.equal(r.whileHeld, 'busy', 'another thread holds the lock: nothing is collected')
  assert.equal(r.outcome, 'compacted')
  assert.equal(r.lockAfter, 0, 'the lock is free again')
  if (!process.execArgv.includes('--expose-gc')) assert.equal(r.gcGlobal, 'undefined', 'the thread\'s own context gets no gc')
  assert.ok(r.before > 16 * 1024 * 1024, `old space grew to ${(r.before / 1048576).toFixed(1)} MiB`)
  assert.ok(r.after < r.before / 3, `old space ${(r.before / 1048576).toFixed(1)} MiB before, ${(r.after / 1048576).toFixed(1)} MiB after`)
})
