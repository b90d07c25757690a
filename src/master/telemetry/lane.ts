// A telemetry lane in shared memory: a fixed-size block of a slab (slab.ts) holding one worker's
// heartbeats waiting to be processed (a bounded ring the main thread writes and the telemetry
// thread reads) and the worker's history (written by the telemetry thread). Because the whole state
// lives here and not in a thread's heap, a telemetry thread that dies loses nothing: its
// replacement attaches to the same memory and carries on where the old one stopped.
//
// The ring never grows: when the worker sends faster than its thread keeps up, the writer laps the
// reader and the reader skips to the oldest sample still intact, counting what it skipped as drops.
//
// The history has two tiers, so that a lane is a few KiB: `fine` points of the step
// (--telemetry-step) for the recent past (FINE_MS, 10 minutes), and `coarse` points of about a
// minute for the whole history (--telemetry-history). Every sample goes into both; a reader takes
// the fine points from a minute boundary on and the coarse points before it, so each sample is
// counted once.

/** Slots of a lane's ring (a power of two). The thread drains it every tick (see thread.ts). */
export const RING_SLOTS = 32
const RING_MASK = RING_SLOTS - 1
/**
 * Heartbeats a lane holds before the oldest are dropped: one slot less than the ring, because the
 * slot after the newest is the one the writer may be overwriting at any moment.
 */
export const RING_CAPACITY = RING_SLOTS - 1

/** The recent past kept at full resolution. */
export const FINE_MS = 600_000
/** Width of a coarse point, rounded to a whole number of steps so that the tiers align. */
export const COARSE_TARGET_MS = 60_000

// Int32 control words.
const CTRL_WRITE = 0 // samples written (main thread), wrapping
const CTRL_READ = 1 // samples consumed (telemetry thread), wrapping
const CTRL_DROPS = 2 // samples dropped because the ring was lapped
const CTRL_PROCESSED = 3 // samples processed
const CTRL_FINE = 4 // fine history points opened so far
const CTRL_COARSE = 5 // coarse history points opened so far
/** 1 while the lane is in its thread's queue of lanes with work, or waiting for a sweep (queue.ts). */
const CTRL_QUEUED = 6
/** The telemetry thread's index + 1 while the lane is open; 0 when it is free. */
const CTRL_OWNER = 7
/** Bumped each time the lane is opened, so that a summary of a lane's previous worker is dropped. */
const CTRL_GEN = 8
/** 1 when somebody subscribes to this worker's telemetry: its thread sends summaries of it. */
const CTRL_WANTED = 9

/** Float64 word of the control block: the step-aligned time the lane's first point starts at. */
const CTRL_BASE_F64 = 6 // bytes 48..56
const CTRL_WORDS = 16

// One ring slot, 32 bytes: arrival time (a float64: epoch ms, sub-ms precision), then usage in
// percent and the running task count as float32 (what the history keeps anyway).
const SLOT_BYTES = 32
const SLOT_AT = 0 // in float64 words
const SLOT_CPU = 2 // in float32 words
const SLOT_MEMORY = 3
const SLOT_STORAGE = 4
const SLOT_GPU = 5
const SLOT_RUNNING = 6
// The latest sample processed: float64 [at, cpu, memory, storage, gpu, running].
const LATEST_FIELDS = 6

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
  /** Width of the point: the step for the recent past, about a minute further back. */
  stepMs: number
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

/** The shape of every lane of a slab: the tiers' steps and sizes. */
export interface LaneLayout {
  stepMs: number
  finePoints: number
  coarseStepMs: number
  /** 0 when the history is no longer than the fine tier. */
  coarsePoints: number
}

export function laneLayout(historyMs: number, stepMs: number): LaneLayout {
  const fineMs = Math.min(FINE_MS, historyMs)
  const coarseStepMs = stepMs * Math.max(1, Math.round(COARSE_TARGET_MS / stepMs))
  return {
    stepMs,
    // One point more than the span: the oldest point is partly outside it.
    finePoints: Math.ceil(fineMs / stepMs) + 1,
    coarseStepMs,
    coarsePoints: historyMs > fineMs ? Math.ceil(historyMs / coarseStepMs) + 1 : 0,
  }
}

/** Bytes of one lane, a multiple of 8 so that lanes pack in a slab. */
export function laneBytes(layout: LaneLayout): number {
  const points = layout.finePoints + layout.coarsePoints
  const bytes = CTRL_WORDS * 4 + RING_SLOTS * SLOT_BYTES + LATEST_FIELDS * 8 + points * 4 + points * POINT_FIELDS * 4
  return Math.ceil(bytes / 8) * 8
}

/** Where a lane lives; everything a thread needs to attach to it. */
export interface LaneInit {
  buffer: SharedArrayBuffer
  byteOffset: number
  layout: LaneLayout
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

/** A lane's latest sample, windows and counts, computed from its shared memory. */
export interface LaneSummary {
  workerId: string
  /** When it was computed (epoch ms). */
  at: number
  latest: Sample | null
  windows: Record<WindowName, WindowStats | null>
  processed: number
  dropped: number
}

/**
 * One tier of history points: a ring of `cap` points of `stepMs`. A point's start is kept as a
 * whole number of the lane's steps from the lane's base time (int32: years at the smallest step).
 */
class Tier {
  constructor(
    readonly ctrlWord: number,
    readonly stepMs: number,
    readonly cap: number,
    readonly pointStep: Int32Array,
    readonly points: Float32Array,
  ) {}
}

interface WindowAcc {
  n: number
  cpu: number
  memory: number
  storage: number
  gpu: number
  running: number
  cpuPeak: number
  memoryPeak: number
  storagePeak: number
  gpuPeak: number
}

/** Views over one lane's memory; built on both sides of the thread seam. */
export class Lane {
  readonly buffer: SharedArrayBuffer
  readonly byteOffset: number
  readonly layout: LaneLayout
  private readonly bytes: Uint8Array
  private readonly ctrl: Int32Array
  private readonly base: Float64Array
  private readonly ring: Float64Array
  private readonly ring32: Float32Array
  private readonly latest: Float64Array
  private readonly fine: Tier
  private readonly coarse: Tier | null

  constructor(init: LaneInit) {
    const { buffer, byteOffset, layout } = init
    this.buffer = buffer
    this.byteOffset = byteOffset
    this.layout = layout
    const size = laneBytes(layout)
    this.bytes = new Uint8Array(buffer, byteOffset, size)
    let offset = byteOffset
    this.ctrl = new Int32Array(buffer, offset, CTRL_WORDS)
    this.base = new Float64Array(buffer, offset + CTRL_BASE_F64 * 8, 1)
    offset += CTRL_WORDS * 4
    this.ring = new Float64Array(buffer, offset, (RING_SLOTS * SLOT_BYTES) / 8)
    this.ring32 = new Float32Array(buffer, offset, (RING_SLOTS * SLOT_BYTES) / 4)
    offset += RING_SLOTS * SLOT_BYTES
    this.latest = new Float64Array(buffer, offset, LATEST_FIELDS)
    offset += LATEST_FIELDS * 8
    const tier = (ctrlWord: number, stepMs: number, cap: number): Tier => {
      const pointStep = new Int32Array(buffer, offset, cap)
      offset += cap * 4
      const points = new Float32Array(buffer, offset, cap * POINT_FIELDS)
      offset += cap * POINT_FIELDS * 4
      return new Tier(ctrlWord, stepMs, cap, pointStep, points)
    }
    this.fine = tier(CTRL_FINE, layout.stepMs, layout.finePoints)
    this.coarse = layout.coarsePoints > 0 ? tier(CTRL_COARSE, layout.coarseStepMs, layout.coarsePoints) : null
  }

  /** A lane in a buffer of its own (tests, tools); the master's lanes come from a slab. */
  static create(layout: LaneLayout): Lane {
    return new Lane({ buffer: new SharedArrayBuffer(laneBytes(layout)), byteOffset: 0, layout })
  }

  get init(): LaneInit {
    return { buffer: this.buffer, byteOffset: this.byteOffset, layout: this.layout }
  }

  // --- ownership (main thread) ------------------------------------------------------------------

  /** Clears the lane for a new worker on thread `owner`; bumps its generation, which it returns. */
  open(owner: number): number {
    const old = Atomics.load(this.ctrl, CTRL_GEN)
    const gen = (old + 1) | 0
    // A lane never opened is still the zeroes a SharedArrayBuffer starts with: clearing it would
    // only fault its pages in on the main thread (about 13 µs), before anything is written there.
    if (old !== 0) this.bytes.fill(0)
    Atomics.store(this.ctrl, CTRL_GEN, gen)
    Atomics.store(this.ctrl, CTRL_OWNER, owner + 1)
    return gen
  }

  /** Marks the lane free: its thread skips it from now on. */
  free(): void {
    Atomics.store(this.ctrl, CTRL_OWNER, 0)
    Atomics.store(this.ctrl, CTRL_WANTED, 0)
    Atomics.store(this.ctrl, CTRL_GEN, (Atomics.load(this.ctrl, CTRL_GEN) + 1) | 0)
  }

  /** The thread index hosting the lane, or -1 when it is free. */
  get owner(): number {
    return Atomics.load(this.ctrl, CTRL_OWNER) - 1
  }

  get gen(): number {
    return Atomics.load(this.ctrl, CTRL_GEN)
  }

  get wanted(): boolean {
    return Atomics.load(this.ctrl, CTRL_WANTED) === 1
  }

  set wanted(on: boolean) {
    Atomics.store(this.ctrl, CTRL_WANTED, on ? 1 : 0)
  }

  // --- the queue flag (queue.ts) ----------------------------------------------------------------

  /** Sets the flag; true when it was clear, i.e. the caller must queue the lane. */
  markQueued(): boolean {
    return Atomics.exchange(this.ctrl, CTRL_QUEUED, 1) === 0
  }

  /** Cleared by the thread before it drains, so that a write after the drain's read queues it again. */
  clearQueued(): void {
    Atomics.store(this.ctrl, CTRL_QUEUED, 0)
  }

  get queued(): boolean {
    return Atomics.load(this.ctrl, CTRL_QUEUED) === 1
  }

  // --- the main thread's side: one writer ------------------------------------------------------

  /**
   * Appends a heartbeat and returns the lane's backlog with it. Never blocks and never allocates;
   * a full ring is lapped (see drain).
   */
  write(at: number, cpu: number, memory: number, storage: number, gpu: number, running: number): number {
    const w = Atomics.load(this.ctrl, CTRL_WRITE)
    const slot = w & RING_MASK
    this.ring[slot * (SLOT_BYTES / 8) + SLOT_AT] = at
    const f = this.ring32
    const b = slot * (SLOT_BYTES / 4)
    f[b + SLOT_CPU] = cpu
    f[b + SLOT_MEMORY] = memory
    f[b + SLOT_STORAGE] = storage
    f[b + SLOT_GPU] = gpu
    f[b + SLOT_RUNNING] = running
    // The store publishes the slot: the reader only reads slots below the write count.
    Atomics.store(this.ctrl, CTRL_WRITE, (w + 1) | 0)
    return (w + 1 - Atomics.load(this.ctrl, CTRL_READ)) | 0
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
      const pending = (w - r) | 0
      if (pending <= 0) break
      if (pending > RING_CAPACITY) {
        // Lapped: only the newest RING_CAPACITY writes are still intact.
        dropped += pending - RING_CAPACITY
        r = (w - RING_CAPACITY) | 0
      }
      const slot = r & RING_MASK
      scratch.at = this.ring[slot * (SLOT_BYTES / 8) + SLOT_AT]!
      const f = this.ring32
      const b = slot * (SLOT_BYTES / 4)
      scratch.cpu = f[b + SLOT_CPU]!
      scratch.memory = f[b + SLOT_MEMORY]!
      scratch.storage = f[b + SLOT_STORAGE]!
      scratch.gpu = f[b + SLOT_GPU]!
      scratch.running = f[b + SLOT_RUNNING]!
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

  /** Folds a sample into the latest values and both tiers of history. */
  record(s: Sample): void {
    const l = this.latest
    l[0] = s.at
    l[1] = s.cpu
    l[2] = s.memory
    l[3] = s.storage
    l[4] = s.gpu
    l[5] = s.running
    // The first point of the lane sets its base; it is written before the point count that
    // publishes it, so a reader that sees a point sees the base.
    if (Atomics.load(this.ctrl, CTRL_FINE) === 0) this.base[0] = s.at - (s.at % this.layout.stepMs)
    this.fold(this.fine, s)
    if (this.coarse) this.fold(this.coarse, s)
  }

  /** Into the tier's current point, or a new one each step. */
  private fold(t: Tier, s: Sample): void {
    const opened = Atomics.load(this.ctrl, t.ctrlWord)
    let idx = opened > 0 ? (opened - 1) % t.cap : -1
    if (idx < 0 || s.at >= this.pointAt(t, idx) + t.stepMs) {
      idx = opened % t.cap
      t.pointStep[idx] = Math.round((s.at - (s.at % t.stepMs) - this.base[0]!) / this.layout.stepMs)
      t.points.fill(0, idx * POINT_FIELDS, (idx + 1) * POINT_FIELDS)
      Atomics.store(this.ctrl, t.ctrlWord, opened + 1)
    }
    const p = t.points
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

  // --- readers (any thread) ---------------------------------------------------------------------

  private pointAt(t: Tier, idx: number): number {
    return this.base[0]! + t.pointStep[idx]! * this.layout.stepMs
  }

  /**
   * Where the tiers meet: fine points from here on, coarse points ending at or before it. -Infinity
   * while the fine tier still holds every point it ever opened (no coarse point is needed); else
   * the first coarse boundary at or after the oldest fine point kept, so that no sample is counted
   * in both tiers, and none is lost between them.
   */
  private boundary(): number {
    const opened = Atomics.load(this.ctrl, CTRL_FINE)
    const f = this.fine
    if (this.coarse === null || opened <= f.cap) return -Infinity
    const oldest = this.pointAt(f, (opened - f.cap) % f.cap)
    const c = this.coarse.stepMs
    return Math.ceil(oldest / c) * c
  }

  /** Visits the points of both tiers ending after `since`, oldest first. */
  private eachPoint(since: number, visit: (t: Tier, idx: number, at: number) => void): void {
    const b = this.boundary()
    if (this.coarse && b !== -Infinity) {
      const t = this.coarse
      const opened = Atomics.load(this.ctrl, t.ctrlWord)
      for (let k = Math.max(0, opened - t.cap); k < opened; k++) {
        const idx = k % t.cap
        const at = this.pointAt(t, idx)
        if (at + t.stepMs > b) break
        if (at + t.stepMs <= since) continue
        visit(t, idx, at)
      }
    }
    const t = this.fine
    const opened = Atomics.load(this.ctrl, t.ctrlWord)
    for (let k = Math.max(0, opened - t.cap); k < opened; k++) {
      const idx = k % t.cap
      const at = this.pointAt(t, idx)
      // The step holding `since` counts: its samples may be newer than `since`.
      if (at < b || at + t.stepMs <= since) continue
      visit(t, idx, at)
    }
  }

  /**
   * History points ending after `since`, oldest first: coarse points further back, then the fine
   * ones. Safe from any thread: a point being updated while it is read may mix one sample more or
   * less, never another point's values.
   */
  history(since = 0): HistoryPoint[] {
    const out: HistoryPoint[] = []
    this.eachPoint(since, (t, idx, at) => {
      const b = idx * POINT_FIELDS
      const p = t.points
      out.push({
        at,
        stepMs: t.stepMs,
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
    })
    return out
  }

  /** The most recent sample processed, or null before the first. */
  latestSample(): Sample | null {
    const l = this.latest
    if (l[0] === 0) return null
    return { at: l[0]!, cpu: round2(l[1]!), memory: round2(l[2]!), storage: round2(l[3]!), gpu: round2(l[4]!), running: l[5]! }
  }

  /**
   * Rolling averages (weighted by samples) and peaks over each window ending at `now`, from the
   * history points; a point counts when its span overlaps the window (so the 15m and 1h windows,
   * partly made of minute points, reach back up to a minute further).
   */
  summary(now: number, workerId = ''): LaneSummary {
    // The counts first: the thread folds a sample in before it counts it, so a summary read while
    // it works never says more processed than its windows hold.
    const processed = this.processed
    const dropped = this.dropped
    const acc: WindowAcc[] = WINDOW_NAMES.map(() => ({ n: 0, cpu: 0, memory: 0, storage: 0, gpu: 0, running: 0, cpuPeak: 0, memoryPeak: 0, storagePeak: 0, gpuPeak: 0 }))
    this.eachPoint(now - WINDOWS['1h'], (t, idx, at) => {
      const end = at + t.stepMs
      const p = t.points
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
    })
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
    return { workerId, at: now, latest: this.latestSample(), windows, processed, dropped }
  }
}

// float32 holds about 7 digits; two decimals of a percentage is all that is meaningful.
function round2(x: number): number {
  return Math.round(x * 100) / 100
}
