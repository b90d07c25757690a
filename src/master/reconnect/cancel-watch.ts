// Cancellation of dials across the thread seam, in shared memory: one Int32 flag per in-flight
// dial (a slot), and one more word at the end, the generation, bumped on every cancel. The main
// thread (CancelSlots in dialer.ts) sets a slot's flag, bumps the generation and notifies it; each
// thread that dials (CancelWatch, one per thread and buffer) keeps a single waiter on the
// generation for all of its dials and, woken, aborts those whose flag is set. One waiter per
// thread, not per dial: an Atomics.waitAsync per dial (a promise, a waiter node, a notify to end
// it) was a measurable share of what a dead dial cost. Cancels are rare (a worker came back), so
// waking every dialling thread to scan its few hundred dials is cheap.

/** Slots for this many dials in flight at once. */
export const CANCEL_SLOTS = 65_536
/** The generation's index: the word after the last slot. */
export const CANCEL_GENERATION = CANCEL_SLOTS

/** A buffer for CANCEL_SLOTS flags and the generation. */
export function cancelFlagsBuffer(): Int32Array {
  return new Int32Array(new SharedArrayBuffer((CANCEL_SLOTS + 1) * 4))
}

/** The dialling side: one per thread and flags buffer (watchFor). */
export class CancelWatch {
  private readonly aborts = new Map<number, () => void>()
  private waiting = false

  constructor(private readonly flags: Int32Array) {}

  /**
   * Calls `abort` once if the slot's flag is set while it is watched (at once if it already is).
   * Returns what stops watching it; call it when the dial settles.
   */
  watch(slot: number, abort: () => void): () => void {
    if (Atomics.load(this.flags, slot) !== 0) {
      abort()
      return noop
    }
    this.aborts.set(slot, abort)
    this.arm()
    return () => {
      if (this.aborts.get(slot) === abort) this.aborts.delete(slot)
    }
  }

  private arm(): void {
    if (this.waiting) return
    const seen = Atomics.load(this.flags, CANCEL_GENERATION)
    // A cancel between the flag check in watch() and here changed the generation: scan at once.
    const waited = Atomics.waitAsync(this.flags, CANCEL_GENERATION, seen)
    if (!waited.async) {
      queueMicrotask(() => this.woken())
      this.waiting = true
      return
    }
    this.waiting = true
    // It never rejects; a handler all the same, so a waiter cannot fail silently.
    waited.value.then(() => this.woken(), () => this.woken())
  }

  private woken(): void {
    this.waiting = false
    for (const [slot, abort] of this.aborts) {
      if (Atomics.load(this.flags, slot) === 0) continue
      this.aborts.delete(slot)
      // An abort that throws cannot stop the step under way: that dial ends by its deadline.
      try {
        abort()
      } catch {
        // nothing more to do here: this thread has no logger, and the dial's result says timeout
      }
    }
    // No dial left to watch: no waiter until the next watch() arms one (a cancel meanwhile is seen
    // by its flag check there). A waiter left pending when the last dial unwatches is harmless:
    // one per thread, it wakes at the next cancel and finds nothing.
    if (this.aborts.size > 0) this.arm()
  }
}

function noop(): void {}

const watches = new WeakMap<Int32Array, CancelWatch>()

/** This thread's watch on `flags`. */
export function watchFor(flags: Int32Array): CancelWatch {
  let w = watches.get(flags)
  if (!w) watches.set(flags, (w = new CancelWatch(flags)))
  return w
}
