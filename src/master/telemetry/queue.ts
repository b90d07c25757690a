// The queue of lanes with work: one per telemetry thread, in shared memory. The main thread (the
// only producer) pushes a lane's index when a heartbeat lands in a lane that was not queued yet;
// the thread (the only consumer) pops them on its own schedule, so a heartbeat costs the main
// thread a few stores and never a cross-thread wake.
//
// A lane is queued once: its QUEUED flag (lane.ts) is set by the producer and cleared by the
// consumer just before it drains the lane. When the queue is full the flag stays set and the
// producer raises OVERFLOW instead; the consumer then sweeps its lanes for set flags. Nothing is
// lost, and the queue never has to hold more than the lanes of its thread.

// Int32 header words.
const HEAD = 0 // pushes so far (producer), wrapping
const TAIL = 1 // pops so far (consumer), wrapping
const OVERFLOW = 2 // 1: a lane could not be queued, sweep
const WANT_ALL = 3 // 1: somebody subscribes to every worker's telemetry
const BELL = 4 // bumped to wake the thread before its tick (the queue is half full)
const SLEEPING = 5 // 1 while the thread waits a tick, 2 while it waits for work (idle): a wake without a sleeper is skipped
const OVERFLOWS = 6 // pushes refused because the queue was full
const ROUNDS = 7 // drain rounds the consumer finished, wrapping (the slab's reuse fence)
const HEADER_WORDS = 8

// SLEEPING's values.
const AWAKE = 0
const TICK = 1
const IDLE = 2

export function queueBytes(slots: number): number {
  return (HEADER_WORDS + slots) * 4
}

/** Views over one thread's queue; built on both sides of the thread seam. */
export class LaneQueue {
  readonly buffer: SharedArrayBuffer
  readonly slots: number
  private readonly words: Int32Array
  private readonly mask: number

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer
    this.slots = buffer.byteLength / 4 - HEADER_WORDS
    if (this.slots <= 0 || (this.slots & (this.slots - 1)) !== 0) throw new Error(`a lane queue needs a power-of-two number of slots, got ${this.slots}`)
    this.mask = this.slots - 1
    this.words = new Int32Array(buffer)
  }

  static create(slots: number): LaneQueue {
    return new LaneQueue(new SharedArrayBuffer(queueBytes(slots)))
  }

  /** Lanes waiting (read from either side; exact on the consumer's). */
  get length(): number {
    return (Atomics.load(this.words, HEAD) - Atomics.load(this.words, TAIL)) | 0
  }

  // --- producer: the main thread ----------------------------------------------------------------

  /** Queues a lane; false when full (then OVERFLOW is raised and the consumer will sweep). */
  push(lane: number): boolean {
    const head = Atomics.load(this.words, HEAD)
    const length = (head - Atomics.load(this.words, TAIL)) | 0
    if (length >= this.slots) {
      Atomics.add(this.words, OVERFLOWS, 1)
      Atomics.store(this.words, OVERFLOW, 1)
      this.wake()
      return false
    }
    Atomics.store(this.words, HEADER_WORDS + (head & this.mask), lane)
    Atomics.store(this.words, HEAD, (head + 1) | 0)
    // Half full before the tick: wake the thread early, once per crossing, so that a burst is
    // drained before it fills the queue. Below that, the thread's tick is the only schedule.
    if (length + 1 === this.slots >> 1) this.wake()
    // An idle thread (nothing for a while) waits for work instead of ticking: the first lane
    // queued wakes it. Under load the thread never idles, so this costs a heartbeat one load.
    else if (length === 0 && Atomics.load(this.words, SLEEPING) === IDLE) this.wake()
    return true
  }

  /** Pushes refused because the queue was full (each one's lane was then found by a sweep). */
  get overflows(): number {
    return Atomics.load(this.words, OVERFLOWS) >>> 0
  }

  set wantAll(on: boolean) {
    Atomics.store(this.words, WANT_ALL, on ? 1 : 0)
  }

  get wantAll(): boolean {
    return Atomics.load(this.words, WANT_ALL) === 1
  }

  /** Wakes the consumer if it sleeps (notify takes a lock: skipped while it is awake). */
  wake(): void {
    Atomics.add(this.words, BELL, 1)
    if (Atomics.load(this.words, SLEEPING) !== AWAKE) Atomics.notify(this.words, BELL, 1)
  }

  // --- consumer: the telemetry thread -----------------------------------------------------------

  /** The next lane index, or -1 when the queue is empty. */
  pop(): number {
    const tail = Atomics.load(this.words, TAIL)
    if (tail === Atomics.load(this.words, HEAD)) return -1
    const lane = Atomics.load(this.words, HEADER_WORDS + (tail & this.mask))
    Atomics.store(this.words, TAIL, (tail + 1) | 0)
    return lane
  }

  /** Drain rounds the consumer finished: a lane freed before a round ended is no longer read by it. */
  get rounds(): number {
    return Atomics.load(this.words, ROUNDS)
  }

  /** The consumer finished a round: everything it took before this is done with. */
  endRound(): void {
    Atomics.add(this.words, ROUNDS, 1)
  }

  /** True (once) when a push failed since the last call: the consumer must sweep. */
  takeOverflow(): boolean {
    return Atomics.exchange(this.words, OVERFLOW, 0) === 1
  }

  /** Asks for a sweep (a restarted thread's first one: a lane may have been popped, not drained). */
  raiseOverflow(): void {
    Atomics.store(this.words, OVERFLOW, 1)
  }

  /**
   * Waits until woken or `timeoutMs` pass. No wake is lost: one after `seen` was read makes the
   * wait return at once; the producer reads SLEEPING after bumping BELL, so a wake it skipped came
   * before this store, and so before the wait compares.
   */
  async sleep(timeoutMs: number): Promise<void> {
    const seen = Atomics.load(this.words, BELL)
    Atomics.store(this.words, SLEEPING, TICK)
    const waited = Atomics.waitAsync(this.words, BELL, seen, timeoutMs)
    if (waited.async) await waited.value
    Atomics.store(this.words, SLEEPING, AWAKE)
  }

  /**
   * Waits (at most `timeoutMs`) until a lane is queued or the thread is woken: for a thread that
   * found nothing to do for a while, so that it does not tick for nothing. No lane is left
   * waiting: the producer stores HEAD before it reads SLEEPING and this side stores SLEEPING
   * before it reads HEAD, so either the push sees IDLE and wakes, or the length check sees it.
   */
  async idle(timeoutMs: number): Promise<void> {
    const seen = Atomics.load(this.words, BELL)
    Atomics.store(this.words, SLEEPING, IDLE)
    if (this.length === 0) {
      const waited = Atomics.waitAsync(this.words, BELL, seen, timeoutMs)
      if (waited.async) await waited.value
    }
    Atomics.store(this.words, SLEEPING, AWAKE)
  }
}
