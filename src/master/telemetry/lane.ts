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
// (--telemetry-step) for the recent past (FINE_MS, 6 minutes), and `coarse` points of about a
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

/**
 * The recent past kept at full resolution: the 5m window and a minute more, because the tiers meet
 * at the first minute boundary after the oldest fine point, so that the 5m window is made of fine
 * points only and stays exact. Ten minutes cost every worker 48 points (1.7 KiB) more, for
 * points no window reads: the history shows minute points there instead.
 */
export const FINE_MS = 360_000
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

// One history point: the samples whose arrival falls in [at, at + step). Float32 fields (running
// means keep float32's precision over a long step), then the peaks apart as uint16 hundredths: a
// usage is a percentage (0 to 100, validated on arrival), and two decimals are all an answer shows.
const P_SAMPLES = 0
const P_CPU = 1 // averages: cpu, memory, storage, gpu
const P_RUNNING = 5 // average running task count
export const POINT_FIELDS = 6
/** Peaks of a point: cpu, memory, storage, gpu, in hundredths of a percent. */
const PEAK_FIELDS = 4
const PEAK_MAX = 0xffff
/** Bytes of one history point: its start (int32 steps), its float32 fields, its uint16 peaks. */
const POINT_BYTES = 4 + POINT_FIELDS * 4 + PEAK_FIELDS * 2

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
  const bytes = CTRL_WORDS * 4 + RING_SLOTS * SLOT_BYTES + LATEST_FIELDS * 8 + points * POINT_BYTES
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
 * The word indexes are into its chunk's views (ChunkViews), so a tier is a few numbers, not views.
 */
class Tier {
  constructor(
    readonly ctrlWord: number,
    readonly stepMs: number,
    readonly cap: number,
    /** Int32 index of the points' starts. */
    readonly stepAt: number,
    /** Float32 index of the points' fields. */
    readonly pointAt: number,
    /** Uint16 index of the points' peaks. */
    readonly peakAt: number,
  ) {}
}

/**
 * The views of one buffer of lanes (a slab's chunk), shared by all of its lanes: a lane is offsets
 * into them, so that thousands of lanes do not each carry a dozen typed arrays on both sides of
 * the thread seam (about 1.7 KiB of heap per lane and thread).
 */
interface ChunkViews {
  bytes: Uint8Array
  i32: Int32Array
  u16: Uint16Array
  f32: Float32Array
  f64: Float64Array
}

const chunkViews = new WeakMap<SharedArrayBuffer, ChunkViews>()

function viewsOf(buffer: SharedArrayBuffer): ChunkViews {
  let v = chunkViews.get(buffer)
  if (!v) {
    // Whole 8-byte words: a chunk is lanes of a multiple of 8 bytes.
    const words = Math.floor(buffer.byteLength / 8)
    v = { bytes: new Uint8Array(buffer), i32: new Int32Array(buffer, 0, words * 2), u16: new Uint16Array(buffer, 0, words * 4), f32: new Float32Array(buffer, 0, words * 2), f64: new Float64Array(buffer, 0, words) }
    chunkViews.set(buffer, v)
  }
  return v
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
  private readonly size: number
  /** The chunk's views; every index below is into them, from the start of the buffer. */
  private readonly i32: Int32Array
  private readonly peaks: Uint16Array
  private readonly f32: Float32Array
  private readonly f64: Float64Array
  /** Int32 index of the control block. */
  private readonly ctrl0: number
  /** Float64 index of the base time. */
  private readonly base0: number
  /** Float64 and float32 indexes of the ring. */
  private readonly ring0: number
  private readonly ring32At: number
  /** Float64 index of the latest sample. */
  private readonly latest0: number
  private readonly fine: Tier
  private readonly coarse: Tier | null

  constructor(init: LaneInit) {
    const { buffer, byteOffset, layout } = init
    if (byteOffset % 8 !== 0) throw new RangeError(`a lane starts on an 8-byte boundary, not at ${byteOffset}`)
    this.buffer = buffer
    this.byteOffset = byteOffset
    this.layout = layout
    this.size = laneBytes(layout)
    if (byteOffset + this.size > buffer.byteLength) throw new RangeError(`a lane of ${this.size} bytes at ${byteOffset} is past the end of its buffer (${buffer.byteLength})`)
    const v = viewsOf(buffer)
    this.i32 = v.i32
    this.peaks = v.u16
    this.f32 = v.f32
    this.f64 = v.f64
    let offset = byteOffset
    this.ctrl0 = offset / 4
    this.base0 = offset / 8 + CTRL_BASE_F64
    offset += CTRL_WORDS * 4
    this.ring0 = offset / 8
    this.ring32At = offset / 4
    offset += RING_SLOTS * SLOT_BYTES
    this.latest0 = offset / 8
    offset += LATEST_FIELDS * 8
    const tier = (ctrlWord: number, stepMs: number, cap: number): Tier => {
      const stepAt = offset / 4
      offset += cap * 4
      const pointAt = offset / 4
      offset += cap * POINT_FIELDS * 4
      const peakAt = offset / 2
      offset += cap * PEAK_FIELDS * 2
      return new Tier(ctrlWord, stepMs, cap, stepAt, pointAt, peakAt)
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
    const old = Atomics.load(this.i32, this.ctrl0 + CTRL_GEN)
    const gen = (old + 1) | 0
    // A lane never opened is still the zeroes a SharedArrayBuffer starts with: clearing it would
    // only fault its pages in on the main thread (about 13 µs), before anything is written there.
    if (old !== 0) viewsOf(this.buffer).bytes.fill(0, this.byteOffset, this.byteOffset + this.size)
    Atomics.store(this.i32, this.ctrl0 + CTRL_GEN, gen)
    Atomics.store(this.i32, this.ctrl0 + CTRL_OWNER, owner + 1)
    return gen
  }

  /** Marks the lane free: its thread skips it from now on. */
  free(): void {
    Atomics.store(this.i32, this.ctrl0 + CTRL_OWNER, 0)
    Atomics.store(this.i32, this.ctrl0 + CTRL_WANTED, 0)
    Atomics.store(this.i32, this.ctrl0 + CTRL_GEN, (Atomics.load(this.i32, this.ctrl0 + CTRL_GEN) + 1) | 0)
  }

  /** The thread index hosting the lane, or -1 when it is free. */
  get owner(): number {
    return Atomics.load(this.i32, this.ctrl0 + CTRL_OWNER) - 1
  }

  get gen(): number {
    return Atomics.load(this.i32, this.ctrl0 + CTRL_GEN)
  }

  get wanted(): boolean {
    return Atomics.load(this.i32, this.ctrl0 + CTRL_WANTED) === 1
  }

  set wanted(on: boolean) {
    Atomics.store(this.i32, this.ctrl0 + CTRL_WANTED, on ? 1 : 0)
  }

  // --- the queue flag (queue.ts) ----------------------------------------------------------------

  /** Sets the flag; true when it was clear, i.e. the caller must queue the lane. */
  markQueued(): boolean {
    return Atomics.exchange(this.i32, this.ctrl0 + CTRL_QUEUED, 1) === 0
  }

  /** Cleared by the thread before it drains, so that a write after the drain's read queues it again. */
  clearQueued(): void {
    Atomics.store(this.i32, this.ctrl0 + CTRL_QUEUED, 0)
  }

  get queued(): boolean {
    return Atomics.load(this.i32, this.ctrl0 + CTRL_QUEUED) === 1
  }

  // --- the main thread's side: one writer ------------------------------------------------------

  /**
   * Appends a heartbeat and returns the lane's backlog with it. Never blocks and never allocates;
   * a full ring is lapped (see drain).
   */
  write(at: number, cpu: number, memory: number, storage: number, gpu: number, running: number): number {
    const w = Atomics.load(this.i32, this.ctrl0 + CTRL_WRITE)
    const slot = w & RING_MASK
    this.f64[this.ring0 + slot * (SLOT_BYTES / 8) + SLOT_AT] = at
    const f = this.f32
    const b = this.ring32At + slot * (SLOT_BYTES / 4)
    f[b + SLOT_CPU] = cpu
    f[b + SLOT_MEMORY] = memory
    f[b + SLOT_STORAGE] = storage
    f[b + SLOT_GPU] = gpu
    f[b + SLOT_RUNNING] = running
    // The store publishes the slot: the reader only reads slots below the write count.
    Atomics.store(this.i32, this.ctrl0 + CTRL_WRITE, (w + 1) | 0)
    return (w + 1 - Atomics.load(this.i32, this.ctrl0 + CTRL_READ)) | 0
  }

  /** Heartbeats written but not processed yet (at most the ring's size). */
  get depth(): number {
    const pending = (Atomics.load(this.i32, this.ctrl0 + CTRL_WRITE) - Atomics.load(this.i32, this.ctrl0 + CTRL_READ)) | 0
    return pending > RING_CAPACITY ? RING_CAPACITY : pending
  }

  get dropped(): number {
    return Atomics.load(this.i32, this.ctrl0 + CTRL_DROPS) >>> 0
  }

  get processed(): number {
    return Atomics.load(this.i32, this.ctrl0 + CTRL_PROCESSED) >>> 0
  }

  // --- the telemetry thread's side: one reader ------------------------------------------------

  /**
   * Hands every pending sample, oldest first, to `visit` (the same object each time, overwritten:
   * copy what you keep). Returns the number of samples dropped in this call.
   */
  drain(visit: (s: Sample) => void, scratch: Sample): number {
    let r = Atomics.load(this.i32, this.ctrl0 + CTRL_READ)
    let dropped = 0
    for (;;) {
      const w = Atomics.load(this.i32, this.ctrl0 + CTRL_WRITE)
      const pending = (w - r) | 0
      if (pending <= 0) break
      if (pending > RING_CAPACITY) {
        // Lapped: only the newest RING_CAPACITY writes are still intact.
        dropped += pending - RING_CAPACITY
        r = (w - RING_CAPACITY) | 0
      }
      const slot = r & RING_MASK
      scratch.at = this.f64[this.ring0 + slot * (SLOT_BYTES / 8) + SLOT_AT]!
      const f = this.f32
      const b = this.ring32At + slot * (SLOT_BYTES / 4)
      scratch.cpu = f[b + SLOT_CPU]!
      scratch.memory = f[b + SLOT_MEMORY]!
      scratch.storage = f[b + SLOT_STORAGE]!
      scratch.gpu = f[b + SLOT_GPU]!
      scratch.running = f[b + SLOT_RUNNING]!
      // The writer may have started overwriting this slot while we copied it: it has once the
      // write count reaches r + RING_SLOTS. Then the copy may be torn: count it as dropped.
      const after = Atomics.load(this.i32, this.ctrl0 + CTRL_WRITE)
      if (((after - r) | 0) >= RING_SLOTS) {
        dropped++
        r = (r + 1) | 0
        continue
      }
      r = (r + 1) | 0
      Atomics.store(this.i32, this.ctrl0 + CTRL_READ, r)
      visit(scratch)
      Atomics.add(this.i32, this.ctrl0 + CTRL_PROCESSED, 1)
    }
    Atomics.store(this.i32, this.ctrl0 + CTRL_READ, r)
    if (dropped > 0) Atomics.add(this.i32, this.ctrl0 + CTRL_DROPS, dropped)
    return dropped
  }

  /** Folds a sample into the latest values and both tiers of history. */
  record(s: Sample): void {
    const l = this.f64
    const i = this.latest0
    l[i] = s.at
    l[i + 1] = s.cpu
    l[i + 2] = s.memory
    l[i + 3] = s.storage
    l[i + 4] = s.gpu
    l[i + 5] = s.running
    // The first point of the lane sets its base; it is written before the point count that
    // publishes it, so a reader that sees a point sees the base.
    if (Atomics.load(this.i32, this.ctrl0 + CTRL_FINE) === 0) this.f64[this.base0] = s.at - (s.at % this.layout.stepMs)
    this.fold(this.fine, s)
    if (this.coarse) this.fold(this.coarse, s)
  }

  /** Into the tier's current point, or a new one each step. */
  private fold(t: Tier, s: Sample): void {
    const opened = Atomics.load(this.i32, this.ctrl0 + t.ctrlWord)
    let idx = opened > 0 ? (opened - 1) % t.cap : -1
    if (idx < 0 || s.at >= this.pointAt(t, idx) + t.stepMs) {
      idx = opened % t.cap
      this.i32[t.stepAt + idx] = Math.round((s.at - (s.at % t.stepMs) - this.f64[this.base0]!) / this.layout.stepMs)
      this.f32.fill(0, t.pointAt + idx * POINT_FIELDS, t.pointAt + (idx + 1) * POINT_FIELDS)
      this.peaks.fill(0, t.peakAt + idx * PEAK_FIELDS, t.peakAt + (idx + 1) * PEAK_FIELDS)
      Atomics.store(this.i32, this.ctrl0 + t.ctrlWord, opened + 1)
    }
    const p = this.f32
    const b = t.pointAt + idx * POINT_FIELDS
    const n = p[b + P_SAMPLES]! + 1
    p[b + P_SAMPLES] = n
    // Running means: no sums to overflow float32 precision over a long step.
    p[b + P_CPU] = p[b + P_CPU]! + (s.cpu - p[b + P_CPU]!) / n
    p[b + P_CPU + 1] = p[b + P_CPU + 1]! + (s.memory - p[b + P_CPU + 1]!) / n
    p[b + P_CPU + 2] = p[b + P_CPU + 2]! + (s.storage - p[b + P_CPU + 2]!) / n
    p[b + P_CPU + 3] = p[b + P_CPU + 3]! + (s.gpu - p[b + P_CPU + 3]!) / n
    const q = this.peaks
    const k = t.peakAt + idx * PEAK_FIELDS
    const cpu = hundredths(s.cpu)
    const memory = hundredths(s.memory)
    const storage = hundredths(s.storage)
    const gpu = hundredths(s.gpu)
    if (cpu > q[k]!) q[k] = cpu
    if (memory > q[k + 1]!) q[k + 1] = memory
    if (storage > q[k + 2]!) q[k + 2] = storage
    if (gpu > q[k + 3]!) q[k + 3] = gpu
    p[b + P_RUNNING] = p[b + P_RUNNING]! + (s.running - p[b + P_RUNNING]!) / n
  }

  // --- readers (any thread) ---------------------------------------------------------------------

  private pointAt(t: Tier, idx: number): number {
    return this.f64[this.base0]! + this.i32[t.stepAt + idx]! * this.layout.stepMs
  }

  /**
   * Where the tiers meet: fine points from here on, coarse points ending at or before it. -Infinity
   * while the fine tier still holds every point it ever opened (no coarse point is needed); else
   * the first coarse boundary at or after the oldest fine point kept, so that no sample is counted
   * in both tiers, and none is lost between them.
   */
  private boundary(): number {
    const opened = Atomics.load(this.i32, this.ctrl0 + CTRL_FINE)
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
      const opened = Atomics.load(this.i32, this.ctrl0 + t.ctrlWord)
      for (let k = Math.max(0, opened - t.cap); k < opened; k++) {
        const idx = k % t.cap
        const at = this.pointAt(t, idx)
        if (at + t.stepMs > b) break
        if (at + t.stepMs <= since) continue
        visit(t, idx, at)
      }
    }
    const t = this.fine
    const opened = Atomics.load(this.i32, this.ctrl0 + t.ctrlWord)
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
      const b = t.pointAt + idx * POINT_FIELDS
      const p = this.f32
      const k = t.peakAt + idx * PEAK_FIELDS
      const q = this.peaks
      out.push({
        at,
        stepMs: t.stepMs,
        samples: p[b + P_SAMPLES]!,
        cpu: round2(p[b + P_CPU]!),
        memory: round2(p[b + P_CPU + 1]!),
        storage: round2(p[b + P_CPU + 2]!),
        gpu: round2(p[b + P_CPU + 3]!),
        cpuPeak: q[k]! / 100,
        memoryPeak: q[k + 1]! / 100,
        storagePeak: q[k + 2]! / 100,
        gpuPeak: q[k + 3]! / 100,
        running: round2(p[b + P_RUNNING]!),
      })
    })
    return out
  }

  /** The most recent sample processed, or null before the first. */
  latestSample(): Sample | null {
    const l = this.f64
    const i = this.latest0
    if (l[i] === 0) return null
    return { at: l[i]!, cpu: round2(l[i + 1]!), memory: round2(l[i + 2]!), storage: round2(l[i + 3]!), gpu: round2(l[i + 4]!), running: l[i + 5]! }
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
      const p = this.f32
      const b = t.pointAt + idx * POINT_FIELDS
      const q = this.peaks
      const k = t.peakAt + idx * PEAK_FIELDS
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
        a.cpuPeak = Math.max(a.cpuPeak, q[k]!)
        a.memoryPeak = Math.max(a.memoryPeak, q[k + 1]!)
        a.storagePeak = Math.max(a.storagePeak, q[k + 2]!)
        a.gpuPeak = Math.max(a.gpuPeak, q[k + 3]!)
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
            peak: { cpu: a.cpuPeak / 100, memory: a.memoryPeak / 100, storage: a.storagePeak / 100, gpu: a.gpuPeak / 100 },
          }
    })
    return { workerId, at: now, latest: this.latestSample(), windows, processed, dropped }
  }
}

/** A percentage as the uint16 hundredths a peak is kept in (out of range values clamped). */
function hundredths(x: number): number {
  const h = Math.round(x * 100)
  return h > PEAK_MAX ? PEAK_MAX : h < 0 ? 0 : h
}

// float32 holds about 7 digits; two decimals of a percentage is all that is meaningful.
function round2(x: number): number {
  return Math.round(x * 100) / 100
}
