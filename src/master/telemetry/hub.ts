import { EventEmitter } from 'node:events'
import { availableParallelism } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Worker } from 'node:worker_threads'
import type { Logger } from '../../shared/log.js'
import { C, type Counters } from '../counters.js'
import { Lane, type HistoryPoint, type LaneSummary } from './lane.js'
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
  /** Width of one history point; samples inside a step are averaged, peaks kept. */
  stepMs: number
  /** At most one summary per lane per this interval goes back to the main thread. */
  summaryMs: number
}

/** `auto`: one thread per core beyond the main thread's, at least 1, at most 8. */
export function autoTelemetryThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism() - 1))
}

interface ThreadSlot {
  index: number
  worker: Worker | null
  bellBuffer: SharedArrayBuffer
  bell: Int32Array
  lanes: Set<string>
  /** A ring is scheduled for the end of this event-loop turn. */
  ringPending: boolean
  /** Crashes in a row, for the restart backoff; reset once a summary arrives. */
  crashes: number
  restartTimer: NodeJS.Timeout | null
}

interface LaneEntry {
  lane: Lane
  thread: ThreadSlot
}

export interface TelemetryEvents {
  summary: [summary: LaneSummary]
}

// The doorbell: [rings, sleeping]. See thread.ts for why no wake-up is lost.
const BELL_RINGS = 0
const BELL_SLEEPING = 1

const THREAD_FILE = new URL('../../../workers/telemetry-thread.js', import.meta.url)

/**
 * The main thread's side of telemetry. A worker gets a lane when it first connects (RegisterWorker)
 * and keeps it until it is unregistered; each heartbeat is written into the lane's shared ring and
 * the lane's thread is woken, with no message per heartbeat. Threads post summaries back, at most
 * one per lane per `summaryMs`, for the API and the WebSocket.
 *
 * A thread that dies is restarted (with backoff if it keeps dying) and its lanes are reopened on the
 * new one; the lanes' state is in shared memory, so nothing but the time it was down is lost.
 */
export class TelemetryHub extends EventEmitter<TelemetryEvents> implements HeartbeatSink {
  private readonly lanes = new Map<string, LaneEntry>()
  private readonly summaries = new Map<string, LaneSummary>()
  private readonly pinned: ThreadSlot[] = []
  private readonly historyPoints: number
  private nextIndex = 0
  private readonly toRing: ThreadSlot[] = []
  private ringTimer: NodeJS.Immediate | null = null
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
    this.historyPoints = Math.ceil(opts.historyMs / opts.stepMs) + 1
  }

  get placement(): TelemetryPlacement {
    return this.opts.placement
  }

  get stepMs(): number {
    return this.opts.stepMs
  }

  /** Telemetry threads running now. */
  get threadCount(): number {
    return this.slots().filter((s) => s.worker !== null).length
  }

  get laneCount(): number {
    return this.lanes.size
  }

  start(): void {
    if (this.state !== 'new') return
    this.state = 'running'
    if (this.opts.placement !== 'per-worker') {
      for (let i = 0; i < this.opts.placement; i++) {
        const slot = this.newSlot()
        this.pinned.push(slot)
        this.spawn(slot)
      }
    }
    this.registry.on('worker-active', this.onActive)
    this.registry.on('worker-unregistered', this.onUnregistered)
    // A worker already connected before telemetry started (not in the master, but in tests).
    for (const w of this.registry.values()) if (w.isActive) this.open(w.id)
  }

  /** HeartbeatSink: called on the main thread for each accepted heartbeat. Allocation-free. */
  ingest(workerId: string, usage: WorkerUsage, running: RunningTaskInfo[]): void {
    const entry = this.lanes.get(workerId)
    if (!entry) return
    // Arrival in epoch ms with sub-ms precision: the thread measures its delay against it.
    entry.lane.write(performance.timeOrigin + performance.now(), usage.cpu, usage.memory, usage.storage, usage.gpu, running.length)
    // One ring per thread per event-loop turn, not per heartbeat: a wake-up is a futex syscall, and
    // gRPC hands us heartbeats in bursts. The delay this adds is the rest of the current turn.
    const slot = entry.thread
    if (slot.ringPending) return
    slot.ringPending = true
    this.toRing.push(slot)
    if (this.ringTimer === null) this.ringTimer = setImmediate(this.ringAll)
  }

  private readonly ringAll = (): void => {
    this.ringTimer = null
    for (const slot of this.toRing) {
      slot.ringPending = false
      Atomics.add(slot.bell, BELL_RINGS, 1)
      // notify takes a lock: skip it while the thread is awake, it will see the ring anyway.
      if (Atomics.load(slot.bell, BELL_SLEEPING) === 1) Atomics.notify(slot.bell, BELL_RINGS, 1)
    }
    this.toRing.length = 0
  }

  /** Opens the worker's lane (idempotent). */
  open(workerId: string): void {
    if (this.state !== 'running' || this.lanes.has(workerId)) return
    const lane = Lane.create(workerId, { historyPoints: this.historyPoints, stepMs: this.opts.stepMs })
    let thread: ThreadSlot
    if (this.opts.placement === 'per-worker') {
      thread = this.newSlot()
      this.spawn(thread)
    } else {
      // Fewest lanes first: workers are spread evenly and stay on their thread.
      thread = this.pinned.reduce((a, b) => (b.lanes.size < a.lanes.size ? b : a))
    }
    thread.lanes.add(workerId)
    this.lanes.set(workerId, { lane, thread })
    this.post(thread, { type: 'open', lane: lane.init })
  }

  private async close1(workerId: string): Promise<void> {
    const entry = this.lanes.get(workerId)
    if (!entry) return
    this.lanes.delete(workerId)
    this.summaries.delete(workerId)
    entry.thread.lanes.delete(workerId)
    if (this.opts.placement === 'per-worker') {
      await this.stopThread(entry.thread)
    } else {
      this.post(entry.thread, { type: 'close', workerId })
    }
  }

  /** The latest summary of a worker's lane, or null (no lane, or nothing processed yet). */
  summary(workerId: string): LaneSummary | null {
    return this.summaries.get(workerId) ?? null
  }

  /** History points of a worker at or after `since`; null when it has no lane. */
  history(workerId: string, since = 0): HistoryPoint[] | null {
    return this.lanes.get(workerId)?.lane.history(since) ?? null
  }

  hasLane(workerId: string): boolean {
    return this.lanes.has(workerId)
  }

  /** Heartbeats waiting per thread, read from the lanes' shared memory. */
  queueDepths(): { thread: number; lanes: number; depth: number }[] {
    return this.slots().map((slot) => {
      let depth = 0
      for (const id of slot.lanes) depth += this.lanes.get(id)?.lane.depth ?? 0
      return { thread: slot.index, lanes: slot.lanes.size, depth }
    })
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
    if (this.ringTimer) clearImmediate(this.ringTimer)
    this.ringTimer = null
    this.toRing.length = 0
    const slots = this.slots()
    this.lanes.clear()
    this.summaries.clear()
    this.pinned.length = 0
    await Promise.all(slots.map((s) => this.stopThread(s)))
  }

  // --- threads ---------------------------------------------------------------------------------

  private slots(): ThreadSlot[] {
    if (this.opts.placement !== 'per-worker') return [...this.pinned]
    const seen = new Set<ThreadSlot>()
    for (const e of this.lanes.values()) seen.add(e.thread)
    return [...seen]
  }

  private newSlot(): ThreadSlot {
    const bellBuffer = new SharedArrayBuffer(8)
    return { index: this.nextIndex++, worker: null, bellBuffer, bell: new Int32Array(bellBuffer), lanes: new Set(), ringPending: false, crashes: 0, restartTimer: null }
  }

  private spawn(slot: ThreadSlot): void {
    const data: TelemetryThreadData = { index: slot.index, bell: slot.bellBuffer, counters: this.opts.counters.buffer, summaryMs: this.opts.summaryMs }
    const worker = new Worker(THREAD_FILE, { workerData: data, name: `cloudai-telemetry-${slot.index}` })
    slot.worker = worker
    let lastError: Error | null = null
    worker.on('message', (msg: FromTelemetryThread) => {
      slot.crashes = 0
      for (const item of msg.items) {
        if (!this.lanes.has(item.workerId)) continue
        this.summaries.set(item.workerId, item)
        this.emit('summary', item)
      }
    })
    worker.on('error', (err) => {
      lastError = err
    })
    worker.on('exit', (code) => {
      if (slot.worker !== worker) return
      slot.worker = null
      if (this.state !== 'running' || (this.opts.placement === 'per-worker' && slot.lanes.size === 0)) return
      this.restart(slot, lastError?.message ?? `exited with code ${code}`)
    })
    // Replay: a new thread (first start or restart) gets every lane pinned to it.
    for (const id of slot.lanes) {
      const entry = this.lanes.get(id)
      if (entry) this.post(slot, { type: 'open', lane: entry.lane.init })
    }
  }

  private restart(slot: ThreadSlot, reason: string): void {
    this.opts.counters.add(C.TELEMETRY_THREAD_RESTARTS)
    const delayMs = slot.crashes === 0 ? 0 : Math.min(5000, 100 * 2 ** Math.min(slot.crashes, 6))
    slot.crashes++
    this.opts.log.error(
      { thread: slot.index, lanes: slot.lanes.size, reason, restartInMs: delayMs },
      `Telemetry thread ${slot.index} died (${reason}); restarting it and rebuilding its ${slot.lanes.size} lane(s) from shared memory`,
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
