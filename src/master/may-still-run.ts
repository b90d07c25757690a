// Tasks requeued off a worker that may still be running them: it went silent past the requeue
// wait, it was unregistered, or it answered that it runs another attempt (TaskAck.held_attempt).
// An AssignTask that got no answer at all does not hold its task back: a worker killed with -9
// would keep its tasks from every other worker until the heartbeat timeout; if that run did start,
// its heartbeat names an attempt that is no longer the task's and it is cancelled there. Until that worker's heartbeats show it
// no longer has such a task, the task is not placed on that worker again (a second attempt next
// to the first, which the worker refuses anyway), and while that worker is active it is placed
// nowhere: that worker's next heartbeat, within one interval, says whether it still runs it (the
// queued copy is then withdrawn and the run kept), holds its result (reported right after), or has
// nothing (the task is placed as usual). Memory only: after a master restart the worker's answer
// to AssignTask names an attempt it has (TaskAck.held_attempt), which does the same, later.

export class MayStillRun {
  /** task id -> the worker that may still run it. */
  private readonly byTask = new Map<string, string>()
  private readonly byWorker = new Map<string, Set<string>>()

  get size(): number {
    return this.byTask.size
  }

  add(taskId: string, workerId: string): void {
    this.delete(taskId)
    this.byTask.set(taskId, workerId)
    let set = this.byWorker.get(workerId)
    if (!set) this.byWorker.set(workerId, (set = new Set()))
    set.add(taskId)
  }

  /** The worker that may still run the task, if any. */
  workerOf(taskId: string): string | undefined {
    return this.byTask.get(taskId)
  }

  delete(taskId: string): boolean {
    const workerId = this.byTask.get(taskId)
    if (workerId === undefined) return false
    this.byTask.delete(taskId)
    const set = this.byWorker.get(workerId)
    set?.delete(taskId)
    if (set?.size === 0) this.byWorker.delete(workerId)
    return true
  }

  /** Whether any task may still run on the worker (no allocation: the heartbeat path asks it). */
  hasWorker(workerId: string): boolean {
    return this.byWorker.has(workerId)
  }

  /**
   * A heartbeat of `workerId` lists these task ids (running, or a result not yet delivered): the
   * tasks it no longer lists are forgotten. Returns how many were.
   */
  listed(workerId: string, ids: ReadonlySet<string>): number {
    const set = this.byWorker.get(workerId)
    if (!set) return 0
    let released = 0
    for (const taskId of [...set]) {
      if (ids.has(taskId)) continue
      this.delete(taskId)
      released++
    }
    return released
  }
}
