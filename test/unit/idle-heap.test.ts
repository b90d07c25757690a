import assert from 'node:assert/strict'
import { test } from 'node:test'
import { once } from 'node:events'
import { Worker } from 'node:worker_threads'
import { IdleHeap } from '../../src/master/reconnect/idle-heap.js'

const idle = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

test('a thread compacts once it is idle after a burst, and not while a batch is in flight or after a trickle', async () => {
  let compactions = 0
  const heap = new IdleHeap(() => compactions++, 20, 100)
  // A trickle: fewer dials than a burst, whatever the idle time.
  heap.begin(10)
  heap.end()
  await idle(60)
  assert.equal(compactions, 0, 'ten dials are no burst')
  // Two batches of a burst: the first ends while the second is in flight.
  heap.begin(60)
  heap.begin(60)
  heap.end()
  await idle(60)
  assert.equal(compactions, 0, 'a batch still in flight')
  heap.end()
  // A batch that starts before the idle time is up puts it off.
  heap.begin(1)
  await idle(60)
  assert.equal(compactions, 0, 'busy again before the idle time')
  heap.end()
  const deadline = Date.now() + 10_000
  while (compactions === 0 && Date.now() < deadline) await idle(10)
  assert.equal(compactions, 1)
  assert.equal(heap.compactions, 1)
  await idle(60)
  assert.equal(compactions, 1, 'once per burst')
  heap.begin(10)
  heap.end()
  await idle(60)
  assert.equal(compactions, 1, 'the dials counted since the last compaction start from zero')
})

test('the compacting collector gives a fragmented heap back to the system, on a worker thread', async () => {
  // On a thread of its own, as a dial thread: the flags it sets are the process's, and so is the test runner's heap.
  const src = `
    const { parentPort } = require('node:worker_threads')
    const { getHeapSpaceStatistics } = require('node:v8')
    const { compactingCollector } = require(${JSON.stringify(new URL('../../src/master/reconnect/idle-heap.js', import.meta.url).pathname)})
    const oldSpace = () => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_size
    let junk = []
    for (let i = 0; i < 300000; i++) junk.push({ a: 'x' + i, b: [i, i] })
    // One object in 50 lives on, on every page: a collection alone frees no page.
    const keep = junk.filter((_, i) => i % 50 === 0)
    junk = null
    const compact = compactingCollector()
    const before = oldSpace()
    // From a timer, as IdleHeap calls it: run in the same turn as the allocations, V8 moves nothing.
    setTimeout(() => {
      compact()
      parentPort.postMessage({ before, after: oldSpace(), kept: keep.length, gcGlobal: typeof globalThis.gc })
    }, 0)
  `
  const worker = new Worker(src, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 8 } })
  const [r] = (await once(worker, 'message')) as [{ before: number; after: number; kept: number; gcGlobal: string }]
  await once(worker, 'exit')
  assert.equal(r.kept, 6000)
  assert.equal(r.gcGlobal, 'undefined', 'the thread\'s own context gets no gc')
  assert.ok(r.before > 20 * 1024 * 1024, `old space grew to ${(r.before / 1048576).toFixed(1)} MiB`)
  assert.ok(r.after < r.before / 3, `old space ${(r.before / 1048576).toFixed(1)} MiB before, ${(r.after / 1048576).toFixed(1)} MiB after`)
})
