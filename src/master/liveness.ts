import type { Logger } from '../shared/log.js'
import { systemClock, type Clock, type TimerHandle } from '../shared/clock.js'
import type { Registry } from './registry.js'
import { C, type Counters } from './counters.js'

/**
 * Heartbeat timeout: a worker silent for longer than `timeoutMs` becomes inactive (logged once,
 * event emitted by the registry). One sweep timer for the whole fleet; its period is a fraction
 * of the timeout so detection lags the deadline by at most that fraction (capped at 1 s).
 */
export class Liveness {
  private timer: TimerHandle | null = null
  private readonly clock: Clock
  readonly sweepMs: number

  constructor(
    private readonly registry: Registry,
    private readonly opts: { timeoutMs: number; log: Logger; clock?: Clock; counters?: Counters },
  ) {
    this.clock = opts.clock ?? systemClock
    this.sweepMs = Math.min(1000, Math.max(20, Math.floor(opts.timeoutMs / 5)))
  }

  start(): void {
    if (this.timer) return
    this.timer = this.clock.setInterval(() => this.sweep(), this.sweepMs)
  }

  /** Marks every worker past the deadline inactive; returns their ids. */
  sweep(): string[] {
    const now = this.clock.now()
    const expired: string[] = []
    for (const w of this.registry.active()) {
      if (w.lastHeartbeat !== null && now - w.lastHeartbeat > this.opts.timeoutMs) expired.push(w.id)
    }
    for (const id of expired) {
      const w = this.registry.get(id)
      const silentMs = w?.lastHeartbeat != null ? now - w.lastHeartbeat : null
      if (this.registry.markInactive(id, 'heartbeat-timeout', now)) {
        this.opts.counters?.add(C.HEARTBEAT_TIMEOUTS)
        // A drained worker was taken out of service to be stopped: no warning for it.
        const drained = w?.scheduling?.drain?.drainedAt != null
        this.opts.log[drained ? 'info' : 'warn']({ workerId: id, address: w?.address, silentMs, drained }, `Worker ${id} became inactive: no heartbeat for ${Math.round((silentMs ?? 0) / 1000)}s${drained ? ' (it is drained)' : ''}`)
      }
    }
    return expired
  }

  close(): void {
    if (this.timer) this.clock.clearInterval(this.timer)
    this.timer = null
  }
}
