/**
 * Capped exponential backoff with full jitter: each delay is random in [base/2, min(cap, base * 2^n)].
 * The floor keeps a herd of restarted workers from retrying in the same millisecond while still
 * letting the first retry come quickly.
 */
export class Backoff {
  private attempt = 0

  constructor(
    private readonly baseMs: number,
    private readonly capMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt)
    if (ceiling < this.capMs) this.attempt++
    const floor = Math.min(this.baseMs / 2, ceiling)
    return Math.round(floor + (ceiling - floor) * this.random())
  }

  reset(): void {
    this.attempt = 0
  }
}
