import type { Logger } from '../shared/log.js'
import { systemClock, type Clock, type TimerHandle } from '../shared/clock.js'

/** What the master keeps of finished tasks, and of each task's output. */
export interface TaskRetention {
  /** A finished task (completed, failed, cancelled) is removed this long after it finished. */
  retentionMs: number
  /** Finished tasks kept at most; past it the oldest finished go first. */
  maxFinished: number
  /** Bytes of each task's output the master keeps: its end, cut on a character boundary. */
  outputTailBytes: number
}

export const DEFAULT_TASK_RETENTION: TaskRetention = { retentionMs: 7 * 86_400_000, maxFinished: 100_000, outputTailBytes: 64 * 1024 }

/**
 * How often retention is enforced: a quarter of the retention time, between 250 ms and a minute,
 * so a task outlives its retention by at most a quarter of it (a minute for long ones).
 */
export function retentionTickMs(retentionMs: number): number {
  return Math.min(60_000, Math.max(250, Math.floor(retentionMs / 4)))
}

/** What the pruner needs of the task table. */
export interface Prunable {
  /** Removes what retention says must go; returns the ids removed. */
  prune(): string[]
}

/**
 * Enforces task retention on a timer: each tick asks the task table to remove what is past its
 * retention or its count, which the table does from its finish-order index (the cost is what is
 * removed). The table journals each removal, so a store that is down gets it when it answers.
 */
export class TaskPruner {
  private timer: TimerHandle | null = null
  private readonly clock: Clock

  constructor(private readonly opts: { tasks: Prunable; retentionMs: number; log: Logger; clock?: Clock }) {
    this.clock = opts.clock ?? systemClock
  }

  /** Prunes at once (tasks loaded past their retention), then on every tick. */
  start(): void {
    if (this.timer) return
    this.tick()
    const timer = this.clock.setInterval(() => this.tick(), retentionTickMs(this.opts.retentionMs))
    if (typeof timer === 'object') timer.unref?.()
    this.timer = timer
  }

  private tick(): void {
    const removed = this.opts.tasks.prune()
    if (removed.length > 0) this.opts.log.debug({ removed: removed.length }, `Removed ${removed.length} finished task(s) past their retention`)
  }

  close(): void {
    if (this.timer) this.clock.clearInterval(this.timer)
    this.timer = null
  }
}
