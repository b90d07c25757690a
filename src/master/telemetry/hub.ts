import { EventEmitter } from 'node:events'
import { availableParallelism } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Worker } from 'node:worker_threads'
import type { Logger } from '../../shared/log.js'
import { C, type Counters } from '../counters.js'
import { laneBytes, laneLayout, RING_SLOTS, type HistoryPoint, type LaneLayout, type LaneSummary } from './lane.js'
import { LaneQueue } from './queue.js'
import { LaneSlab } from './slab.js'
import type { RunningTaskInfo, WorkerRecord, WorkerUsage } from '../../shared/types.js'
import type { FromTelemetryThread, TelemetryThreadData, ToTelemetryThread } from './protocol.js'
import type { HeartbeatSink } from '../grpc.js'
import type { Registry } from '../registry.js'

/** `per-worker`: a thread per worker. A number: that many threads, each worker pinned to one. */
export type TelemetryPlacement = 'per-worker' | number

export interface TelemetryOptions {
  placement: TelemetryPlacement
  counters: Counters
  log: Logger
  /** History kept per worker (at least an hour in production). */
  historyMs: number
  /** Width of one history point of the recent past; samples inside a step are averaged, peaks kept. */
  stepMs: number
  /** At most one summary per subscribed lane per this interval goes back to the main thread. */
  summaryMs: number
  /** How often a thread drains its queue of lanes with work (default 250 ms). */
  tickMs?: number
  /** Slots of a thread's queue of lanes with work, a power of two (default 4096; tests make it small). */
  queueSlots?: number
}

/** `auto`: one thread per core beyond the main thread's, at least 1, at most 8. */
export function autoTelemetryThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism() - 1))
}

// A tick is a wake of the thread, and a wake is what a tick costs: ~0.15 ms of CPU on a loaded
// 2-core machine (the event loop of a worker thread brought back through V8's platform), whatever
// the lanes it then drains. At 50 ms that was 3 ms/s per thread, with or without many heartbeats:
// half of what an idle master with 500 streamed workers spent over a bare grpc-js server. A
// heartbeat waits up to a tick to be folded; nothing reads it sooner than that matters (summaries
// go out at most once a second, the API's summary trails by at most a tick).
const DEFAULT_TICK_MS = 250
const DEFAULT_QUEUE_SLOTS = 4096
// A per-worker thread hosts one lane: its queue never holds more.
const PER_WORKER_QUEUE_SLOTS = 4
const CRASH_MEMORY_MS = 60_000
const RING_HALF = RING_SLOTS / 2
// Fixed for the process, but each read of performance.timeOrigin is a call into C++: read once.
const TIME_ORIGIN = performance.timeOrigin

interface ThreadSlot {
  index: number
  worker: Worker | null
  queue: LaneQueue
  lanes: number
  /** Crashes in a row, for the restart backoff; a crash a minute after the last one is a first. */
  crashes: number
  lastCrashAt: number
  restartTimer: NodeJS.Timeout | null
}

interface LaneEntry {
  index: number
  workerId: string
  thread: ThreadSlot
}

export interface TelemetryEvents {
  /** A fresh summary of a worker somebody subscribes to (see want()). */
  summary: [summary: LaneSummary]
}

const THREAD_FILE = new URL('../../../workers/telemetry-thread.js', import.meta.url)

/**
 * The main thread's side of telemetry. A worker gets a lane of the slab when it first connects
 * (RegisterWorker) and keeps it until it is unregistered. A heartbeat is written into the lane's
 * ring and, if the lane had no work waiting, the lane's index is pushed onto its thread's queue:
 * a few stores into shared memory, no message, no wake-up, no allocation. Threads drain their
 * queues on their own tick.
 *
 * Summaries: read fresh from the lane's shared memory when asked (summary(), for the API), and
 * sent by the threads only for workers somebody subscribes to (want(), kept by the WebSocket).
 *
 * A thread that dies is restarted (with backoff if it keeps dying); the lanes and its queue are in
 * shared memory, so nothing but the time it was down is lost.
 */
export class TelemetryHub extends EventEmitter<TelemetryEvents> implements HeartbeatSink {
  private readonly lanes = new Map<string, LaneEntry>()
  /** Workers by lane index, to name the threads' summaries. */
  private readonly byIndex: (LaneEntry | undefined)[] = []
  private readonly pinned: ThreadSlot[] = []
  private readonly perWorker = new Set<ThreadSlot>()
  private readonly layout: LaneLayout
  private readonly slab: LaneSlab
  private readonly tickMs: number
  private readonly queueSlots: number
  /** Workers somebody wants summaries of; `wantAll` counts as all of them. */
  private readonly wanted = new Set<string>()
  private wantAll = false
  private nextIndex = 0
  private state: 'new' | 'running' | 'closed' = 'new'
  private readonly onActive = (w: WorkerRecord): void => this.open(w.id)
  private readonly onUnregistered = (w: WorkerRecord): void => {
    this.close1(w.id).catch((err: unknown) => this.opts.log.warn({ workerId: w.id, err }, `Telemetry thread of unregistered worker ${w.id} did not stop cleanly`))
  }

  constructor(
    private readonly registry: Registry,
    private readonly opts: TelemetryOptions,
  ) {
    super()
    this.layout = laneLayout(opts.historyMs, opts.stepMs)
    this.tickMs = opts.tickMs ?? DEFAULT_TICK_MS
    this.queueSlots = opts.queueSlots ?? DEFAULT_QUEUE_SLOTS
    this.slab = new LaneSlab(this.layout, (index, buffer) => {
      for (const slot of this.slots()) this.post(slot, { type: 'chunk', index, buffer })
    })
  }

  get placement(): TelemetryPlacement {
    return this.opts.placement
  }

  get stepMs(): number {
    return this.opts.stepMs
  }

  /** Bytes of one lane in shared memory. */
  get laneBytes(): number {
    return laneBytes(this.layout)
  }

  /** Telemetry threads running now. */
  get threadCount(): number {
    return this.slots().filter((s) => s.worker !== null).length
  }

  /** Drain rounds the running threads finished (each is one tick or wake of a thread): for tests and diagnostics. */
  get rounds(): number {
    let n = 0
    for (const s of this.slots()) n += s.queue.rounds
    return n
  }

  get laneCount(): number {
    return this.lanes.size
  }

  start(): void {
    if (this.state !== 'new') return
    this.state = 'running'
    // The first chunk before the threads: they get it in their workerData and fault it in.
    this.slab.grow()
    if (this.opts.placement !== 'per-worker') {
      for (let i = 0; i < this.opts.placement; i++) {
        const slot = this.newSlot(this.queueSlots)
        this.pinned.push(slot)
        this.spawn(slot)
      }
    }
    this.registry.on('worker-active', this.onActive)
    this.registry.on('worker-unregistered', this.onUnregistered)
    // A worker already connected before telemetry started (not in the master, but in tests).
    for (const w of this.registry.values()) if (w.isActive) this.open(w.id)
  }

  /** HeartbeatSink: called on the main thread for each accepted heartbeat. Shared-memory stores only. */
  ingest(workerId: string, usage: WorkerUsage, running: RunningTaskInfo[]): void {
    const entry = this.lanes.get(workerId)
    if (!entry) return
    const lane = this.slab.lane(entry.index)
    // Arrival in epoch ms with sub-ms precision: the thread measures its delay against it.
    const backlog = lane.write(TIME_ORIGIN + performance.now(), usage.cpu, usage.memory, usage.storage, usage.gpu, running.length)
    // Queued once until its thread takes it; a full queue leaves the flag set for the thread's sweep.
    if (lane.markQueued()) entry.thread.queue.push(entry.index)
    // A worker sending in a burst would lap its ring before the tick: wake the thread, once a burst.
    if (backlog === RING_HALF) entry.thread.queue.wake()
  }

  /** Opens the worker's lane (idempotent). */
  open(workerId: string): void {
    if (this.state !== 'running' || this.lanes.has(workerId)) return
    let thread: ThreadSlot
    if (this.opts.placement === 'per-worker') {
      thread = this.newSlot(PER_WORKER_QUEUE_SLOTS)
      this.perWorker.add(thread)
    } else {
      // Fewest lanes first: workers are spread evenly and stay on their thread.
      thread = this.pinned.reduce((a, b) => (b.lanes < a.lanes ? b : a))
    }
    const index = this.slab.allocate()
    this.slab.lane(index).open(thread.index)
    this.slab.lane(index).wanted = this.wanted.has(workerId)
    const entry: LaneEntry = { index, workerId, thread }
    thread.lanes++
    this.lanes.set(workerId, entry)
    this.byIndex[index] = entry
    // The thread reads the lane from the slab it already has: nothing to post (but a new thread).
    if (this.opts.placement === 'per-worker') this.spawn(thread)
  }

  private async close1(workerId: string): Promise<void> {
    const entry = this.lanes.get(workerId)
    if (!entry) return
    this.lanes.delete(workerId)
    this.byIndex[entry.index] = undefined
    const queue = entry.thread.queue
    this.slab.release(entry.index, () => queue.rounds)
    entry.thread.lanes--
    if (this.opts.placement === 'per-worker') {
      this.perWorker.delete(entry.thread)
      await this.stopThread(entry.thread)
    }
  }

  /**
   * A worker's summary computed now from its lane's shared memory (what its thread has processed:
   * heartbeats of the last tick may still be waiting), or null (no lane, or nothing processed yet).
   */
  summary(workerId: string): LaneSummary | null {
    const entry = this.lanes.get(workerId)
    if (!entry) return null
    const lane = this.slab.lane(entry.index)
    if (lane.processed === 0 && lane.dropped === 0) return null
    return lane.summary(Date.now(), workerId)
  }

  /** History points of a worker ending after `since`; null when it has no lane. */
  history(workerId: string, since = 0): HistoryPoint[] | null {
    const entry = this.lanes.get(workerId)
    return entry ? this.slab.lane(entry.index).history(since) : null
  }

  hasLane(workerId: string): boolean {
    return this.lanes.has(workerId)
  }

  /**
   * Somebody starts (or stops) watching a worker's telemetry, or everyone's (`*`): its threads
   * send summaries of it. Kept by the WebSocket: on when the first watcher subscribes, off when the
   * last one goes.
   */
  want(workerId: string, on: boolean): void {
    if (workerId === '*') {
      this.wantAll = on
      for (const slot of this.slots()) slot.queue.wantAll = on
      return
    }
    if (on) this.wanted.add(workerId)
    else this.wanted.delete(workerId)
    const entry = this.lanes.get(workerId)
    if (entry) this.slab.lane(entry.index).wanted = on
  }

  /**
   * Per thread: its lanes, the lanes with work waiting in its queue, and how often the queue was
   * full (read from the queues' headers; no lane is read).
   */
  queueDepths(): { thread: number; lanes: number; depth: number; overflows: number }[] {
    return this.slots().map((slot) => ({ thread: slot.index, lanes: slot.lanes, depth: slot.queue.length, overflows: slot.queue.overflows }))
  }

  /** The thread hosting a worker's lane (tests kill it to check the restart). */
  threadOf(workerId: string): Worker | null {
    return this.lanes.get(workerId)?.thread.worker ?? null
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.registry.off('worker-active', this.onActive)
    this.registry.off('worker-unregistered', this.onUnregistered)
    const slots = this.slots()
    this.lanes.clear()
    this.byIndex.length = 0
    this.pinned.length = 0
    this.perWorker.clear()
    await Promise.all(slots.map((s) => this.stopThread(s)))
  }

  // --- threads ---------------------------------------------------------------------------------

  private slots(): ThreadSlot[] {
    return this.opts.placement === 'per-worker' ? [...this.perWorker] : [...this.pinned]
  }

  private newSlot(queueSlots: number): ThreadSlot {
    const queue = LaneQueue.create(queueSlots)
    queue.wantAll = this.wantAll
    return { index: this.nextIndex++, worker: null, queue, lanes: 0, crashes: 0, lastCrashAt: 0, restartTimer: null }
  }

  private spawn(slot: ThreadSlot): void {
    const data: TelemetryThreadData = {
      index: slot.index,
      queue: slot.queue.buffer,
      chunks: [...this.slab.chunks],
      layout: this.layout,
      counters: this.opts.counters.buffer,
      summaryMs: this.opts.summaryMs,
      tickMs: this.tickMs,
    }
    const worker = new Worker(THREAD_FILE, { workerData: data, name: `cloudai-telemetry-${slot.index}` })
    slot.worker = worker
    let lastError: Error | null = null
    worker.on('message', (msg: FromTelemetryThread) => {
      for (const { lane, gen, summary } of msg.items) {
        const entry = this.byIndex[lane]
        // Reopened for another worker since, or nobody watches it any more.
        if (!entry || this.slab.lane(lane).gen !== gen) continue
        if (!this.wantAll && !this.wanted.has(entry.workerId)) continue
        summary.workerId = entry.workerId
        this.emit('summary', summary)
      }
    })
    worker.on('error', (err) => {
      lastError = err
    })
    worker.on('exit', (code) => {
      if (slot.worker !== worker) return
      slot.worker = null
      if (this.state !== 'running' || (this.opts.placement === 'per-worker' && slot.lanes === 0)) return
      this.restart(slot, lastError?.message ?? `exited with code ${code}`)
    })
  }

  private restart(slot: ThreadSlot, reason: string): void {
    this.opts.counters.add(C.TELEMETRY_THREAD_RESTARTS)
    const now = Date.now()
    if (now - slot.lastCrashAt > CRASH_MEMORY_MS) slot.crashes = 0
    slot.lastCrashAt = now
    const delayMs = slot.crashes === 0 ? 0 : Math.min(5000, 100 * 2 ** Math.min(slot.crashes, 6))
    slot.crashes++
    this.opts.log.error(
      { thread: slot.index, lanes: slot.lanes, reason, restartInMs: delayMs },
      `Telemetry thread ${slot.index} died (${reason}); restarting it and rebuilding its ${slot.lanes} lane(s) from shared memory`,
    )
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null
      if (this.state === 'running' && slot.worker === null) this.spawn(slot)
    }, delayMs)
  }

  private post(slot: ThreadSlot, msg: ToTelemetryThread): void {
    slot.worker?.postMessage(msg)
  }

  private async stopThread(slot: ThreadSlot): Promise<void> {
    if (slot.restartTimer) clearTimeout(slot.restartTimer)
    slot.restartTimer = null
    const worker = slot.worker
    slot.worker = null
    if (worker) await worker.terminate()
  }
}
