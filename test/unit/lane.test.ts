import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Lane, laneBytes, laneLayout, RING_CAPACITY, RING_SLOTS, type LaneLayout, type Sample } from '../../src/master/telemetry/lane.js'

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0)

/** One tier of `points` points of `stepMs`: the layout of a short history. */
const single = (points: number, stepMs: number): LaneLayout => ({ stepMs, finePoints: points, coarseStepMs: stepMs, coarsePoints: 0 })

function drainAll(lane: Lane): { seen: Sample[]; dropped: number } {
  const seen: Sample[] = []
  const scratch: Sample = { at: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0 }
  const dropped = lane.drain((s) => {
    seen.push({ ...s })
    lane.record(s)
  }, scratch)
  return { seen, dropped }
}

test('a lane hands its heartbeats over in arrival order', () => {
  const lane = Lane.create(single(10, 1000))
  for (let i = 0; i < 10; i++) lane.write(T0 + i, i, 2 * i, 3, 4, i % 3)
  assert.equal(lane.depth, 10)
  const { seen, dropped } = drainAll(lane)
  assert.equal(dropped, 0)
  assert.deepEqual(seen.map((s) => s.cpu), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  assert.deepEqual(seen[3], { at: T0 + 3, cpu: 3, memory: 6, storage: 3, gpu: 4, running: 0 })
  assert.equal(lane.depth, 0)
  assert.equal(lane.processed, 10)
  assert.equal(drainAll(lane).seen.length, 0, 'nothing is handed over twice')
})

test('a lane written faster than it is drained drops the oldest samples, counts them, and stays bounded', () => {
  const lane = Lane.create(single(10, 1000))
  const total = RING_SLOTS * 3 + 5
  for (let i = 0; i < total; i++) lane.write(T0 + i, i % 100, 0, 0, 0, 0)
  assert.equal(lane.depth, RING_CAPACITY, 'the backlog never exceeds the ring')
  const { seen, dropped } = drainAll(lane)
  assert.equal(dropped, total - RING_CAPACITY)
  assert.equal(lane.dropped, total - RING_CAPACITY)
  assert.equal(seen.length, RING_CAPACITY)
  assert.deepEqual(seen.map((s) => s.at), Array.from({ length: RING_CAPACITY }, (_, k) => T0 + total - RING_CAPACITY + k), 'the newest samples survive, in order')
  // The ring keeps working after it was lapped.
  lane.write(T0 + total, 1, 1, 1, 1, 1)
  assert.deepEqual(drainAll(lane).seen.map((s) => s.at), [T0 + total])
})

test('history points average the samples of their step and keep the peaks', () => {
  const lane = Lane.create(single(10, 1000))
  // Step 0: cpu 10, 20, 60; step 1: cpu 40; a gap; step 3: cpu 90.
  lane.write(T0 + 0, 10, 50, 5, 0, 1)
  lane.write(T0 + 400, 20, 50, 5, 0, 1)
  lane.write(T0 + 999, 60, 80, 5, 10, 2)
  lane.write(T0 + 1000, 40, 10, 5, 0, 0)
  lane.write(T0 + 3500, 90, 10, 5, 0, 0)
  drainAll(lane)
  const h = lane.history()
  assert.deepEqual(h.map((p) => [p.at - T0, p.samples, p.cpu, p.cpuPeak]), [
    [0, 3, 30, 60],
    [1000, 1, 40, 40],
    [3000, 1, 90, 90],
  ])
  assert.equal(h[0]!.memory, 60)
  assert.equal(h[0]!.memoryPeak, 80)
  assert.equal(h[0]!.gpuPeak, 10)
  assert.equal(h[0]!.running, 1.33)
  assert.deepEqual(lane.history(T0 + 1500).map((p) => p.at - T0), [1000, 3000], 'since keeps the step holding it')
  assert.deepEqual(lane.latestSample(), { at: T0 + 3500, cpu: 90, memory: 10, storage: 5, gpu: 0, running: 0 })
})

test('the history is a ring: the oldest points go when it is full', () => {
  const lane = Lane.create(single(4, 1000))
  for (let i = 0; i < 7; i++) lane.write(T0 + i * 1000, i, 0, 0, 0, 0)
  drainAll(lane)
  assert.deepEqual(lane.history().map((p) => p.cpu), [3, 4, 5, 6])
})

test('rolling averages are weighted by samples and windows only see their own points', () => {
  const lane = Lane.create(laneLayout(3_600_000, 5000))
  const now = T0 + 3_600_000
  // Ten minutes ago: 4 samples at cpu 80. Thirty seconds ago: 1 sample at cpu 20 and one at 40.
  for (let i = 0; i < 4; i++) lane.write(now - 600_000 + i, 80, 0, 0, 0, 0)
  lane.write(now - 30_000, 20, 0, 0, 0, 3)
  lane.write(now - 29_000, 40, 0, 0, 0, 1)
  drainAll(lane)
  const s = lane.summary(now)
  assert.equal(s.windows['1m']!.samples, 2)
  assert.equal(s.windows['1m']!.average.cpu, 30)
  assert.equal(s.windows['1m']!.average.running, 2)
  assert.equal(s.windows['1m']!.peak.cpu, 40)
  assert.equal(s.windows['5m']!.samples, 2)
  assert.equal(s.windows['15m']!.samples, 6)
  assert.equal(s.windows['15m']!.average.cpu, 63.33, '(4 * 80 + 20 + 40) / 6, to two decimals')
  assert.equal(s.windows['15m']!.peak.cpu, 80)
  assert.equal(s.processed, 6)
  assert.equal(lane.summary(now + 2 * 3_600_000).windows['1h'], null, 'nothing in the last hour')
})

test('a second view of the same memory (a restarted thread) continues where the first stopped', () => {
  const lane = Lane.create(single(10, 1000))
  lane.write(T0, 10, 0, 0, 0, 0)
  lane.write(T0 + 1, 30, 0, 0, 0, 0)
  drainAll(lane)
  lane.write(T0 + 2, 50, 0, 0, 0, 0)
  const reborn = new Lane(lane.init)
  const { seen } = drainAll(reborn)
  assert.deepEqual(seen.map((s) => s.cpu), [50], 'only what was not processed yet')
  assert.equal(reborn.history()[0]!.samples, 3)
  assert.equal(reborn.history()[0]!.cpu, 30)
})

test('a writer thread racing a reader never hands over a torn or out-of-order sample, and every sample is processed or counted dropped', async () => {
  const { Worker } = await import('node:worker_threads')
  const lane = Lane.create(single(10, 1000))
  const total = 2_000_000
  // The writer runs flat out on its own thread; each sample's fields are derived from its number,
  // so a sample mixed from two writes is detectable.
  const writer = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads')
     import(workerData.laneUrl).then(({ Lane }) => {
       const lane = new Lane(workerData.init)
       for (let i = 1; i <= workerData.total; i++) lane.write(i, i % 97, (i % 97) / 2, i % 13, i % 7, i % 5)
       parentPort.postMessage('done')
     })`,
    { eval: true, workerData: { laneUrl: new URL('../../src/master/telemetry/lane.js', import.meta.url).href, init: lane.init, total } },
  )
  const done = new Promise((resolve, reject) => {
    writer.once('message', resolve)
    writer.once('error', reject)
  })
  const scratch: Sample = { at: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0 }
  let last = 0
  let seen = 0
  let dropped = 0
  const check = (s: Sample): void => {
    const i = s.at
    if (!(i > last) || s.cpu !== i % 97 || s.memory !== (i % 97) / 2 || s.storage !== i % 13 || s.gpu !== i % 7 || s.running !== i % 5) {
      throw new Error(`bad sample after ${last}: ${JSON.stringify(s)}`)
    }
    last = i
    seen++
  }
  // A tight loop on this thread against the writer's on its own: the overlap is the point.
  const deadline = Date.now() + 60_000
  let overlapping = 0
  while (last < total) {
    if (Date.now() > deadline) throw new Error(`the writer stopped at ${last}`)
    const before = seen
    dropped += lane.drain(check, scratch)
    if (seen > before && last < total) overlapping++
  }
  await done
  await writer.terminate()
  assert.ok(overlapping > 0, 'some drains ran while the writer was writing')
  assert.equal(last, total, 'the last sample written is the last handed over')
  assert.equal(seen + dropped, total)
  assert.equal(lane.dropped, dropped)
  assert.equal(lane.processed, seen)
})

test('the history is full resolution for the recent past and coarse before, each sample counted once', () => {
  // Steps of 1 s for the last 10 s (11 points), points of 5 s for a minute.
  const lane = Lane.create({ stepMs: 1000, finePoints: 11, coarseStepMs: 5000, coarsePoints: 13 })
  for (let i = 0; i < 40; i++) {
    lane.write(T0 + i * 1000, i, 0, 0, 0, 0)
    if (i === 19) drainAll(lane)
  }
  drainAll(lane)
  const h = lane.history()
  // The fine points kept start at 29 s; the tiers meet at the next 5 s boundary, 30 s.
  assert.deepEqual(h.map((p) => [(p.at - T0) / 1000, p.stepMs, p.samples, p.cpu]), [
    [0, 5000, 5, 2], [5, 5000, 5, 7], [10, 5000, 5, 12], [15, 5000, 5, 17], [20, 5000, 5, 22], [25, 5000, 5, 27],
    ...Array.from({ length: 10 }, (_, k) => [30 + k, 1000, 1, 30 + k]),
  ])
  assert.equal(h.reduce((n, p) => n + p.samples, 0), 40)
  assert.deepEqual(lane.history(T0 + 12_000).map((p) => (p.at - T0) / 1000).slice(0, 5), [10, 15, 20, 25, 30], 'since keeps the point holding it')
  const s = lane.summary(T0 + 40_000)
  assert.equal(s.windows['1m']!.samples, 40)
  assert.equal(s.windows['1m']!.average.cpu, 19.5)
  assert.equal(s.windows['1m']!.peak.cpu, 39)
})

test('at the default settings a lane keeps 5 s points for 6 minutes and minute points to the hour, in 5.8 KiB, with exact windows', () => {
  const layout = laneLayout(3_600_000, 5000)
  assert.deepEqual(layout, { stepMs: 5000, finePoints: 73, coarseStepMs: 60_000, coarsePoints: 61 })
  // 36 bytes a point (float32 averages, uint16 peaks), the ring and the control block.
  assert.equal(laneBytes(layout), 5960)
  const lane = Lane.create(layout)
  // 70 minutes of heartbeats every 5 s, cpu = the minute it fell in.
  const beats = 70 * 12
  for (let i = 0; i < beats; i++) {
    lane.write(T0 + i * 5000, Math.floor(i / 12), 0, 0, 0, 0)
    if (i % 20 === 19) drainAll(lane)
  }
  drainAll(lane)
  const now = T0 + beats * 5000
  const s = lane.summary(now)
  assert.deepEqual(WINDOW_SAMPLES.map((w) => s.windows[w]!.samples), [12, 60, 180, 720])
  assert.equal(s.windows['1h']!.average.cpu, 39.5, 'minutes 10 to 69')
  assert.equal(s.windows['15m']!.peak.cpu, 69)
  const h = lane.history()
  const coarse = h.filter((p) => p.stepMs === 60_000)
  const fine = h.filter((p) => p.stepMs === 5000)
  assert.equal(fine.length, 72, 'the last 6 minutes at full resolution')
  assert.equal(fine[0]!.at, T0 + 64 * 60_000)
  assert.deepEqual(coarse.map((p) => (p.at - T0) / 60_000), Array.from({ length: 55 }, (_, k) => 9 + k), 'minute points before, back past the hour')
  assert.ok(coarse.every((p) => p.samples === 12 && p.cpu === (p.at - T0) / 60_000))
  assert.ok(h.every((p, k) => k === 0 || p.at > h[k - 1]!.at), 'oldest first')
})

const WINDOW_SAMPLES = ['1m', '5m', '15m', '1h'] as const

test('peaks keep a percentage to two decimals, and a history point has no room for more', () => {
  const lane = Lane.create(single(4, 1000))
  lane.write(T0, 12.34, 99.99, 0.01, 100, 0)
  lane.write(T0 + 10, 12.35, 50, 0, 0, 0)
  drainAll(lane)
  const [p] = lane.history()
  assert.deepEqual([p!.cpuPeak, p!.memoryPeak, p!.storagePeak, p!.gpuPeak], [12.35, 99.99, 0.01, 100])
  assert.deepEqual(lane.summary(T0 + 100).windows['1m']!.peak, { cpu: 12.35, memory: 99.99, storage: 0.01, gpu: 100 })
})

test('lanes of one buffer share its views: a lane costs its thread a few hundred bytes of heap, not a dozen typed arrays', () => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const layout = laneLayout(3_600_000, 5000)
  const perBuffer = 256
  const buffers = Array.from({ length: 8 }, () => new SharedArrayBuffer(perBuffer * laneBytes(layout)))
  // One lane per buffer first, so that the buffers' own views are not counted below.
  for (const buffer of buffers) new Lane({ buffer, byteOffset: 0, layout }).write(T0, 1, 1, 1, 1, 0)
  gc()
  const before = process.memoryUsage().heapUsed
  const lanes: Lane[] = []
  for (const buffer of buffers) for (let i = 0; i < perBuffer; i++) lanes.push(new Lane({ buffer, byteOffset: i * laneBytes(layout), layout }))
  gc()
  const perLane = (process.memoryUsage().heapUsed - before) / lanes.length
  assert.equal(lanes.length, 2048)
  // About 200 B here; heap figures move with the GC's bookkeeping (436 B seen in one CI run), and a
  // lane with its own dozen typed arrays cost 1,200 B: the bound sits between them.
  assert.ok(perLane < 800, `${perLane.toFixed(0)} bytes of heap per lane`)
})
