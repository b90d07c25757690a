// Activations of returning workers, a time slice per event-loop turn. When a reconnection pass
// finds hundreds of workers at once, their RegisterWorker calls arrive together, and each
// activation costs the main thread a fraction of a millisecond (the registry's event and what
// reacts to it: the store's journal, a telemetry lane, the live feed, the queue). Run as they
// arrive, a burst of them is one long turn of the loop that every heartbeat, API request and timer
// waits behind. Here each call's activation waits its turn in a queue drained by setImmediate, at
// most SLICE_MS of them per turn: the rest go to the next turn, after the loop has had its timers
// and I/O. The caller answers a call only once its activation ran, so "registered" still means
// registered, and a worker's own calls stay in order (it heartbeats only after that answer).

/** Activations run back to back in one turn until this much time has gone by. */
export const SLICE_MS = 4

interface Activation {
  activate: () => void
  /** Answers the call without activating (the master is stopping). */
  refuse: () => void
}

export class ActivationSlices {
  private readonly queue: Activation[] = []
  private scheduled: NodeJS.Immediate | null = null
  private turns = 0
  private closed = false

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Runs `activate` this turn if the turn's slice has room, or in a later turn; `refuse` once closed. */
  push(activate: () => void, refuse: () => void): void {
    if (this.closed) return refuse()
    this.queue.push({ activate, refuse })
    this.scheduled ??= setImmediate(() => this.drain())
  }

  /**
   * Stops: the activations still waiting are refused, not run, since what they would reach (the
   * registry's listeners, the monitor, telemetry) is being stopped too.
   */
  close(): void {
    this.closed = true
    if (this.scheduled) clearImmediate(this.scheduled)
    this.scheduled = null
    const waiting = this.queue.splice(0)
    for (const a of waiting) a.refuse()
  }

  /** Activations waiting for their turn. */
  get pending(): number {
    return this.queue.length
  }

  /** Turns that ran activations (for tests: a burst spread over several). */
  get turnsUsed(): number {
    return this.turns
  }

  private drain(): void {
    this.scheduled = null
    this.turns++
    const until = this.now() + SLICE_MS
    let i = 0
    try {
      // At least one a turn, whatever it costs: a slow activation must not stall the queue.
      do this.queue[i++]!.activate()
      while (i < this.queue.length && this.now() < until)
    } finally {
      this.queue.splice(0, i)
      if (this.queue.length > 0) this.scheduled = setImmediate(() => this.drain())
    }
  }
}
