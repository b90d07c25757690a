// The telemetry thread (workers/telemetry-thread.ts is its entry file). Hosts one lane (placement
// per-worker) or many (placement N). Every tick (or sooner when its queue is half full) it takes
// the lanes with work from its queue, drains each lane's ring of heartbeats in arrival order and
// folds them into the lane's history; it never looks at a lane without work. Summaries go back to
// the main thread only for lanes somebody subscribes to, at most one per lane per `summaryMs`.
import { parentPort, workerData } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import { C, Counters } from '../counters.js'
import type { Lane, Sample } from './lane.js'
import { LaneQueue } from './queue.js'
import { laneIn, LANES_PER_CHUNK, prefault } from './slab.js'
import type { FromTelemetryThread, LaneReport, TelemetryThreadData, ToTelemetryThread } from './protocol.js'

const data = workerData as TelemetryThreadData
// This thread's origin, read once (each read calls into C++): origin + now() is epoch ms, the
// clock the main thread stamps heartbeats with.
const TIME_ORIGIN = performance.timeOrigin
const port = parentPort!
const queue = new LaneQueue(data.queue)
const counters = new Counters(data.counters)
const chunks: (SharedArrayBuffer | undefined)[] = [...data.chunks]
for (const chunk of data.chunks) prefault(chunk)
/** Views of the lanes seen so far, by index (a lane's view is built once). */
const views: (Lane | undefined)[] = []
/** Lanes queued before their chunk's message arrived: tried again next tick. */
let early: number[] = []
/** Wanted lanes drained since the last summaries were sent. */
const dirty = new Set<number>()
const scratch: Sample = { at: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0 }
let current: Lane | null = null
let processed = 0

const process1 = (s: Sample): void => {
  current!.record(s)
  processed++
  counters.observe('heartbeatDelayUs', (TIME_ORIGIN + performance.now() - s.at) * 1000)
}

/** Lanes drained so far: a tick that drains none is idle. */
let lanesVisited = 0
/** Idle ticks in a row after which the thread waits for work instead of ticking. */
const IDLE_AFTER_TICKS = Math.max(1, Math.ceil(1000 / data.tickMs))
/** The longest idle wait (a backstop: a queued lane or a chunk ends it at once). */
const IDLE_WAIT_MS = 60_000

/** A sweep is due: lanes of a chunk that arrived late may have been flagged while we could not see them. */
let sweepDue = false

port.on('message', (msg: ToTelemetryThread) => {
  if (msg.type === 'chunk') {
    chunks[msg.index] = msg.buffer
    prefault(msg.buffer)
    sweepDue = true
    // An idle wait would hold the sweep back: end it (a tick's wait just ends at its time).
    queue.wake()
  }
})

function view(index: number): Lane | null {
  let lane = views[index]
  if (!lane) {
    const v = laneIn(chunks, data.layout, index)
    if (!v) return null
    views[index] = lane = v
  }
  return lane
}

/** Drains one lane if it is still ours; false when its chunk has not arrived yet. */
function visit(index: number): boolean {
  const lane = view(index)
  if (!lane) return false
  // Freed (or moved) since it was queued: not ours to touch.
  if (lane.owner !== data.index) return true
  // Cleared before the drain: a heartbeat written after the drain read the write count finds the
  // flag clear and queues the lane again; one written before is drained now.
  lane.clearQueued()
  lanesVisited++
  current = lane
  processed = 0
  const dropped = lane.drain(process1, scratch)
  current = null
  if (processed > 0) counters.add(C.HEARTBEATS_PROCESSED, processed)
  if (dropped > 0) counters.add(C.HEARTBEATS_DROPPED, dropped)
  if (processed > 0 && (queue.wantAll || lane.wanted)) dirty.add(index)
  return true
}

/**
 * After a full queue (or a restart): every lane of ours whose flag is set or that has samples
 * waiting. The one scan of all lanes, and only then.
 */
function sweep(): void {
  const total = chunks.length * LANES_PER_CHUNK
  for (let i = 0; i < total; i++) {
    const lane = view(i)
    if (lane && lane.owner === data.index && (lane.queued || lane.depth > 0)) visit(i)
  }
}

function drainQueue(): void {
  if (early.length > 0) {
    const retry = early
    early = []
    for (const i of retry) if (!visit(i)) early.push(i)
  }
  for (let i = queue.pop(); i !== -1; i = queue.pop()) if (!visit(i)) early.push(i)
  // Both taken before the sweep, so that an overflow or a chunk during it brings another.
  const overflowed = queue.takeOverflow()
  if (overflowed || sweepDue) {
    sweepDue = false
    sweep()
  }
}

function flush(now: number): void {
  const items: LaneReport[] = []
  for (const index of dirty) {
    const lane = views[index]!
    if (lane.owner === data.index) items.push({ lane: index, gen: lane.gen, summary: lane.summary(now) })
  }
  dirty.clear()
  if (items.length > 0) port.postMessage({ type: 'summaries', items } satisfies FromTelemetryThread)
}

async function run(): Promise<never> {
  // A restarted thread may have died between popping a lane and draining it: look at all once.
  queue.raiseOverflow()
  let lastFlush = 0
  let idleTicks = 0
  for (;;) {
    const before = lanesVisited
    drainQueue()
    // The lanes this round took are done with: the slab may now hand the freed ones out again.
    queue.endRound()
    idleTicks = lanesVisited === before && early.length === 0 && dirty.size === 0 ? idleTicks + 1 : 0
    // Nothing for a second's worth of ticks (an empty or nearly silent fleet): wait for a lane
    // instead of ticking. A fleet that beats keeps the thread ticking, never woken per heartbeat.
    if (idleTicks >= IDLE_AFTER_TICKS) {
      await queue.idle(IDLE_WAIT_MS)
      continue
    }
    let timeout = data.tickMs
    if (dirty.size > 0) {
      const now = Date.now()
      const due = lastFlush + data.summaryMs - now
      if (due <= 0) {
        flush(now)
        lastFlush = now
      } else {
        timeout = Math.min(timeout, due)
      }
    }
    await queue.sleep(timeout)
  }
}

// The loop ends only by an error: the thread then dies of it, and the hub logs the error and
// restarts the thread, whose lanes' state is in shared memory. Thrown outside the promise so that
// it is the thread's 'error' event, not an unhandled rejection.
run().catch((err: unknown) => {
  setImmediate(() => {
    throw err
  })
})
