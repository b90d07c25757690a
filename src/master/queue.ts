import * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { callUnary } from '../shared/proto.js'
import type { RunningTaskInfo, TaskRecord, WorkerRecord } from '../shared/types.js'
import type { TaskAckMsg, TaskMsg } from '../shared/wire.js'
import { assignSubject } from '../shared/worker-credential.js'
import type { Counters } from './counters.js'
import type { CompletionReport } from './grpc.js'
import { PendingFinals, type StoreRecovery } from './pending-finals.js'
import type { Registry } from './registry.js'
import { assignFailure, type AssignFailure } from './assign-failure.js'
import { MayStillRun } from './may-still-run.js'
import { PrunedTasks } from './pruned-tasks.js'
import { RequeueTimers } from './requeue-timer.js'
import { candidate, pickWorker, place, type Candidate } from './scheduler.js'
import { movedFrom } from './task-history.js'
import { FINAL_STATES, latestPlacement, placementStarted, type TaskTable } from './tasks.js'
import { WorkerCancels, type WorkerCancelsOptions } from './worker-cancels.js'
import type { WorkerClients } from './worker-clients.js'

export interface QueueOptions {
  tasks: TaskTable
  registry: Registry
  clients: WorkerClients
  log: Logger
  heartbeatTimeoutMs: number
  /**
   * How long the tasks of a worker that went inactive wait before they are requeued (a worker back
   * within it keeps them); 0: at once. Default: heartbeatTimeoutMs.
   */
  requeueAfterMs?: number
  /** Deadline of AssignTask / CancelTask calls. */
  rpcTimeoutMs?: number
  counters?: Counters
  /** Bounds of the CancelTask calls heartbeats lead to (tests shorten them). */
  cancels?: Pick<WorkerCancelsOptions, 'maxInFlightPerWorker' | 'retryAfterMs' | 'unknownLogIntervalMs' | 'now'>
  /**
   * The store answering again after an outage (the journal). A final state the master decides by
   * itself while the store is down (out of attempts, a worker's refusal) waits for it; without
   * one it waits until close.
   */
  storeRecovered?: StoreRecovery
  /** A worker no longer lists a task it may still have run (released from MayStillRun): a drain may be done now. */
  onReleased?: (workerId: string) => void
}

/** Heartbeats in a row that must miss a task before the master believes the worker lost it. */
const MISSES_BEFORE_REQUEUE = 2

const NOTHING: ReadonlySet<string> = new Set()

/**
 * Placements a worker has under way (being written, or its AssignTask not answered yet) before it
 * is offered more. Without a bound, the first worker that joins a long queue is sent all of it at
 * once (a task with no request fits anywhere), and a worker that takes each AssignTask in turn
 * answers the last ones after their deadline; with it, the rest waits in the queue for the next
 * answer or for the next worker to join, which then takes its share.
 */
export const MAX_ASSIGNS_PER_WORKER = 32

/**
 * The queue processor. Event-driven: a drain runs on the next tick after anything that can make a
 * queued task placeable (a task queued, a worker active or changed, a task leaving a worker); there
 * is no polling. A drain walks the queue oldest first and places every task that fits somewhere,
 * so a large task at the head never blocks smaller ones behind it.
 *
 * It also keeps tasks from being lost: tasks on a worker that goes inactive go back to the queue
 * (or fail after max_attempts) once the requeue wait is over, unless it comes back first; those of
 * an unregistered worker at once, and it is told to cancel them; heartbeats reconcile what a worker
 * really runs; completion reports are accepted once, from the worker and attempt the task is on.
 * A worker that comes back still running (or with the result of) the latest attempt of a task
 * that was requeued and has not started elsewhere keeps it: the queued copy is withdrawn.
 */
export class QueueProcessor {
  private readonly rpcTimeoutMs: number
  private scheduled: NodeJS.Immediate | null = null
  private draining = false
  private again = false
  private closed = true
  private startupCheck: NodeJS.Timeout | null = null
  private readonly misses = new Map<string, number>()
  private readonly inflight = new Set<Promise<unknown>>()
  private readonly cancels: WorkerCancels
  /** The master's own final transitions that met a store that was down (see pending-finals.ts). */
  private readonly finals: PendingFinals
  /** Placements a drain made whose 'assigned' write has not landed yet: counted, not placed twice. */
  private readonly reserved = new Map<string, { workerId: string; task: TaskRecord }>()
  /** Placements under way per worker, until their AssignTask is answered (MAX_ASSIGNS_PER_WORKER). */
  private readonly sending = new Map<string, number>()
  /** Tasks whose AssignTask call is under way: not yet expected in the worker's heartbeats. */
  private readonly assigning = new Map<string, InFlightAssign>()
  /** Operator cancels under way (their transition not applied yet): assign() sends nothing for these. */
  private readonly cancelling = new Map<string, { assignSkipped: boolean }>()

  /**
   * Tasks a drain took off a worker (requeued, CancelTask sent), until they are placed again or
   * end: the worker's heartbeats still listing one must not withdraw the queued copy back onto it.
   */
  private readonly evicted = new Map<string, string>()
  /** Queued tasks being withdrawn for the worker that still runs them (one transition at a time). */
  private readonly withdrawing = new Set<string>()
  /** Inactive workers whose tasks wait out --requeue-after. */
  private readonly waits: RequeueTimers
  /** Tasks requeued off a worker that may still run them: not placed until it says (may-still-run.ts). */
  private readonly mayStillRun = new MayStillRun()
  /** Tasks removed by retention, with the workers they were on: a run of one a worker still lists is stopped. */
  private readonly pruned = new PrunedTasks()
  private readonly onTaskPruned = (t: TaskRecord, workers: readonly string[]): void => {
    this.pruned.add(t.id, workers)
    this.evicted.delete(t.id)
    this.misses.delete(t.id)
    this.mayStillRun.delete(t.id)
  }

  private readonly onWorkerUp = (w: WorkerRecord): void => {
    // Back within the wait: it keeps its tasks, and its heartbeats say which it still runs.
    // A task it was failed for while the store was down (out of attempts) is not failed after all.
    this.finals.dropFor(w.id)
    if (this.waits.end(w.id)) this.opts.log.info({ workerId: w.id, tasks: this.opts.tasks.onWorkerCount(w.id) }, `Worker ${w.id} came back within the requeue wait: it keeps its ${this.opts.tasks.onWorkerCount(w.id)} task(s)`)
    this.kick()
  }
  /**
   * A suspect worker was cleared: what waited for it may be placed now. Its channel is made anew:
   * the old one may still be backing off from the failures (grpc-js waits up to a second before
   * it connects again, and fails calls meanwhile), which would make it suspect again at once.
   * Calls already under way on it finish on their connection.
   */
  private readonly onWorkerCleared = (w: WorkerRecord): void => {
    this.opts.clients.drop(w.id)
    this.kick()
  }
  private readonly onWorkerDown = (w: WorkerRecord): void => {
    // Tasks held back for this worker's first heartbeat (heldBack) may go elsewhere now.
    if (this.mayStillRun.hasWorker(w.id)) this.kick()
    const n = this.opts.tasks.onWorkerCount(w.id)
    if (n === 0) return
    if (this.waits.afterMs > 0) this.opts.log.warn({ workerId: w.id, tasks: n, requeueAfterMs: this.waits.afterMs }, `Worker ${w.id} went inactive with ${n} task(s): they are requeued in ${this.waits.afterMs}ms unless it comes back`)
    this.waits.wait(w.id)
  }
  private readonly onWorkerGone = (w: WorkerRecord, info?: { wasActive: boolean }): void => {
    this.waits.end(w.id)
    if (this.mayStillRun.hasWorker(w.id)) this.kick()
    const onIt = this.opts.tasks.onWorkerTasks(w.id)
    this.requeueWorker(w.id, `worker ${w.id} was unregistered`, true, false)
    this.cancels.forget(w.id)
    // An active worker is told to stop them (its token is revoked already, so the result of a run
    // it cancels can no longer land as the task's). An inactive one cannot be reached: if it still
    // runs them, it finds itself unregistered when it comes back and stops calling this master.
    if (info?.wasActive === true && onIt.length > 0) {
      this.track(this.cancels.departed(w, onIt.map((t) => t.id)).finally(() => {
        // Registered again meanwhile: the client is the new record's now.
        if (!this.opts.registry.get(w.id)) this.opts.clients.drop(w.id)
      }))
    } else {
      this.opts.clients.drop(w.id)
    }
  }
  /** Cordoned, uncordoned, drained: an uncordoned worker may take what waits for it. */
  private readonly onWorkerScheduling = (): void => this.kick()
  private readonly onTaskChanged = (t: TaskRecord): void => {
    if (t.status !== 'assigned' && t.status !== 'running') this.misses.delete(t.id)
    if (t.status !== 'queued') this.evicted.delete(t.id)
    if (t.status === 'completed' || t.status === 'failed' || t.status === 'cancelled') {
      this.mayStillRun.delete(t.id)
      // The last task of a worker waiting out its requeue wait finished or was cancelled: nothing is left to wait for.
      if (t.workerId && this.waits.isWaiting(t.workerId) && this.opts.tasks.onWorkerCount(t.workerId) === 0) this.waits.end(t.workerId)
    }
    // New work (queued) or freed capacity (final): a drain may place something. 'running' and
    // 'assigned' change neither.
    if (t.status !== 'assigned' && t.status !== 'running') this.kick()
  }

  constructor(private readonly opts: QueueOptions) {
    this.rpcTimeoutMs = opts.rpcTimeoutMs ?? 5000
    this.finals = new PendingFinals({
      tasks: opts.tasks,
      log: opts.log,
      recovery: opts.storeRecovered,
      // A worker taken for gone that is active again by the time the store answers keeps its tasks.
      stillDue: (req) => req.workerGone === undefined || opts.registry.get(req.workerGone)?.isActive !== true,
    })
    this.cancels = new WorkerCancels({ clients: opts.clients, registry: opts.registry, log: opts.log, rpcTimeoutMs: this.rpcTimeoutMs, counters: opts.counters, ...opts.cancels })
    const requeueAfterMs = opts.requeueAfterMs ?? opts.heartbeatTimeoutMs
    this.waits = new RequeueTimers({
      afterMs: requeueAfterMs,
      onExpired: (workerId) => this.requeueWorker(workerId, requeueAfterMs > 0 ? `worker ${workerId} went inactive and did not come back within ${requeueAfterMs}ms` : `worker ${workerId} went inactive`, true, true),
    })
  }

  start(): void {
    this.closed = false
    const { registry, tasks } = this.opts
    registry.on('worker-active', this.onWorkerUp)
    registry.on('worker-changed', this.onWorkerUp)
    registry.on('worker-cleared', this.onWorkerCleared)
    registry.on('worker-inactive', this.onWorkerDown)
    registry.on('worker-unregistered', this.onWorkerGone)
    registry.on('worker-scheduling', this.onWorkerScheduling)
    tasks.on('task-changed', this.onTaskChanged)
    tasks.on('task-pruned', this.onTaskPruned)
    this.finals.start()
    this.waits.start()
    // After a master restart, tasks that were on workers are reconciled when those workers come
    // back. A worker not back within the heartbeat timeout would have gone inactive then had the
    // master run on, and its tasks wait out the requeue wait from there: past both, they are requeued.
    const restartWaitMs = this.opts.heartbeatTimeoutMs + this.waits.afterMs
    this.startupCheck = setTimeout(() => {
      this.startupCheck = null
      for (const t of tasks.unfinished()) {
        // A worker that came back after the restart and went inactive again waits out its own wait.
        if ((t.status === 'assigned' || t.status === 'running') && t.workerId && registry.get(t.workerId)?.isActive !== true && !this.waits.isWaiting(t.workerId)) {
          this.requeue(t, `worker ${t.workerId} did not come back within ${restartWaitMs}ms of the master's restart`, true, true)
        }
      }
    }, restartWaitMs)
    this.kick()
  }

  /** Schedules a drain on the next tick; many events in one tick make one drain. */
  kick(): void {
    if (this.closed) return
    if (this.draining) {
      this.again = true
      return
    }
    this.scheduled ??= setImmediate(() => {
      this.scheduled = null
      this.drain()
    })
  }

  private drain(): void {
    if (this.closed) return
    this.draining = true
    try {
      const { registry, tasks } = this.opts
      const queued = tasks.queued()
      if (queued.length === 0) return
      const candidates = new Map<string, Candidate>()
      for (const w of registry.values()) {
        // A suspect worker takes nothing until it answers again (worker-cleared drains then); a
        // cordoned one until it is uncordoned (worker-scheduling).
        if (!w.isActive || !w.specs || w.suspect || w.scheduling) continue
        const c = candidate(w)
        for (const t of tasks.onWorkerTasks(w.id)) place(c, t)
        candidates.set(w.id, c)
      }
      for (const r of this.reserved.values()) {
        const c = candidates.get(r.workerId)
        if (c) place(c, r.task)
      }
      // Counted as placed above; offered nothing more until an answer comes back (sent() drains).
      for (const [workerId, n] of this.sending) if (n >= MAX_ASSIGNS_PER_WORKER) candidates.delete(workerId)
      for (const task of queued) {
        if (candidates.size === 0) break
        if (this.reserved.has(task.id) || this.heldBack(task)) continue
        const worker = pickWorker(task, candidates.values())
        if (!worker) continue
        place(candidates.get(worker.id)!, task)
        this.reserved.set(task.id, { workerId: worker.id, task })
        const n = (this.sending.get(worker.id) ?? 0) + 1
        this.sending.set(worker.id, n)
        if (n >= MAX_ASSIGNS_PER_WORKER) candidates.delete(worker.id)
        this.track(this.assign(task, worker))
      }
    } finally {
      this.draining = false
      if (this.again) {
        this.again = false
        this.kick()
      }
    }
  }

  /** One placement: written, sent, answered; it stops counting against its worker once answered. */
  private async assign(task: TaskRecord, worker: WorkerRecord): Promise<void> {
    let counted = true
    const answered = (): void => {
      if (!counted) return
      counted = false
      this.sent(worker.id)
    }
    try {
      await this.sendPlacement(task, worker, answered)
    } finally {
      answered()
    }
  }

  /** A placement of `workerId` no longer under way: it may be offered another task if it was at the bound. */
  private sent(workerId: string): void {
    const n = (this.sending.get(workerId) ?? 1) - 1
    if (n > 0) this.sending.set(workerId, n)
    else this.sending.delete(workerId)
    if (n === MAX_ASSIGNS_PER_WORKER - 1) this.kick()
  }

  private async sendPlacement(task: TaskRecord, worker: WorkerRecord, answered: () => void): Promise<void> {
    const { tasks, log } = this.opts
    const attempt = task.attempt + 1
    let assigned: TaskRecord | null
    try {
      assigned = await tasks.transition(task.id, 'assigned', { workerId: worker.id, attempt, assignedAt: Date.now() }, null, { from: ['queued'] })
    } finally {
      // From here the task counts on its worker through the table (or was not placed at all).
      this.reserved.delete(task.id)
    }
    if (!assigned) return
    // The write took time (it is durable first): a cancel may have come meanwhile, or the task moved.
    // Nothing is sent for a task that is no longer this placement, or whose cancel is under way.
    const cancel = this.cancelling.get(task.id)
    if (cancel || !isPlacement(tasks.get(task.id), worker.id, attempt)) {
      if (cancel) cancel.assignSkipped = true
      log.info({ taskId: task.id, workerId: worker.id, attempt }, `AssignTask of ${task.id} to worker ${worker.id} not sent: the task was cancelled or moved while its assignment was written`)
      return
    }
    // Cordoned (or drained) while the write was under way: the placement was chosen before, and a
    // drain may already count the worker empty. Nothing is sent; back to the queue, no run counted.
    if (this.opts.registry.get(worker.id)?.scheduling) {
      const back = await tasks.transition(task.id, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `worker ${worker.id} was cordoned while the task's assignment was written; requeued`, { workerId: worker.id, attempt, from: ['assigned'] })
      if (back) log.info({ taskId: task.id, workerId: worker.id, attempt }, `AssignTask of ${task.id} to worker ${worker.id} not sent: the worker was cordoned while its assignment was written; requeued`)
      return
    }
    const msg: TaskMsg = {
      task_id: task.id,
      docker_image: task.dockerImage,
      command: task.command,
      req_cpu: task.req.cpu,
      req_memory: task.req.memory,
      req_storage: task.req.storage,
      req_gpu: task.req.gpu,
      target_worker_id: task.targetWorkerId ?? '',
      user_id: task.userId,
      sla_multiplier: 0,
      task_type: '',
      task_name: task.name,
      submitted_at: Math.floor(task.submittedAt / 1000),
      timeout_ms: Math.round(task.timeoutS * 1000),
      env: task.env,
      attempt,
    }
    const guard = { workerId: worker.id, attempt, from: ['assigned'] as const }
    const inflight: InFlightAssign = { workerId: worker.id, cancelAfter: false }
    this.assigning.set(task.id, inflight)
    // Whether the worker may run it now: it said it started it (or runs it already); and whether it
    // said it will not run it at all.
    let mayRun = false
    let refused = false
    try {
      let ack: TaskAckMsg | null = null
      let failure: AssignFailure | null = null
      try {
        const proof = this.opts.clients.proof(worker, 'AssignTask', assignSubject(msg))
        ack = await callUnary<TaskMsg, TaskAckMsg>(this.opts.clients.get(worker.id, worker.address), 'AssignTask', msg, this.rpcTimeoutMs, proof).promise
      } catch (err) {
        failure = assignFailure(err as grpc.ServiceError)
      }
      answered()
      // An answer, whatever it says, proves the master reaches the worker (a call still under way
      // when another one failed may bring it).
      if (ack) this.opts.registry.clearSuspect(worker.id, 'assign')
      if (ack?.success) {
        mayRun = true
        const started = await tasks.transition(task.id, 'running', { startedAt: Date.now() }, null, { ...guard, startsRun: true })
        if (started) log.info({ taskId: task.id, workerId: worker.id, attempt }, `Task ${task.id} assigned to worker ${worker.id} and running (attempt ${attempt})`)
      } else if (ack && (ack.held_attempt ?? 0) > 0) {
        await this.runsAnotherAttempt(task.id, worker, attempt, ack.held_attempt!)
      } else if (ack) {
        // The worker answered and said it cannot run this task at all (e.g. no Docker engine).
        refused = true
        log.warn({ taskId: task.id, workerId: worker.id, reason: ack.message }, `Worker ${worker.id} refused task ${task.id}: ${ack.message}`)
        await this.finals.apply({ id: task.id, to: 'failed', patch: { finishedAt: Date.now() }, reason: `refused by worker ${worker.id}: ${ack.message}`, guard })
      } else if (failure) {
        log.warn({ taskId: task.id, workerId: worker.id, code: failure.code, err: failure.message }, `AssignTask of ${task.id} to worker ${worker.id} failed (${failure.code}): ${failure.message}`)
        if (failure.kind === 'refused') {
          refused = true
          // The worker checked the task and will never run it: failed now, with its reason. Not a
          // run, so no attempt is spent; not retried, since every worker checks the same way.
          await this.finals.apply({ id: task.id, to: 'failed', patch: { finishedAt: Date.now() }, reason: `refused by worker ${worker.id}: ${failure.message}`, guard })
        } else {
          // No usable answer (refused connection, unreachable, deadline, shutting down): the worker
          // is suspect and takes nothing until it answers again, and the task goes back to the queue
          // at once for another worker, without spending an attempt (nothing confirmed it started).
          // The placement's number is never reused: if it did start there, the worker's heartbeats
          // name an attempt that is no longer the task's, and reconciliation cancels it there.
          this.opts.registry.markSuspect(worker.id, `AssignTask failed (${failure.code}: ${failure.message})`, Date.now())
          const back = await tasks.transition(task.id, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `AssignTask to worker ${worker.id} failed (${failure.code}: ${failure.message}); requeued`, guard)
          if (back) log.warn({ taskId: task.id, workerId: worker.id, attempts: back.attempts }, `Task ${task.id} requeued: AssignTask to worker ${worker.id} failed`)
        }
      }
    } catch (err) {
      // The table refused a transition (never the worker's doing): the heartbeats reconcile the task.
      log.error({ taskId: task.id, workerId: worker.id, err }, `Task ${task.id} could not be moved after its AssignTask to worker ${worker.id}`)
    } finally {
      this.assigning.delete(task.id)
      // A cancel that came while the call was under way was held until now, so that its CancelTask
      // cannot overtake the AssignTask; and a task the worker started that is no longer this
      // placement (cancelled, requeued meanwhile) is stopped there. Without an answer it may have
      // started there too; a worker that refused the task has nothing to stop.
      if ((inflight.cancelAfter && !refused) || (mayRun && !isThisRun(tasks.get(task.id), worker.id, attempt))) {
        log.info({ taskId: task.id, workerId: worker.id, attempt }, `Task ${task.id} is no longer worker ${worker.id}'s to run (attempt ${attempt}): CancelTask sent after its AssignTask answered`)
        // Unregistered meanwhile: the cancel goes to the record it was placed with (its proof is
        // made from that record), as an unregistration's own cancels do.
        if (this.opts.registry.get(worker.id) === worker) this.cancels.operator(worker.id, task.id)
        else {
          this.track(this.cancels.departed(worker, [task.id]).finally(() => {
            if (!this.opts.registry.get(worker.id)) this.opts.clients.drop(worker.id)
          }))
        }
      }
    }
  }

  /**
   * Back to the queue, or failed once it has used its attempts. `mayStillRun`: its worker went
   * silent or was dropped, so it may still be running it; the task is then not placed on that
   * worker again until it says it no longer has it (noted before the move, which a drain may follow
   * at once). `workerGone`: decided because its worker is inactive; a final state it leads to while
   * the store is down is dropped if that worker comes back first (pending-finals.ts).
   */
  private requeue(t: TaskRecord, why: string, mayStillRun = false, workerGone = false): void {
    const { tasks, log } = this.opts
    const guard = { workerId: t.workerId, attempt: t.attempt, from: ['assigned', 'running'] as const }
    const giveUp = t.attempts >= t.maxAttempts
    if (mayStillRun && !giveUp && t.workerId) this.mayStillRun.add(t.id, t.workerId)
    const p = giveUp
      ? this.finals.apply({ id: t.id, to: 'failed', patch: { finishedAt: Date.now() }, reason: `${why}; gave up after ${t.attempts} attempt(s)`, guard, workerGone: workerGone && t.workerId ? t.workerId : undefined })
      : tasks.transition(t.id, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `${why}; requeued`, guard)
    this.track(
      p.then(
        (moved) => {
          if (!moved) {
            if (this.mayStillRun.workerOf(t.id) === t.workerId && tasks.get(t.id)?.status !== 'queued') this.mayStillRun.delete(t.id)
            return
          }
          log.warn({ taskId: t.id, workerId: t.workerId, status: moved.status, attempts: t.attempts }, `Task ${t.id} ${moved.status === 'queued' ? 'requeued' : 'failed'}: ${why}`)
        },
        (err: unknown) => log.error({ taskId: t.id, err }, `Task ${t.id} could not be requeued`),
      ),
    )
  }

  private requeueWorker(workerId: string, why: string, mayStillRun: boolean, workerGone: boolean): void {
    for (const t of this.opts.tasks.onWorkerTasks(workerId)) this.requeue(t, why, mayStillRun, workerGone)
  }

  /**
   * The worker refused placement `attempt` because it already has attempt `running` of the task,
   * running or finished with its result on the way (after a master restart this master may not
   * have known): the placement never started. When
   * `running` is the placement just before, on this worker, nothing else has run since and the task
   * takes that run back under its number; otherwise the task goes back to the queue (no run
   * counted), not to be placed there until the worker stops listing the older run, which
   * reconciliation cancels as stale.
   */
  private async runsAnotherAttempt(taskId: string, worker: WorkerRecord, attempt: number, running: number): Promise<void> {
    const { tasks, log } = this.opts
    const t = tasks.get(taskId)
    if (!t) return
    const guard = { workerId: worker.id, attempt, from: ['assigned'] as const }
    if (running === attempt - 1 && previousPlacement(t) === worker.id) {
      const earlier = { ...t, history: t.history.slice(0, -1) }
      const times = placementTimes(earlier, worker.id)
      // That run is counted now if its start was never confirmed (its own AssignTask got no answer).
      const back = await tasks.transition(taskId, 'running', { attempt: running, startedAt: times.startedAt ?? Date.now() }, `worker ${worker.id} still runs attempt ${running}: it is kept, attempt ${attempt} was never started`, { ...guard, startsRun: !placementStarted(earlier) })
      if (back) log.info({ taskId, workerId: worker.id, attempt: running, refused: attempt }, `Task ${taskId} keeps attempt ${running} on worker ${worker.id}, which still runs it (attempt ${attempt} was not started)`)
      return
    }
    this.mayStillRun.add(taskId, worker.id)
    const moved = await tasks.transition(taskId, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `worker ${worker.id} runs attempt ${running} of it, not attempt ${attempt}; requeued`, guard)
    if (moved) log.warn({ taskId, workerId: worker.id, attempt, running }, `Task ${taskId} requeued: worker ${worker.id} runs its attempt ${running}, not the attempt ${attempt} it was given`)
    else if (tasks.get(taskId)?.status !== 'queued') this.mayStillRun.delete(taskId)
  }

  /**
   * A queued task whose previous worker may still run it and is active again: not placed anywhere
   * until that worker's next heartbeat says whether it does (it is then withdrawn, or released).
   * While that worker is inactive it is no candidate, so the task may start elsewhere.
   */
  private heldBack(task: TaskRecord): boolean {
    const workerId = this.mayStillRun.workerOf(task.id)
    return workerId !== undefined && this.opts.registry.get(workerId)?.isActive === true
  }

  /** A worker's stored drain says nothing may run there any more: drained, or its deadline passed. */
  private drainDue(workerId: string): boolean {
    const d = this.opts.registry.get(workerId)?.scheduling?.drain
    return d != null && (d.drainedAt !== null || (d.deadline !== null && d.deadline <= Date.now()))
  }

  /** What a heartbeat released may be placed now, and a drain waiting for the worker to let go may be done. */
  private released(workerId: string): void {
    this.kick()
    this.opts.onReleased?.(workerId)
  }

  /**
   * Whether something may still land on or run on the worker: a placement whose 'assigned' write is
   * under way, or (while it is active) a task requeued off it that it still lists. A drain is done
   * only once there is none (drains.ts).
   */
  busyOn(workerId: string): boolean {
    for (const r of this.reserved.values()) if (r.workerId === workerId) return true
    return this.opts.registry.get(workerId)?.isActive === true && this.mayStillRun.hasWorker(workerId)
  }

  /**
   * The worker of a queued task's latest placement came back still running that attempt: the
   * queued copy is withdrawn and the task is running there again under the same attempt (no new
   * attempt, no run counted, nothing killed).
   */
  private withdraw(t: TaskRecord, workerId: string): void {
    const { tasks, log } = this.opts
    if (this.withdrawing.has(t.id)) return
    this.withdrawing.add(t.id)
    const times = placementTimes(t, workerId)
    const why = `worker ${workerId} came back still running attempt ${t.attempt}: its queued copy is withdrawn`
    this.track(
      tasks
        .transition(t.id, 'running', { workerId, assignedAt: times.assignedAt, startedAt: times.startedAt }, why, { workerId, attempt: t.attempt, from: ['queued'], resumes: true })
        .then(
          (moved) => {
            if (!moved) return
            this.mayStillRun.delete(t.id)
            this.misses.delete(t.id)
            log.info({ taskId: t.id, workerId, attempt: t.attempt, attempts: moved.attempts }, `Task ${t.id} is running on worker ${workerId} again (attempt ${t.attempt}): ${why}`)
          },
          (err: unknown) => log.error({ taskId: t.id, workerId, err }, `Task ${t.id} could not be withdrawn from the queue`),
        )
        .finally(() => this.withdrawing.delete(t.id)),
    )
  }

  /**
   * What a heartbeat says the worker runs. A task the master placed there but the worker no longer
   * lists (twice in a row) is requeued; a task the worker runs that this master placed on it but
   * that is no longer its to run (requeued, moved elsewhere, finished, an older attempt) is
   * cancelled there, at most once per retry interval (WorkerCancels), and so is one removed by
   * retention that was placed there (PrunedTasks); a task still assigned (its AssignTask answer
   * lost) that the worker runs is running. Ids this master never placed on that worker are the
   * worker's business (another master's, or made up): counted and logged, nothing sent.
   */
  onHeartbeat(workerId: string, listed: RunningTaskInfo[]): void {
    if (this.closed) return
    const { tasks } = this.opts
    // Most heartbeats, from most workers, list nothing and have nothing to reconcile.
    if (listed.length === 0) {
      this.cancels.listed(workerId, null)
      if (this.mayStillRun.hasWorker(workerId) && this.mayStillRun.listed(workerId, NOTHING) > 0) this.released(workerId)
      if (tasks.onWorkerCount(workerId) === 0) return
    }
    const seen = new Set<string>()
    let unknown = 0
    let example = ''
    for (const r of listed) {
      seen.add(r.taskId)
      const t = tasks.get(r.taskId)
      const mine = t && t.workerId === workerId && (t.status === 'assigned' || t.status === 'running') && (r.attempt === 0 || r.attempt === t.attempt)
      if (mine) {
        this.misses.delete(t.id)
        if (this.finals.size > 0) this.finals.dropTask(t.id, workerId)
        if (t.status === 'assigned' && r.status === 'running') {
          this.track(tasks.transition(t.id, 'running', { startedAt: t.startedAt ?? Date.now() }, null, { workerId, attempt: t.attempt, from: ['assigned'], startsRun: true }))
        }
      } else if (r.status === 'running') {
        if (t && t.status === 'queued' && latestPlacement(t) === workerId && (r.attempt === 0 || r.attempt === t.attempt) && this.evicted.get(t.id) !== workerId) {
          if (this.drainDue(workerId)) {
            // Not onto a worker that is drained or past its drain deadline: `evicted` is memory
            // only, and after a master restart (or a requeue while it was away) the stored drain
            // says the run must stop. It is cancelled as stale, and the task waits until the
            // worker no longer lists it.
            if (this.mayStillRun.workerOf(t.id) === undefined) this.mayStillRun.add(t.id, workerId)
            this.cancels.stale(workerId, t.id)
          } else {
            // Requeued while this worker was away, and started nowhere since: this run is kept.
            this.withdraw(t, workerId)
          }
        } else if (t && t.status === 'assigned' && this.assigning.has(t.id) && wasPlacedOn(t, workerId)) {
          // Placed again (elsewhere, or here under a newer attempt), its AssignTask not answered
          // yet: that answer decides which run stays. Elsewhere: whether it started there, and a
          // later heartbeat acts on it (started: this one is cancelled). Here: the worker refuses
          // the newer attempt and names this one (held_attempt), which the task takes back.
        } else if (t ? wasPlacedOn(t, workerId) : this.pruned.size > 0 && this.pruned.wasPlacedOn(r.taskId, workerId)) {
          // Ours once on this worker, and no longer its to run (or removed by retention since).
          this.cancels.stale(workerId, r.taskId)
        } else {
          if (unknown === 0) example = r.taskId
          unknown++
        }
      }
    }
    if (unknown > 0) this.cancels.unknown(workerId, unknown, example)
    this.cancels.listed(workerId, seen)
    // What it no longer lists it no longer runs: such tasks may be placed again (on it too).
    if (this.mayStillRun.hasWorker(workerId) && this.mayStillRun.listed(workerId, seen) > 0) this.released(workerId)
    for (const t of tasks.onWorkerTasks(workerId)) {
      // An 'assigned' task whose AssignTask is not under way here was assigned by a master that
      // died before it heard back: the heartbeat is the only word on whether it started.
      if (seen.has(t.id) || this.assigning.has(t.id)) continue
      const n = (this.misses.get(t.id) ?? 0) + 1
      this.misses.set(t.id, n)
      if (n >= MISSES_BEFORE_REQUEUE) {
        this.misses.delete(t.id)
        this.requeue(t, `worker ${workerId} no longer runs it`)
      }
    }
  }

  /**
   * A completion report, whose worker_id the gRPC side has bound to the caller's credentials.
   * Applied only to an attempt the master gave that worker: the task must be assigned to it or
   * running there, and `attempt` must be that attempt. A report without one (CloudAI's workers
   * send none: 0) is read as "the attempt this worker has now", never as "any attempt".
   * Returns true once it is recorded (durable), now or by an earlier delivery of the same report;
   * false when it was stale (ignored).
   * @throws CLOUDAI_STORE_DEGRADED while the store cannot take it (nothing changed; the worker keeps it and reports it again)
   */
  async onCompletion(r: CompletionReport): Promise<boolean> {
    // Decided from the task as read now; a transition of another caller (a drain placing the task,
    // a withdrawal) may land first and make that decision stale: then it is made again, from the
    // task as it is, so a result that still counts is never answered "stale" and dropped.
    for (let round = 0; ; round++) {
      const read = this.opts.tasks.get(r.task_id)
      const applied = await this.completion(r, read)
      if (applied || round === 2 || this.opts.tasks.get(r.task_id) === read) return applied
    }
  }

  private async completion(r: CompletionReport, t: TaskRecord | undefined): Promise<boolean> {
    const { tasks, log } = this.opts
    if (t && isRecorded(t, r)) return true
    const onThisWorker = t !== undefined && t.workerId === r.worker_id && (t.status === 'assigned' || t.status === 'running')
    const attempt = r.attempt > 0 ? r.attempt : t?.attempt
    if (t !== undefined && !onThisWorker && r.status !== 'cancelled') {
      const earlier = await this.earlierRunResult(t, r)
      if (earlier !== null) return earlier
    }
    if (!onThisWorker || attempt !== t.attempt) {
      log.info({ taskId: r.task_id, workerId: r.worker_id, attempt: r.attempt, current: t ? { status: t.status, workerId: t.workerId, attempt: t.attempt } : null }, `Ignored a stale completion report for task ${r.task_id} from worker ${r.worker_id}`)
      return false
    }
    const status = r.status
    if (status === 'cancelled') {
      // A task this master cancelled is final here before its worker says so, so a run reported
      // cancelled while the task is still on it was stopped by the worker itself (its shutdown,
      // a restart): no result, and no reason to give up on the task. It goes back to the queue
      // (or fails once it has used its attempts), its run counted.
      const why = `worker ${r.worker_id} stopped it (${r.reason || 'cancelled'})`
      const from: readonly ('assigned' | 'running')[] = ['assigned', 'running']
      const moved = t.attempts + (t.status === 'assigned' ? 1 : 0) >= t.maxAttempts
        ? // Final: durable before it is answered, as any completion (the worker reports it again while the store is down).
          await tasks.transition(t.id, 'failed', { finishedAt: Date.now() }, `${why}; gave up after ${t.attempts + (t.status === 'assigned' ? 1 : 0)} attempt(s)`, { workerId: r.worker_id, attempt, from, startsRun: true })
        : await tasks.transition(t.id, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `${why}; requeued`, { workerId: r.worker_id, attempt, from, startsRun: true })
      if (moved) log.warn({ taskId: t.id, workerId: r.worker_id, attempt, status: moved.status }, `Task ${t.id} ${moved.status === 'queued' ? 'requeued' : 'failed'}: ${why}`)
      return moved !== null
    }
    const done = await tasks.transition(
      t.id,
      status,
      {
        // CloudAI's TaskResult has no exit code: its "success" is an exit 0, its failures say nothing.
        exitCode: r.has_exit_code ? r.exit_code : status === 'completed' ? 0 : null,
        logsTail: r.logs,
        logLines: r.log_lines ? r.log_lines : undefined,
        startedAt: r.started_at > 0 ? r.started_at : t.startedAt,
        finishedAt: r.finished_at > 0 ? r.finished_at : Date.now(),
      },
      status === 'completed' ? null : r.reason || r.status,
      { workerId: r.worker_id, attempt, from: ['assigned', 'running'], startsRun: true },
    )
    if (done) log.info({ taskId: t.id, workerId: r.worker_id, status, exitCode: done.exitCode, durationMs: r.duration_ms }, `Task ${t.id} ${status} on worker ${r.worker_id}`)
    // null: it moved meanwhile, perhaps by this very report delivered twice at once.
    return done !== null || isRecorded(tasks.require(t.id), r)
  }

  /**
   * A result from a worker that came back, of an attempt the task was taken from while it was away
   * (requeued), when that attempt has not been overtaken by a run that started elsewhere: it is the
   * task's result, and a finished attempt is never run again. That holds while the task is queued
   * with that attempt as its latest placement, or placed once more elsewhere (the next attempt) but
   * not confirmed started there: that placement is then cancelled on its worker. A cancelled run is
   * no result (it was stopped: by this master, or by its worker's shutdown): the queued copy goes on.
   * Null when the report is not such a result; else whether it was applied.
   */
  private async earlierRunResult(t: TaskRecord, r: CompletionReport): Promise<boolean | null> {
    const { tasks, log } = this.opts
    let guard: Parameters<TaskTable['transition']>[4]
    let overtaken: string | null = null
    if (t.status === 'queued' && latestPlacement(t) === r.worker_id && (r.attempt === 0 || r.attempt === t.attempt)) {
      guard = { workerId: r.worker_id, attempt: t.attempt, from: ['queued'], resumes: true }
    } else if (t.status === 'assigned' && t.workerId !== null && t.workerId !== r.worker_id && r.attempt > 0 && r.attempt === t.attempt - 1 && previousPlacement(t) === r.worker_id) {
      // The earlier placement's start may never have been confirmed (its AssignTask got no answer): its run counts now.
      guard = { workerId: t.workerId, attempt: t.attempt, from: ['assigned'], startsRun: !placementStarted({ history: t.history.slice(0, -1) }) }
      overtaken = t.workerId
    } else {
      return null
    }
    const status = r.status
    const done = await tasks.transition(
      t.id,
      status,
      {
        workerId: r.worker_id,
        attempt: r.attempt > 0 ? r.attempt : t.attempt,
        exitCode: r.has_exit_code ? r.exit_code : status === 'completed' ? 0 : null,
        logsTail: r.logs,
        logLines: r.log_lines ? r.log_lines : undefined,
        startedAt: r.started_at > 0 ? r.started_at : t.startedAt,
        finishedAt: r.finished_at > 0 ? r.finished_at : Date.now(),
      },
      status === 'completed' ? `attempt ${r.attempt || t.attempt} on worker ${r.worker_id} finished while the task waited to run again: its result is kept` : r.reason || r.status,
      guard,
    )
    if (!done) return null
    this.mayStillRun.delete(t.id)
    if (overtaken !== null) {
      const inflight = this.assigning.get(t.id)
      // Its AssignTask is under way: the CancelTask goes once that call settles (assign()).
      if (inflight && inflight.workerId === overtaken) inflight.cancelAfter = true
      else this.cancels.operator(overtaken, t.id)
    }
    log.info({ taskId: t.id, workerId: r.worker_id, attempt: done.attempt, status, exitCode: done.exitCode, overtaken }, `Task ${t.id} ${status} on worker ${r.worker_id}: the result of attempt ${done.attempt}, reported after the task was requeued, is its result${overtaken ? ` (its placement on worker ${overtaken} is cancelled)` : ''}`)
    return true
  }

  /**
   * Operator cancel: final at once (persisted); the process is stopped on its worker. What the
   * task was on is read from the transition itself (the state it moved from), not from `t`, which
   * may be older: an assignment written meanwhile must not go without its CancelTask.
   */
  async cancel(t: TaskRecord, reason: string): Promise<TaskRecord | null> {
    const own = !this.cancelling.has(t.id)
    const mark = this.cancelling.get(t.id) ?? { assignSkipped: false }
    this.cancelling.set(t.id, mark)
    let done: TaskRecord | null
    try {
      done = await this.opts.tasks.transition(t.id, 'cancelled', { finishedAt: Date.now() }, reason, { from: ['queued', 'assigned', 'running'] })
    } finally {
      if (own) this.cancelling.delete(t.id)
    }
    if (!done) return null
    const from = movedFrom(done)
    if (from?.workerId && (from.status === 'assigned' || from.status === 'running') && !mark.assignSkipped) {
      const inflight = this.assigning.get(t.id)
      // Its AssignTask is under way: CancelTask goes once that call settles (assign()).
      if (inflight && inflight.workerId === from.workerId) inflight.cancelAfter = true
      else this.cancels.operator(from.workerId, t.id)
    }
    return done
  }

  /**
   * A drain's deadline (or --force): every task on the worker goes back to the queue without
   * spending an attempt (the master stopped the run, not the task), and an active worker is told to
   * cancel it (CancelTask: SIGTERM, its grace, SIGKILL). The task is held back from placement until
   * the worker no longer lists it (MayStillRun), and its queued copy is never withdrawn back onto
   * that worker (evicted): a run that finished before the cancel landed is the task's result (its
   * report is taken as a returning worker's, earlierRunResult), one that was stopped reports
   * 'cancelled', which is stale; either way the task runs once more at most, wherever it runs next.
   * An inactive worker is left alone (nothing requeued). Resolves with the ids requeued.
   */
  async evict(workerId: string, why: string): Promise<string[]> {
    const { tasks, registry, log } = this.opts
    const moved: string[] = []
    // An inactive worker cannot be told to stop: requeued now, a task could start elsewhere while it
    // still runs there. Its tasks take the inactive path (--requeue-after, or its return), and the
    // drain evicts once it is active again (drains.ts).
    if (registry.get(workerId)?.isActive !== true) return moved
    await Promise.all(tasks.onWorkerTasks(workerId).map(async (t) => {
      this.mayStillRun.add(t.id, workerId)
      this.evicted.set(t.id, workerId)
      let back: TaskRecord | null = null
      try {
        back = await tasks.transition(t.id, 'queued', { workerId: null, assignedAt: null, startedAt: null }, `${why}; requeued`, { workerId, attempt: t.attempt, from: ['assigned', 'running'], refundsRun: true })
      } finally {
        // It moved first: finished or cancelled, nothing to hold; queued (by another eviction of it,
        // or its worker's own 'cancelled' report), the marks stay: it may still run there.
        if (!back && tasks.get(t.id)?.status !== 'queued') {
          if (this.evicted.get(t.id) === workerId) this.evicted.delete(t.id)
          if (this.mayStillRun.workerOf(t.id) === workerId) this.mayStillRun.delete(t.id)
        }
      }
      if (!back) return
      moved.push(t.id)
      log.warn({ taskId: t.id, workerId, attempt: t.attempt, attempts: back.attempts }, `Task ${t.id} requeued off worker ${workerId} (no attempt counted): ${why}`)
      if (registry.get(workerId)?.isActive !== true) return
      const inflight = this.assigning.get(t.id)
      // Its AssignTask is under way: CancelTask goes once that call settles (assign()).
      if (inflight && inflight.workerId === workerId) inflight.cancelAfter = true
      else this.cancels.operator(workerId, t.id)
    }))
    return moved
  }

  /**
   * Keeps an operation for close() and handles its failure: a rejection left unhandled would end
   * the process without its ordered shutdown. State stays consistent without it: a task whose
   * 'assigned' write failed is placed again by the next drain, one left 'assigned' or 'running' is
   * settled by the worker's heartbeats.
   */
  private track(p: Promise<unknown>): void {
    const settled: Promise<void> = p
      .then(
        () => undefined,
        (err: unknown) => this.opts.log.error({ err }, 'A queue operation (assign, requeue or heartbeat reconciliation) failed; the next drain or heartbeat retries it'),
      )
      .finally(() => this.inflight.delete(settled))
    this.inflight.add(settled)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const { registry, tasks } = this.opts
    registry.off('worker-active', this.onWorkerUp)
    registry.off('worker-changed', this.onWorkerUp)
    registry.off('worker-cleared', this.onWorkerCleared)
    registry.off('worker-inactive', this.onWorkerDown)
    registry.off('worker-unregistered', this.onWorkerGone)
    registry.off('worker-scheduling', this.onWorkerScheduling)
    tasks.off('task-changed', this.onTaskChanged)
    tasks.off('task-pruned', this.onTaskPruned)
    if (this.scheduled) clearImmediate(this.scheduled)
    if (this.startupCheck) clearTimeout(this.startupCheck)
    this.scheduled = this.startupCheck = null
    this.waits.close()
    await Promise.allSettled([...this.inflight])
    await this.finals.close()
    await this.cancels.close()
    this.opts.clients.close()
  }
}

/**
 * A redelivery of a report already recorded (its answer was lost, or the worker restarted): the
 * task ended that way, on that worker, at that attempt.
 */
function isRecorded(t: TaskRecord, r: CompletionReport): boolean {
  return FINAL_STATES.has(t.status) && t.status === r.status && t.workerId === r.worker_id && (r.attempt > 0 ? r.attempt : t.attempt) === t.attempt
}

/** Whether this master ever assigned the task to the worker (any attempt): its worker now, or its history says so. */
function wasPlacedOn(t: TaskRecord, workerId: string): boolean {
  if (t.workerId === workerId) return true
  for (const h of t.history) if (h.status === 'assigned' && h.workerId === workerId) return true
  return false
}

interface InFlightAssign {
  workerId: string
  /** An operator cancelled the task while the call was under way: CancelTask once it settles. */
  cancelAfter: boolean
}

/** Whether `t` is still the placement made on `workerId` with this attempt number, not yet running elsewhere. */
function isPlacement(t: TaskRecord | undefined, workerId: string, attempt: number): boolean {
  return t !== undefined && t.status === 'assigned' && t.workerId === workerId && t.attempt === attempt
}

/** Whether a run of this attempt on `workerId` is still the task's (running, or finished by that run). */
function isThisRun(t: TaskRecord | undefined, workerId: string, attempt: number): boolean {
  return t !== undefined && t.workerId === workerId && t.attempt === attempt && t.status !== 'cancelled' && t.status !== 'queued'
}

/** The worker of the placement before the latest one (attempt `attempt - 1`), if any. */
function previousPlacement(t: TaskRecord): string | null {
  let seen = 0
  for (let i = t.history.length - 1; i >= 0; i--) {
    const h = t.history[i]!
    if (h.status !== 'assigned') continue
    if (++seen === 2) return h.workerId
  }
  return null
}

/** When the task's latest placement on `workerId` was made and confirmed started, from its history. */
function placementTimes(t: TaskRecord, workerId: string): { assignedAt: number | null; startedAt: number | null } {
  let startedAt: number | null = null
  for (let i = t.history.length - 1; i >= 0; i--) {
    const h = t.history[i]!
    if (h.status === 'running' && h.workerId === workerId) startedAt = h.at
    if (h.status === 'assigned') return { assignedAt: h.at, startedAt: startedAt ?? h.at }
  }
  return { assignedAt: null, startedAt: null }
}
