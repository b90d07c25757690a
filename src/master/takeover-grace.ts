import type { CompletionReport, TaskHooks } from './grpc.js'
import type { RunningTaskInfo } from '../shared/types.js'

/**
 * The heartbeats' task side (the queue's reconcile) held back for one heartbeat timeout after a
 * takeover (issue 19). A worker whose task finished while no master led has its result in its
 * outbox, and its first heartbeats to the new leader no longer list the task: reconciled at once,
 * the task would be requeued (twice unlisted) before the result arrives. Within the grace nothing
 * is requeued from heartbeats; results are taken as always, and the reconcile resumes after it,
 * when every worker has had a heartbeat timeout to deliver what it holds. Liveness is untouched:
 * the registry still takes every heartbeat.
 */
export class TakeoverGrace implements TaskHooks {
  private until = 0

  constructor(
    private readonly inner: TaskHooks,
    private readonly graceMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A takeover now: the reconcile waits for graceMs. */
  begin(): void {
    this.until = this.now() + this.graceMs
  }

  onHeartbeat(workerId: string, running: RunningTaskInfo[]): void {
    // One comparison on the heartbeat path; `until` is 0 outside a takeover's grace.
    if (this.until !== 0) {
      if (this.now() < this.until) return
      this.until = 0
    }
    this.inner.onHeartbeat(workerId, running)
  }

  onCompletion(result: CompletionReport): Promise<boolean> {
    return this.inner.onCompletion(result)
  }
}
