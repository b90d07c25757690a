// Tasks removed by retention, remembered for a while with the workers they were placed on. A
// worker may still list such a task in its heartbeats: a stray run (an older attempt nobody
// stopped, a worker back after a long absence). Without this the pruned id would be unknown, and
// an unknown id is the worker's business (another master's): the run would never be stopped. Bounded:
// the newest `limit` removals are kept, the oldest dropped first; each costs an id and a few worker ids.

export const PRUNED_TASKS_KEPT = 10_000

export class PrunedTasks {
  /** task id -> the workers it was placed on; Map order is removal order, oldest first. */
  private readonly byTask = new Map<string, readonly string[]>()

  constructor(private readonly limit = PRUNED_TASKS_KEPT) {}

  get size(): number {
    return this.byTask.size
  }

  /** A task was pruned; `workers`: those it was ever placed on (none: nothing to remember). */
  add(taskId: string, workers: readonly string[]): void {
    if (workers.length === 0 || this.limit <= 0) return
    this.byTask.delete(taskId)
    this.byTask.set(taskId, workers)
    while (this.byTask.size > this.limit) this.byTask.delete(this.byTask.keys().next().value!)
  }

  /** Whether the task, pruned, was ever placed on this worker. */
  wasPlacedOn(taskId: string, workerId: string): boolean {
    return this.byTask.get(taskId)?.includes(workerId) === true
  }

  clear(): void {
    this.byTask.clear()
  }
}
