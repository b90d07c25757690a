// A telemetry lane in shared memory: one SharedArrayBuffer per worker, holding the heartbeats
// waiting to be processed (a bounded ring the main thread writes and the telemetry thread reads)
// and the worker's history (written by the telemetry thread). Because the whole state lives here
// and not in a thread's heap, a telemetry thread that dies loses nothing: its replacement attaches
// to the same buffers and carries on where the old one stopped.
//
// The ring never grows: when the worker sends faster than its thread keeps up, the writer laps the
// reader and the reader skips to the oldest sample still intact, counting what it skipped as drops.

/** Slots of a lane's ring (a power of two). */
export const RING_SLOTS = 64
const RING_MASK = RING_SLOTS - 1
/**
 * Heartbeats a lane holds before the oldest are dropped: one slot less than the ring, because the
 * slot after the newest is the one the writer may be overwriting at any moment.
 */
export const RING_CAPACITY = RING_SLOTS - 1

// Int32 control words.
const CTRL_WRITE = 0 // samples written (main thread), wrapping
const CTRL_READ = 1 // samples consumed (telemetry thread), wrapping
const CTRL_DROPS = 2 // samples dropped because the ring was lapped
const CTRL_PROCESSED = 3 // samples processed
const CTRL_POINTS = 4 // history points opened so far
const CTRL_WORDS = 16

// One ring slot: arrival time (epoch ms, sub-ms precision), usage in percent, running task count.
const SLOT_AT = 0
const SLOT_CPU = 1
const SLOT_MEMORY = 2
const SLOT_STORAGE = 3
const SLOT_GPU = 4
const SLOT_RUNNING = 5
const SLOT_FIELDS = 8

// One history point: the samples whose arrival falls in [at, at + step).
const P_SAMPLES = 0
const P_CPU = 1 // averages: cpu, memory, storage, gpu
const P_CPU_MAX = 5 // peaks: cpu, memory, storage, gpu
const P_RUNNING = 9 // average running task count
export const POINT_FIELDS = 10

export interface Sample {
  at: number
  cpu: number
  memory: number
  storage: number
  gpu: number
  running: number
}

export interface HistoryPoint {
  /** Start of the point's step (epoch ms). */
  at: number
  samples: number
  cpu: number
  memory: number
  storage: number
  gpu: number
  cpuPeak: number
  memoryPeak: number
  storagePeak: number
  gpuPeak: number
  running: number
}

/** The numbers of one lane's memory; everything a thread needs to attach to it. */
export interface LaneInit {
  workerId: string
  buffer: SharedArrayBuffer
  historyPoints: number
  stepMs: number
}

export function laneBytes(historyPoints: number): number {
  return CTRL_WORDS * 4 + RING_SLOTS * SLOT_FIELDS * 8 + SLOT_FIELDS * 8 + historyPoints * 8 + historyPoints * POINT_FIELDS * 4
}

/** Windows of the rolling averages and peaks. */
export const WINDOWS = { '1m': 60_000, '5m': 300_000, '15m': 900_000, '1h': 3_600_000 } as const
export type WindowName = keyof typeof WINDOWS
const WINDOW_NAMES = Object.keys(WINDOWS) as WindowName[]

export interface UsageStats {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

export interface WindowStats {
  samples: number
  average: UsageStats & { running: number }
  peak: UsageStats
}

/** What the telemetry thread sends back for one lane (throttled). */
export interface LaneSummary {
  workerId: string
  /** When it was computed (epoch ms). */
  at: number
  latest: Sample | null
  windows: Record<WindowName, WindowStats | null>
  processed: number
  dropped: number
}

/** Views over one lane's buffer; built on both sides of the thread seam. */
export class Lane {
  readonly workerId: string
  readonly buffer: SharedArrayBuffer
  readonly historyPoints: number
  readonly stepMs: number
  private readonly ctrl: Int32Array
  private readonly ring: Float64Array
  private readonly latest: Float64Array
  private readonly pointAt: Float64Array
  private readonly points: Float32Array

  constructor(init: LaneInit) {
    this.workerId = init.workerId
    this.buffer = init.buffer
    this.historyPoints = init.historyPoints
    this.stepMs = init.stepMs
    let offset = 0
    this.ctrl = new Int32Array(init.buffer, offset, CTRL_WORDS)
    offset += CTRL_WORDS * 4
    this.ring = new Float64Array(init.buffer, offset, RING_SLOTS * SLOT_FIELDS)
    offset += RING_SLOTS * SLOT_FIELDS * 8
    this.latest = new Float64Array(init.buffer, offset, SLOT_FIELDS)
    offset += SLOT_FIELDS * 8
    this.pointAt = new Float64Array(init.buffer, offset, init.historyPoints)
    offset += init.historyPoints * 8
    this.points = new Float32Array(init.buffer, offset, init.historyPoints * POINT_FIELDS)
  }

  static create(workerId: string, opts: { historyPoints: number; stepMs: number }): Lane {
    return new Lane({ workerId, buffer: new SharedArrayBuffer(laneBytes(opts.historyPoints)), ...opts })
  }

  get init(): LaneInit {
    return { workerId: this.workerId, buffer: this.buffer, historyPoints: this.historyPoints, stepMs: this.stepMs }
  }

  // --- the main thread's side: one writer ------------------------------------------------------

  /** Appends a heartbeat. Never blocks and never allocates; a full ring is lapped (see drain). */
  write(at: number, cpu: number, memory: number, storage: number, gpu: number, running: number): void {
    const w = Atomics.load(this.ctrl, CTRL_WRITE)
    const base = (w & RING_MASK) * SLOT_FIELDS
    const ring = this.ring
    ring[base + SLOT_AT] = at
    ring[base + SLOT_CPU] = cpu
    ring[base + SLOT_MEMORY] = memory
    ring[base + SLOT_STORAGE] = storage
    ring[base + SLOT_GPU] = gpu
    ring[base + SLOT_RUNNING] = running
    // The store publishes the slot: the reader only reads slots below the write count.
    Atomics.store(this.ctrl, CTRL_WRITE, (w + 1) | 0)
  }

  /** Heartbeats written but not processed yet (at most the ring's size). */
  get depth(): number {
    const pending = (Atomics.load(this.ctrl, CTRL_WRITE) - Atomics.load(this.ctrl, CTRL_READ)) | 0
    return pending > RING_CAPACITY ? RING_CAPACITY : pending
  }

  get dropped(): number {
    return Atomics.load(this.ctrl, CTRL_DROPS) >>> 0
  }

  get processed(): number {
    return Atomics.load(this.ctrl, CTRL_PROCESSED) >>> 0
  }

  // --- the telemetry thread's side: one reader ------------------------------------------------

  /**
   * Hands every pending sample, oldest first, to `visit` (the same object each time, overwritten:
   * copy what you keep). Returns the number of samples dropped in this call.
   */
  drain(visit: (s: Sample) => void, scratch: Sample): number {
    let r = Atomics.load(this.ctrl, CTRL_READ)
    let dropped = 0
    for (;;) {
      const w = Atomics.load(this.ctrl, CTRL_WRITE)
      let pending = (w - r) | 0
      if (pending <= 0) break
      if (pending > RING_CAPACITY) {
        // Lapped: only the newest RING_CAPACITY writes are still intact.
        dropped += pending - RING_CAPACITY
        r = (w - RING_CAPACITY) | 0
      }
      const base = (r & RING_MASK) * SLOT_FIELDS
      const ring = this.ring
      scratch.at = ring[base + SLOT_AT]!
      scratch.cpu = ring[base + SLOT_CPU]!
      scratch.memory = ring[base + SLOT_MEMORY]!
      scratch.storage = ring[base + SLOT_STORAGE]!
      scratch.gpu = ring[base + SLOT_GPU]!
      scratch.running = ring[base + SLOT_RUNNING]!
      // The writer may have started overwriting this slot while we copied it: it has once the
      // write count reaches r + RING_SLOTS. Then the copy may be torn: count it as dropped.
      const after = Atomics.load(this.ctrl, CTRL_WRITE)
      if (((after - r) | 0) >= RING_SLOTS) {
        dropped++
        r = (r + 1) | 0
        continue
      }
      r = (r + 1) | 0
      Atomics.store(this.ctrl, CTRL_READ, r)
      visit(scratch)
      Atomics.add(this.ctrl, CTRL_PROCESSED, 1)
    }
    Atomics.store(this.ctrl, CTRL_READ, r)
    if (dropped > 0) Atomics.add(this.ctrl, CTRL_DROPS, dropped)
    return dropped
  }

  /** Folds a sample into the latest values and the history (the current point, or a new one each step). */
  record(s: Sample): void {
    const l = this.latest
    l[SLOT_AT] = s.at
    l[SLOT_CPU] = s.cpu
    l[SLOT_MEMORY] = s.memory
    l[SLOT_STORAGE] = s.storage
    l[SLOT_GPU] = s.gpu
    l[SLOT_RUNNING] = s.running
    const opened = Atomics.load(this.ctrl, CTRL_POINTS)
    const cap = this.historyPoints
    let idx = opened > 0 ? (opened - 1) % cap : -1
    if (idx < 0 || s.at >= this.pointAt[idx]! + this.stepMs) {
      idx = opened % cap
      this.pointAt[idx] = s.at - (s.at % this.stepMs)
      this.points.fill(0, idx * POINT_FIELDS, (idx + 1) * POINT_FIELDS)
      Atomics.store(this.ctrl, CTRL_POINTS, opened + 1)
    }
    const p = this.points
    const b = idx * POINT_FIELDS
    const n = p[b + P_SAMPLES]! + 1
    p[b + P_SAMPLES] = n
    // Running means: no sums to overflow float32 precision over a long step.
    p[b + P_CPU] = p[b + P_CPU]! + (s.cpu - p[b + P_CPU]!) / n
    p[b + P_CPU + 1] = p[b + P_CPU + 1]! + (s.memory - p[b + P_CPU + 1]!) / n
    p[b + P_CPU + 2] = p[b + P_CPU + 2]! + (s.storage - p[b + P_CPU + 2]!) / n
    p[b + P_CPU + 3] = p[b + P_CPU + 3]! + (s.gpu - p[b + P_CPU + 3]!) / n
    if (s.cpu > p[b + P_CPU_MAX]!) p[b + P_CPU_MAX] = s.cpu
    if (s.memory > p[b + P_CPU_MAX + 1]!) p[b + P_CPU_MAX + 1] = s.memory
    if (s.storage > p[b + P_CPU_MAX + 2]!) p[b + P_CPU_MAX + 2] = s.storage
    if (s.gpu > p[b + P_CPU_MAX + 3]!) p[b + P_CPU_MAX + 3] = s.gpu
    p[b + P_RUNNING] = p[b + P_RUNNING]! + (s.running - p[b + P_RUNNING]!) / n
  }

  /**
   * History points starting at or after `since`, oldest first. Safe from any thread: a point being
   * updated while it is read may mix one sample more or less, never another point's values.
   */
  history(since = 0): HistoryPoint[] {
    const opened = Atomics.load(this.ctrl, CTRL_POINTS)
    const cap = this.historyPoints
    const first = Math.max(0, opened - cap)
    const out: HistoryPoint[] = []
    for (let k = first; k < opened; k++) {
      const idx = k % cap
      const at = this.pointAt[idx]!
      // The step holding `since` counts: its samples may be newer than `since`.
      if (at + this.stepMs <= since) continue
      const b = idx * POINT_FIELDS
      const p = this.points
      out.push({
        at,
        samples: p[b + P_SAMPLES]!,
        cpu: round2(p[b + P_CPU]!),
        memory: round2(p[b + P_CPU + 1]!),
        storage: round2(p[b + P_CPU + 2]!),
        gpu: round2(p[b + P_CPU + 3]!),
        cpuPeak: round2(p[b + P_CPU_MAX]!),
        memoryPeak: round2(p[b + P_CPU_MAX + 1]!),
        storagePeak: round2(p[b + P_CPU_MAX + 2]!),
        gpuPeak: round2(p[b + P_CPU_MAX + 3]!),
        running: round2(p[b + P_RUNNING]!),
      })
    }
    return out
  }

  /** The most recent sample processed, or null before the first. */
  latestSample(): Sample | null {
    const l = this.latest
    if (l[SLOT_AT] === 0) return null
    return { at: l[SLOT_AT]!, cpu: l[SLOT_CPU]!, memory: l[SLOT_MEMORY]!, storage: l[SLOT_STORAGE]!, gpu: l[SLOT_GPU]!, running: l[SLOT_RUNNING]! }
  }

  /**
   * Rolling averages (weighted by samples) and peaks over each window ending at `now`, from the
   * history points; a point counts when its step overlaps the window.
   */
  summary(now: number): LaneSummary {
    const opened = Atomics.load(this.ctrl, CTRL_POINTS)
    const cap = this.historyPoints
    const acc = WINDOW_NAMES.map(() => ({ n: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0, cpuPeak: 0, memoryPeak: 0, storagePeak: 0, gpuPeak: 0 }))
    const p = this.points
    for (let k = opened - 1; k >= Math.max(0, opened - cap); k--) {
      const idx = k % cap
      const end = this.pointAt[idx]! + this.stepMs
      if (end <= now - WINDOWS['1h']) break
      const b = idx * POINT_FIELDS
      const n = p[b + P_SAMPLES]!
      for (let wi = 0; wi < WINDOW_NAMES.length; wi++) {
        if (end <= now - WINDOWS[WINDOW_NAMES[wi]!]) continue
        const a = acc[wi]!
        a.n += n
        a.cpu += p[b + P_CPU]! * n
        a.memory += p[b + P_CPU + 1]! * n
        a.storage += p[b + P_CPU + 2]! * n
        a.gpu += p[b + P_CPU + 3]! * n
        a.running += p[b + P_RUNNING]! * n
        a.cpuPeak = Math.max(a.cpuPeak, p[b + P_CPU_MAX]!)
        a.memoryPeak = Math.max(a.memoryPeak, p[b + P_CPU_MAX + 1]!)
        a.storagePeak = Math.max(a.storagePeak, p[b + P_CPU_MAX + 2]!)
        a.gpuPeak = Math.max(a.gpuPeak, p[b + P_CPU_MAX + 3]!)
      }
    }
    const windows = {} as Record<WindowName, WindowStats | null>
    WINDOW_NAMES.forEach((name, wi) => {
      const a = acc[wi]!
      windows[name] = a.n === 0
        ? null
        : {
            samples: a.n,
            average: { cpu: round2(a.cpu / a.n), memory: round2(a.memory / a.n), storage: round2(a.storage / a.n), gpu: round2(a.gpu / a.n), running: round2(a.running / a.n) },
            peak: { cpu: round2(a.cpuPeak), memory: round2(a.memoryPeak), storage: round2(a.storagePeak), gpu: round2(a.gpuPeak) },
          }
    })
    return { workerId: this.workerId, at: now, latest: this.latestSample(), windows, processed: this.processed, dropped: this.dropped }
  }
}

// float32 holds about 7 digits; two decimals of a percentage is all that is meaningful.
function round2(x: number): number {
  return Math.round(x * 100) / 100
}
