// The reconnection monitor's global dial budget: dials started per second (a token bucket holding
// one second's worth) and dials in flight. Pure logic, time passed in.
//
// A dial to a dead worker is pure cost. Measured at 63dc020's dialer on the 2-core bench machine
// (shared with other work, so noisy): in isolation ~0.55 ms of CPU for a refused dial and ~0.75 ms
// for a tarpit (accepts, never answers, held to the dial timeout) on the pool, all threads counted;
// in the master with 5,000 dead workers (half each), 1.34 ms a dial when dials started one per
// wake-up, 0.78 ms on the monitor's 250 ms tick. The rate is what bounds that cost whatever the
// registry holds: 5,000 workers lost at once would otherwise be dialled 3,000 times a second by the
// fast schedule. 40 a second is the least that keeps 50 recently lost workers (the seed's 500/50
// row) at the schedule's 1.5 s cap. With one cancel waiter per thread, the probes' deadline wheel
// and the larger batches a higher rate makes at the 250 ms tick, 5,000 dead workers (half tarpits,
// 3 s dial) cost 0.20 to 0.32 ms a dial, above an empty master in the same run, on the shared
// 2-core machine (its load moved the figure by ±0.5 % of a core): 0.20 to 0.29 ms at ~135 dials/s,
// 0.32 ms at 80/s in the cloudai-table (d) row. Later full runs of that row measured 0.35 to
// 0.62 ms a dial by machine (README, Performance), so 60 a second was 2.1 to 3.7 % of a core. 45 a
// second is 1.6 % at 0.35 ms, and still leaves a quarter of the rate beyond the 33 a second that 50
// recently lost workers need at the 1.5 s cap: 5,000 dead workers are then dialled every ~111 s,
// not every 30 s interval (the monitor says so: cloudai_reconnect_budget_short); 167 a second (each
// one per interval) costs 3 to 4 %. The in-flight cap bounds the sockets and memory tarpits hold:
// at the rate and a 3 s dial timeout, rate × 3 dials when all are tarpits (135 at 45 a second).

export interface BudgetOptions {
  /** Dials started per second, on average; up to this many at once after a quiet second. */
  ratePerSec: number
  maxInflight: number
}

export const BUDGET_DEFAULTS = { ratePerSec: 45, maxInflight: 256 } as const

export class DialBudget {
  private tokens: number
  private at: number
  private inflightCount = 0

  constructor(private readonly opts: BudgetOptions, now: number) {
    this.tokens = Math.max(1, opts.ratePerSec)
    this.at = now
  }

  get inflight(): number {
    return this.inflightCount
  }

  get ratePerSec(): number {
    return this.opts.ratePerSec
  }

  get maxInflight(): number {
    return this.opts.maxInflight
  }

  /** Takes a dial's share when one is free now (a token and an in-flight place). */
  tryTake(now: number): boolean {
    if (this.inflightCount >= this.opts.maxInflight) return false
    this.refill(now)
    if (this.tokens < 1) return false
    this.tokens -= 1
    this.inflightCount++
    return true
  }

  /** A share taken with tryTake that was not used after all (its worker needed no dial): given back whole. */
  untake(): void {
    this.tokens += 1
    this.release()
  }

  /** A dial outside the budget (an operator's registration): in flight, but no token. */
  takeUnmetered(): void {
    this.inflightCount++
  }

  /** A dial taken with tryTake or takeUnmetered settled. */
  release(): void {
    if (this.inflightCount > 0) this.inflightCount--
  }

  /** Milliseconds until the next token (0 when one is there); in-flight places free on release. */
  waitMs(now: number): number {
    this.refill(now)
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.opts.ratePerSec) * 1000)
  }

  private refill(now: number): void {
    const elapsed = now - this.at
    if (elapsed <= 0) return
    this.at = now
    this.tokens = Math.min(Math.max(1, this.opts.ratePerSec), this.tokens + (elapsed / 1000) * this.opts.ratePerSec)
  }
}
