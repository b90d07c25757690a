import type { Logger } from '../shared/log.js'
import type { TaskRecord, WorkerRecord } from '../shared/types.js'
import { CloudaiError } from '../shared/errors.js'
import { formatLongDuration } from '../shared/duration.js'
import type { WorkerDrain, WorkerScheduling } from '../shared/worker-scheduling.js'
import type { Registry } from './registry.js'
import type { TaskTable } from './tasks.js'

export interface DrainsOptions {
  registry: Registry
  tasks: TaskTable
  /** Requeues every task on an active worker without counting an attempt and cancels it there (QueueProcessor.evict). */
  evict: (workerId: string, why: string) => Promise<string[]>
  /**
   * Whether something may still land or run on the worker although the task table has nothing
   * there: a placement being written, a task requeued off it that it still lists (QueueProcessor.busyOn).
   */
  busyOn?: (workerId: string) => boolean
  log: Logger
  now?: () => number
}

/**
 * Cordons and drains. A cordoned worker takes no new placement (the scheduler skips it; a task that
 * targets it waits). A drain cordons, lets what runs there finish, and at its deadline (at once with
 * `force`) requeues what is left without spending an attempt (QueueProcessor.evict); once nothing is
 * left on the worker (and it no longer runs what was requeued off it) it is `drained`: it may be
 * stopped, which fails nothing and alarms nothing (health.ts). A deadline is acted on only while the
 * worker is active, so that what it still runs is cancelled before it runs elsewhere: one that
 * passes while the worker is inactive (or the master down) waits for it to be active again, and
 * meanwhile its tasks take the inactive path (--requeue-after, the reconcile of a returning
 * worker). The state lives on the worker's record and in the store with it, so a drain survives a
 * master restart: rearm() sets the deadline again from what was loaded. A drained worker that
 * comes back stays cordoned until an operator uncordons it.
 */
export class WorkerDrains {
  private readonly timers = new Map<string, NodeJS.Timeout>()
  /** Workers whose drain is under way (not drained yet): the ones a task leaving a worker may finish. */
  private readonly draining = new Set<string>()
  private readonly now: () => number
  private started = false

  /** Drains whose deadline fired: a placement that was under way when it did lands later and goes the same way. */
  private readonly expired = new Set<string>()
  private readonly onTaskChanged = (t: TaskRecord, previous: string | null): void => {
    if (this.draining.size === 0) return
    if (t.status === 'assigned' && t.workerId !== null && this.expired.has(t.workerId)) {
      this.evictNow(t.workerId, `worker ${t.workerId} is drained and its drain deadline passed`)
      return
    }
    // A task left a worker (finished, requeued), or left the queue (a placement under way landed;
    // a task requeued off a worker ended, which it then no longer holds): a worker under drain may
    // be drained now. Few workers drain at a time, and each check is a count.
    if (previous !== 'assigned' && previous !== 'running' && previous !== 'queued') return
    for (const id of [...this.draining]) this.checkDone(id)
  }
  private readonly onGone = (w: WorkerRecord): void => {
    this.disarm(w.id)
    this.draining.delete(w.id)
  }
  /** Back after its deadline passed: what it still has is cancelled and requeued now, with it reachable. */
  private readonly onActive = (w: WorkerRecord): void => {
    if (this.expired.has(w.id)) this.evictNow(w.id, `worker ${w.id} is drained and its drain deadline passed while it was inactive`)
  }
  /** Inactive: what it was still to let go of no longer counts (busyOn asks an active worker only). */
  private readonly onInactive = (w: WorkerRecord): void => {
    if (this.draining.has(w.id)) this.checkDone(w.id)
  }

  constructor(private readonly opts: DrainsOptions) {
    this.now = opts.now ?? Date.now
  }

  start(): void {
    if (this.started) return
    this.started = true
    this.opts.tasks.on('task-changed', this.onTaskChanged)
    this.opts.registry.on('worker-unregistered', this.onGone)
    this.opts.registry.on('worker-active', this.onActive)
    this.opts.registry.on('worker-inactive', this.onInactive)
    this.rearm()
  }

  close(): void {
    if (!this.started) return
    this.started = false
    this.opts.tasks.off('task-changed', this.onTaskChanged)
    this.opts.registry.off('worker-unregistered', this.onGone)
    this.opts.registry.off('worker-active', this.onActive)
    this.opts.registry.off('worker-inactive', this.onInactive)
    for (const t of this.timers.values()) clearTimeout(t)
    this.timers.clear()
    this.draining.clear()
    this.expired.clear()
  }

  /** Every drain under way gets its deadline again (after a load from the store), and is done if nothing is left. */
  rearm(): void {
    if (!this.started) return
    for (const w of this.opts.registry.values()) {
      const d = w.scheduling?.drain
      if (!d || d.drainedAt !== null || this.draining.has(w.id)) continue
      this.draining.add(w.id)
      this.arm(w.id, d)
      this.checkDone(w.id)
    }
  }

  /** @throws CLOUDAI_UNKNOWN_WORKER */
  cordon(id: string): WorkerRecord {
    const w = this.opts.registry.require(id)
    if (w.scheduling) return w
    this.opts.log.info({ workerId: id }, `Worker ${id} cordoned: no new tasks are placed on it; what runs there goes on`)
    return this.opts.registry.setScheduling(id, { cordonedAt: this.now(), drain: null })
  }

  /** Ends a cordon, and a drain with it (what the drain requeued is placed once, wherever it goes next). @throws CLOUDAI_UNKNOWN_WORKER */
  uncordon(id: string): WorkerRecord {
    const w = this.opts.registry.require(id)
    if (!w.scheduling) return w
    this.disarm(id)
    this.draining.delete(id)
    this.opts.log.info({ workerId: id, drain: w.scheduling.drain !== null }, `Worker ${id} uncordoned${w.scheduling.drain?.drainedAt === null ? ' (its drain is stopped)' : ''}: it takes tasks again`)
    return this.opts.registry.setScheduling(id, null)
  }

  /**
   * Cordons the worker and drains it: `deadlineMs` from now (null: none), what is left then is
   * requeued; `force`: at once. A drain already under way gets the new deadline; a drained worker
   * stays drained. @throws CLOUDAI_UNKNOWN_WORKER
   */
  drain(id: string, req: { deadlineMs: number | null; force: boolean }): WorkerRecord {
    const w = this.opts.registry.require(id)
    const now = this.now()
    const old = w.scheduling?.drain
    if (old?.drainedAt != null) return w
    const drain: WorkerDrain = { startedAt: old?.startedAt ?? now, deadline: req.force ? now : req.deadlineMs === null ? null : now + req.deadlineMs, force: req.force, drainedAt: null }
    const scheduling: WorkerScheduling = { cordonedAt: w.scheduling?.cordonedAt ?? now, drain }
    const left = this.opts.tasks.onWorkerCount(id)
    this.opts.log.info(
      { workerId: id, deadline: drain.deadline, force: req.force, tasks: left },
      req.force
        ? `Worker ${id} draining: cordoned; its ${left} task(s) are cancelled and requeued now (--force)`
        : `Worker ${id} draining: cordoned; its ${left} task(s) may finish${req.deadlineMs === null ? '' : `, what is left in ${formatLongDuration(req.deadlineMs)} is cancelled and requeued`}`,
    )
    this.disarm(id)
    const out = this.opts.registry.setScheduling(id, scheduling)
    this.draining.add(id)
    this.arm(id, drain)
    this.checkDone(id)
    return out
  }

  /** Stops the drain: the worker stays cordoned. @throws CLOUDAI_UNKNOWN_WORKER, CLOUDAI_NOT_DRAINING */
  stopDrain(id: string): WorkerRecord {
    const w = this.opts.registry.require(id)
    if (!w.scheduling?.drain) throw new CloudaiError('CLOUDAI_NOT_DRAINING', `worker ${id} is not being drained${w.scheduling ? ' (it is cordoned: `cloudai uncordon` ends that)' : ''}`, { worker_id: id })
    this.disarm(id)
    this.draining.delete(id)
    this.opts.log.info({ workerId: id }, `Drain of worker ${id} stopped: it stays cordoned until uncordoned`)
    return this.opts.registry.setScheduling(id, { cordonedAt: w.scheduling.cordonedAt, drain: null })
  }

  private arm(id: string, d: WorkerDrain): void {
    if (d.deadline === null || d.drainedAt !== null) return
    const fire = (): void => {
      this.timers.delete(id)
      const cur = this.opts.registry.get(id)?.scheduling?.drain
      // Stopped or replaced meanwhile: that drain has its own timer, or none.
      if (cur !== d) return
      this.expired.add(id)
      if (this.opts.registry.get(id)?.isActive !== true) {
        this.opts.log.info({ workerId: id, tasks: this.opts.tasks.onWorkerCount(id) }, `Drain of worker ${id}: its deadline passed while it is inactive; what it still has is cancelled and requeued once it is active again (until then it waits out the requeue wait as for any inactive worker)`)
        return
      }
      this.evictNow(id, d.force ? `worker ${id} is drained with --force` : `worker ${id} is drained and its drain deadline passed`)
    }
    // Past already (a master that was down at the deadline, or --force): on the next tick.
    const delay = Math.max(0, d.deadline - this.now())
    const timer = setTimeout(fire, delay)
    this.timers.set(id, timer)
  }

  private evictNow(id: string, why: string): void {
    this.opts.evict(id, why).then(
      () => this.checkDone(id),
      (err: unknown) => this.opts.log.error({ workerId: id, err }, `Drain of worker ${id}: requeueing its tasks failed; what is left is requeued when it is drained again`),
    )
  }

  private disarm(id: string): void {
    const t = this.timers.get(id)
    if (t) clearTimeout(t)
    this.timers.delete(id)
    this.expired.delete(id)
  }

  /** A worker let go of a task requeued off it (its heartbeat no longer lists it): a drain may be done. */
  released(id: string): void {
    if (this.draining.has(id)) this.checkDone(id)
  }

  /** Nothing left on a worker under drain, and nothing it still runs or is being given: drained. */
  private checkDone(id: string): void {
    const w = this.opts.registry.get(id)
    const d = w?.scheduling?.drain
    if (!w?.scheduling || !d || d.drainedAt !== null) {
      this.draining.delete(id)
      return
    }
    if (this.opts.tasks.onWorkerCount(id) > 0 || this.opts.busyOn?.(id) === true) return
    this.disarm(id)
    this.draining.delete(id)
    const now = this.now()
    this.opts.log.info({ workerId: id, drainMs: now - d.startedAt }, `Worker ${id} drained: nothing runs there; it can be stopped (it stays cordoned until uncordoned)`)
    this.opts.registry.setScheduling(id, { cordonedAt: w.scheduling.cordonedAt, drain: { ...d, drainedAt: now } })
  }
}
