import type { Clock, TimerHandle } from '../../src/shared/clock.js'

interface Timer {
  id: number
  at: number
  fn: () => void
  every: number | null
}

/** A clock the test moves by hand: timers fire in order as `advance` passes their time. */
export class ManualClock implements Clock {
  private t: number
  private seq = 0
  private timers = new Map<number, Timer>()

  constructor(start = 1_700_000_000_000) {
    this.t = start
  }

  now(): number {
    return this.t
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq
    this.timers.set(id, { id, at: this.t + ms, fn, every: null })
    return id
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq
    this.timers.set(id, { id, at: this.t + ms, fn, every: Math.max(1, ms) })
    return id
  }

  clearTimeout(h: TimerHandle): void {
    this.timers.delete(h as number)
  }

  clearInterval(h: TimerHandle): void {
    this.timers.delete(h as number)
  }

  get pending(): number {
    return this.timers.size
  }

  advance(ms: number): void {
    const end = this.t + ms
    for (;;) {
      let next: Timer | undefined
      for (const timer of this.timers.values()) if (timer.at <= end && (!next || timer.at < next.at)) next = timer
      if (!next) break
      this.t = next.at
      if (next.every !== null) next.at += next.every
      else this.timers.delete(next.id)
      next.fn()
    }
    this.t = end
  }
}
