import type { TaskRecord } from '../shared/types.js'

// The orders the task table keeps beside its map, so that listing, snapshots and pruning cost what
// they return rather than a pass over every task ever submitted. Both are arrays kept sorted as
// tasks arrive (a new task is almost always the newest: the insertion walks back one step), with
// removed entries left as holes that are skipped and compacted once they are half the array.

/** Task ids by submission, oldest first (submittedAt, then id): the task list's order. */
export class SubmissionOrder {
  private ids: string[] = []
  private holes = 0

  constructor(private readonly get: (id: string) => TaskRecord | undefined) {}

  /** A task just submitted. */
  add(t: TaskRecord): void {
    let i = this.ids.length
    // Holes are stepped over: the walk stops at the first task held that was submitted earlier.
    for (; i > 0; i--) {
      const prev = this.get(this.ids[i - 1]!)
      if (prev !== undefined && compareSubmission(prev, t) <= 0) break
    }
    if (i === this.ids.length) this.ids.push(t.id)
    else this.ids.splice(i, 0, t.id)
  }

  /** Rebuilt from every task held (after a load merged older tasks in): rare, O(n log n). */
  rebuild(all: Iterable<TaskRecord>): void {
    const sorted = [...all].sort(compareSubmission)
    this.ids = sorted.map((t) => t.id)
    this.holes = 0
  }

  /** The task is gone from the table: its entry becomes a hole. */
  removed(): void {
    this.holes++
    if (this.holes > 1024 && this.holes * 2 > this.ids.length) {
      this.ids = this.ids.filter((id) => this.get(id) !== undefined)
      this.holes = 0
    }
  }

  /**
   * Newest first, skipping `offset` matches, at most `limit`; `match` filters. Visits the newest
   * entries only, until it has enough.
   */
  newest(offset: number, limit: number, match: (t: TaskRecord) => boolean = () => true): TaskRecord[] {
    const out: TaskRecord[] = []
    let skip = offset
    for (let i = this.ids.length - 1; i >= 0 && out.length < limit; i--) {
      const t = this.get(this.ids[i]!)
      if (!t || !match(t)) continue
      if (skip > 0) skip--
      else out.push(t)
    }
    return out
  }
}

/**
 * Finished tasks by the time they finished on the master's clock (their last change), oldest
 * first: pruning takes from the front, a snapshot the newest from the back. A finished task never
 * changes again, so an entry leaves only from the front.
 */
export class FinishOrder {
  private ids: string[] = []
  private at: number[] = []
  private head = 0

  get size(): number {
    return this.ids.length - this.head
  }

  add(id: string, finishedAt: number): void {
    // The wall clock can step back: the entry then goes where its time puts it.
    let i = this.ids.length
    while (i > this.head && this.at[i - 1]! > finishedAt) i--
    this.ids.splice(i, 0, id)
    this.at.splice(i, 0, finishedAt)
  }

  /** Adds many at once (a load), sorted together with what is there. */
  addAll(entries: readonly { id: string; finishedAt: number }[]): void {
    if (entries.length === 0) return
    const all: { id: string; finishedAt: number }[] = []
    for (let i = this.head; i < this.ids.length; i++) all.push({ id: this.ids[i]!, finishedAt: this.at[i]! })
    all.push(...entries)
    all.sort((a, b) => a.finishedAt - b.finishedAt)
    this.ids = all.map((e) => e.id)
    this.at = all.map((e) => e.finishedAt)
    this.head = 0
  }

  /** The oldest entry, or null when empty. */
  oldest(): { id: string; finishedAt: number } | null {
    return this.head < this.ids.length ? { id: this.ids[this.head]!, finishedAt: this.at[this.head]! } : null
  }

  shift(): void {
    if (this.head >= this.ids.length) return
    this.head++
    if (this.head > 1024 && this.head * 2 > this.ids.length) {
      this.ids = this.ids.slice(this.head)
      this.at = this.at.slice(this.head)
      this.head = 0
    }
  }

  /** Up to `n` ids, newest finish first. */
  newest(n: number): string[] {
    const out: string[] = []
    for (let i = this.ids.length - 1; i >= this.head && out.length < n; i--) out.push(this.ids[i]!)
    return out
  }
}

/** Submission order: oldest first, ties (the same millisecond) by id. */
export function compareSubmission(a: TaskRecord, b: TaskRecord): number {
  return a.submittedAt - b.submittedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}
