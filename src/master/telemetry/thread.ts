// The telemetry thread (workers/telemetry-thread.ts is its entry file). Hosts one lane (placement
// per-worker) or many (placement N): drains each lane's ring of heartbeats in arrival order, folds them into the lane's history, and posts
// throttled summaries back to the main thread. It sleeps on a shared doorbell the main thread rings
// after each heartbeat, so an idle thread costs nothing and a busy one drains many rings per wake.
import { parentPort, workerData } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import { C, Counters } from '../counters.js'
import { Lane, type LaneSummary, type Sample } from './lane.js'
import type { FromTelemetryThread, TelemetryThreadData, ToTelemetryThread } from './protocol.js'

const data = workerData as TelemetryThreadData
const port = parentPort!
const bell = new Int32Array(data.bell)
const counters = new Counters(data.counters)
const lanes = new Map<string, Lane>()
const dirty = new Set<Lane>()
const scratch: Sample = { at: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0 }
let current: Lane | null = null
let processed = 0

const process1 = (s: Sample): void => {
  current!.record(s)
  processed++
  counters.observe('heartbeatDelayUs', (performance.timeOrigin + performance.now() - s.at) * 1000)
}

port.on('message', (msg: ToTelemetryThread) => {
  if (msg.type === 'open') {
    // Reopening a lane that this thread already has (a restart replay) keeps its progress: the
    // progress lives in the lane's shared memory, not here.
    lanes.set(msg.lane.workerId, new Lane(msg.lane))
  } else {
    const lane = lanes.get(msg.workerId)
    lanes.delete(msg.workerId)
    if (lane) dirty.delete(lane)
  }
  // Wake our own loop so a lane opened with samples already waiting is drained now.
  Atomics.add(bell, 0, 1)
  if (Atomics.load(bell, 1) === 1) Atomics.notify(bell, 0)
})

function drainAll(): void {
  for (const lane of lanes.values()) {
    if (lane.depth === 0) continue
    current = lane
    processed = 0
    const dropped = lane.drain(process1, scratch)
    if (processed > 0) counters.add(C.HEARTBEATS_PROCESSED, processed)
    if (dropped > 0) counters.add(C.HEARTBEATS_DROPPED, dropped)
    dirty.add(lane)
  }
  current = null
}

function flush(now: number): void {
  const items: LaneSummary[] = []
  for (const lane of dirty) items.push(lane.summary(now))
  dirty.clear()
  if (items.length > 0) port.postMessage({ type: 'summaries', items } satisfies FromTelemetryThread)
}

async function run(): Promise<never> {
  let lastFlush = 0
  for (;;) {
    const seen = Atomics.load(bell, 0)
    drainAll()
    let timeout = Infinity
    if (dirty.size > 0) {
      const now = Date.now()
      const due = lastFlush + data.summaryMs - now
      if (due <= 0) {
        flush(now)
        lastFlush = now
      } else {
        timeout = due
      }
    }
    // No wake-up is lost: a ring after `seen` was read makes the wait return at once (the value
    // differs); a ring before it was read is drained above. The main thread reads `sleeping` after
    // its ring, so if it saw 0 its ring came before this store, and so before the wait's compare.
    Atomics.store(bell, 1, 1)
    const waited = Atomics.waitAsync(bell, 0, seen, timeout)
    if (waited.async) await waited.value
    Atomics.store(bell, 1, 0)
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
