// The wait between a worker going inactive and its tasks going back to the queue
// (--requeue-after). Silence is not death: a worker that was paused, swapped out or cut off for a
// while may still be running its tasks, and if it comes back within the wait it keeps them
// (nothing requeued, nothing killed). Past the wait they are requeued and may start elsewhere,
// which for a worker that does come back after all means a second run (at-least-once): a longer
// wait trades delay for fewer duplicate runs, 0 requeues at once.

export interface RequeueTimerOptions {
  /** The wait; 0 requeues at once (synchronously, in wait()). */
  afterMs: number
  /** The wait of this worker ended without it coming back: requeue what is still on it. */
  onExpired: (workerId: string) => void
  setTimer?: (fn: () => void, ms: number) => NodeJS.Timeout
  clearTimer?: (t: NodeJS.Timeout) => void
}

/** One timer per inactive worker that still has tasks on it. */
export class RequeueTimers {
  private readonly timers = new Map<string, NodeJS.Timeout>()
  private closed = true
  private readonly setTimer: (fn: () => void, ms: number) => NodeJS.Timeout
  private readonly clearTimer: (t: NodeJS.Timeout) => void

  constructor(private readonly opts: RequeueTimerOptions) {
    this.setTimer = opts.setTimer ?? ((fn, ms) => setTimeout(fn, ms))
    this.clearTimer = opts.clearTimer ?? ((t) => clearTimeout(t))
  }

  get afterMs(): number {
    return this.opts.afterMs
  }

  /** How many workers are waiting (for tests and metrics). */
  get size(): number {
    return this.timers.size
  }

  start(): void {
    this.closed = false
  }

  /** The worker went inactive: its tasks are requeued once the wait is over (at once with 0). */
  wait(workerId: string): void {
    if (this.closed || this.timers.has(workerId)) return
    if (this.opts.afterMs === 0) {
      this.opts.onExpired(workerId)
      return
    }
    this.timers.set(workerId, this.setTimer(() => {
      this.timers.delete(workerId)
      if (!this.closed) this.opts.onExpired(workerId)
    }, this.opts.afterMs))
  }

  isWaiting(workerId: string): boolean {
    return this.timers.has(workerId)
  }

  /**
   * The wait ends without a requeue: the worker came back, was unregistered, or has no task left
   * on it (each was cancelled or finished). True when a wait was under way.
   */
  end(workerId: string): boolean {
    const t = this.timers.get(workerId)
    if (!t) return false
    this.clearTimer(t)
    this.timers.delete(workerId)
    return true
  }

  close(): void {
    this.closed = true
    for (const t of this.timers.values()) this.clearTimer(t)
    this.timers.clear()
  }
}
