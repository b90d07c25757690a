import type { Logger } from '../shared/log.js'
import { isCloudaiError } from '../shared/errors.js'
import type { TaskRecord } from '../shared/types.js'
import type { TaskPatch, TaskTable, TransitionGuard } from './tasks.js'

/**
 * How the master hears that the store answers again: the journal's `recovered` event. (A final
 * write that failed marked the store down at once, so `recovered` always comes after it.)
 */
export interface StoreRecovery {
  on(event: 'recovered', listener: () => void): unknown
  off(event: 'recovered', listener: () => void): unknown
}

/** A final transition the master decided by itself: a task out of attempts, a worker's refusal. */
export interface FinalRequest {
  id: string
  to: 'failed' | 'cancelled'
  patch: TaskPatch
  reason: string
  guard: TransitionGuard
  /**
   * Decided because the task's worker was taken for gone (out of attempts when its tasks were
   * requeued): the worker it was on. Such a decision is wrong once that worker shows it is there
   * (active again, or a heartbeat of it lists the task): dropped then (dropFor, dropTask), and
   * checked again before a retry (stillDue).
   */
  workerGone?: string
}

/**
 * Final transitions the master makes on its own, kept when they meet a store that is down.
 *
 * A final state is applied only once the store holds it (TaskTable.transition), so while the store
 * is down such a transition does not happen and the task keeps its state. An operator or a worker
 * asking for one is told so and asks again; nobody asks again for the master's own decisions, so
 * they wait here, one per task (the latest wins), and are tried again each time the store answers
 * after an outage: never in a loop of their own, never dropped. A guard that no longer holds by
 * then (the worker came back and reported, an operator cancelled) drops the request, as it would
 * have lost the race. A decision taken because the task's worker seemed gone (workerGone) is
 * dropped when that worker shows it is there: it comes back, or its heartbeat lists the task (the
 * queue calls dropFor / dropTask), and before each retry `stillDue` is asked again: without that, a
 * store that recovers after the worker came back would fail a task that runs fine, and the
 * worker's next heartbeat would have its live run cancelled as stale.
 */
export class PendingFinals {
  private readonly pending = new Map<string, FinalRequest>()
  private readonly inflight = new Set<Promise<unknown>>()
  private started = false
  private readonly onRecovered = (): void => this.retry()

  constructor(private readonly opts: { tasks: TaskTable; log: Logger; recovery?: StoreRecovery; stillDue?: (req: FinalRequest) => boolean }) {}

  start(): void {
    if (this.started) return
    this.started = true
    this.opts.recovery?.on('recovered', this.onRecovered)
  }

  /** Requests waiting for the store. */
  get size(): number {
    return this.pending.size
  }

  /**
   * Makes the transition now, or keeps it for when the store answers. Resolves with the task as it
   * moved, null when the guard did not hold or it is kept; rejects only on an unexpected error.
   */
  async apply(req: FinalRequest): Promise<TaskRecord | null> {
    try {
      return await this.opts.tasks.transition(req.id, req.to, req.patch, req.reason, req.guard)
    } catch (err) {
      if (!isCloudaiError(err) || err.code !== 'CLOUDAI_STORE_DEGRADED') throw err
      const again = this.pending.has(req.id)
      this.pending.set(req.id, req)
      const fields = { taskId: req.id, status: req.to, reason: req.reason, waiting: this.pending.size }
      if (again) this.opts.log.debug(fields, `Task ${req.id} still waits for the store`)
      else this.opts.log.warn(fields, `Task ${req.id} is not ${req.to} yet: the store is not answering, so it keeps its state until the store takes it (${req.reason})`)
      return null
    }
  }

  /**
   * The worker is there after all (active again): every request decided because it seemed gone is
   * dropped. Returns how many were.
   */
  dropFor(workerId: string): number {
    if (this.pending.size === 0) return 0
    let dropped = 0
    for (const req of [...this.pending.values()]) {
      if (req.workerGone !== workerId) continue
      this.drop(req, `worker ${workerId} is active again`)
      dropped++
    }
    return dropped
  }

  /** A heartbeat of `workerId` lists the task: a request decided because that worker seemed gone is dropped. */
  dropTask(taskId: string, workerId: string): boolean {
    const req = this.pending.get(taskId)
    if (!req || req.workerGone !== workerId) return false
    this.drop(req, `worker ${workerId} still runs it`)
    return true
  }

  private drop(req: FinalRequest, why: string): void {
    this.pending.delete(req.id)
    this.opts.log.info({ taskId: req.id, workerId: req.workerGone, status: req.to }, `Task ${req.id} is no longer to be ${req.to}: ${why} (${req.reason})`)
  }

  /** Tries every waiting request once (the store answers again); one that fails again waits again. */
  retry(): void {
    if (!this.started || this.pending.size === 0) return
    const due = [...this.pending.values()]
    this.pending.clear()
    const { log } = this.opts
    for (const req of due) {
      if (this.opts.stillDue && !this.opts.stillDue(req)) {
        this.drop(req, `worker ${req.workerGone} is there again`)
        continue
      }
      const p: Promise<void> = this.apply(req)
        .then(
          (moved) => {
            if (moved) log.warn({ taskId: req.id, status: moved.status, reason: req.reason }, `Task ${req.id} ${moved.status} now that the store answers: ${req.reason}`)
            else if (!this.pending.has(req.id)) log.info({ taskId: req.id, status: req.to }, `Task ${req.id} moved on while it waited for the store; not ${req.to}`)
          },
          (err: unknown) => log.error({ taskId: req.id, err }, `Task ${req.id} could not be made ${req.to}`),
        )
        .finally(() => this.inflight.delete(p))
      this.inflight.add(p)
    }
  }

  /** Stops listening and waits for retries under way; what still waits is dropped with the process (the store never held it). */
  async close(): Promise<void> {
    if (!this.started) return
    this.started = false
    this.opts.recovery?.off('recovered', this.onRecovered)
    await Promise.allSettled([...this.inflight])
    if (this.pending.size > 0) {
      this.opts.log.warn({ waiting: this.pending.size }, `${this.pending.size} task(s) were still waiting for the store to take their final state; the next start decides again (their workers are reconciled or they are requeued)`)
    }
    this.pending.clear()
  }
}
