import type { MasterConfig } from '../config.js'
import type { Logger } from '../shared/log.js'
import { CloudaiError, isCloudaiError } from '../shared/errors.js'
import { validateAddress, validateTaskId, validateWorkerId } from '../shared/validation.js'
import type { TaskStatus, WorkerRecord } from '../shared/types.js'
import type { MasterKey } from '../shared/worker-credential.js'
import { parseDrainRequest } from '../shared/worker-scheduling.js'
import type { StoreJournal } from '../store/journal.js'
import type { MasterControl, TokenIssued } from './control.js'
import type { WorkerDrains } from './drains.js'
import { checkHealth, type HealthReport, type StoreHealth } from './health.js'
import type { ListBody } from './list-body.js'
import type { MasterMetrics } from './metrics.js'
import type { QueueProcessor } from './queue.js'
import type { ReconnectMonitor } from './reconnect/monitor.js'
import type { Registry } from './registry.js'
import { neverFitsReason } from './scheduler.js'
import type { TaskLogFeeds, LogSink, ReadRequest } from './task-log-feeds.js'
import { parseTaskInput } from './task-input.js'
import type { TaskTable } from './tasks.js'
import type { TelemetryHub } from './telemetry/hub.js'
import type { LeaderStatus } from './leader-role.js'
import { toTaskView, toWorkerMetricsView, toWorkerView, type ClusterStatus, type TaskView, type WorkerMetricsView, type WorkerView } from './views.js'
import type { WorkerAuth } from './worker-auth.js'
import { workerListBodyInTurns } from './worker-list-json.js'

/**
 * Throws when the master may not act on an operator's request now (CLOUDAI_SHUTTING_DOWN while it
 * starts or stops). The one place that decides it: every operator action that changes something,
 * or starts something, asks it first; reads do not.
 */
export type ControlGuard = () => void

/** The settings of the master the operator's actions read. */
export type ControlConfig = Pick<MasterConfig, 'acceptWhileDegraded' | 'tokenGraceMs' | 'healthMaxInactiveMs' | 'healthReconnectWithinMs' | 'workerAuth'>

/** What the control service acts on: the master's parts, built and started by the Master. */
export interface ControlParts {
  registry: Registry
  tasks: TaskTable
  queue: QueueProcessor
  drains: WorkerDrains
  logFeeds: TaskLogFeeds
  journal: StoreJournal
  /** The store's kind, as status and health name it. */
  storeKind: string
  key: MasterKey
  monitor: ReconnectMonitor
  telemetry: TelemetryHub
  metrics: MasterMetrics
  workerAuth: WorkerAuth
  config: ControlConfig
  log: Logger
  guard: ControlGuard
  /** When the master began to serve (epoch ms); 0 before. */
  startedAt: () => number
  /** The gRPC address workers are told to call back on ('' before the gRPC server is bound). */
  advertised: () => string
  /**
   * Who leads (issue 19, leader-role.ts), as status and health say it; `acting`: this master runs
   * and leads, so its health checks are its own. Absent: a master that always leads.
   */
  role?: () => LeaderStatus & { acting: boolean }
}

/**
 * The operator's control service: what the HTTP API, the `master>` prompt and the tests ask of a
 * master (MasterControl). It holds no state of its own and starts nothing: it validates the request,
 * asks the guard whether the master may act now, and acts on the parts it was given.
 */
export class ControlService implements MasterControl {
  private readonly registry: Registry
  private readonly tasks: TaskTable
  private readonly queue: QueueProcessor
  private readonly drains: WorkerDrains
  private readonly logFeeds: TaskLogFeeds
  private readonly journal: StoreJournal
  private readonly key: MasterKey
  private readonly monitor: ReconnectMonitor
  private readonly telemetry: TelemetryHub
  private readonly metricsView: MasterMetrics
  private readonly workerAuth: WorkerAuth
  private readonly config: ControlConfig
  private readonly log: Logger
  private readonly guard: ControlGuard

  constructor(private readonly parts: ControlParts) {
    this.registry = parts.registry
    this.tasks = parts.tasks
    this.queue = parts.queue
    this.drains = parts.drains
    this.logFeeds = parts.logFeeds
    this.journal = parts.journal
    this.key = parts.key
    this.monitor = parts.monitor
    this.telemetry = parts.telemetry
    this.metricsView = parts.metrics
    this.workerAuth = parts.workerAuth
    this.config = parts.config
    this.log = parts.log
    this.guard = parts.guard
  }

  listWorkers(): WorkerView[] {
    return this.registry.list().map(toWorkerView)
  }

  listWorkersBody(wanted: () => boolean = () => true): Promise<ListBody | null> {
    return workerListBodyInTurns(this.registry.list(), { isCurrent: (w) => this.registry.get(w.id) === w, wanted })
  }

  getWorker(id: string): WorkerView {
    return toWorkerView(this.registry.require(validateWorkerId(id, 'worker id')))
  }

  async registerWorker(body: unknown): Promise<{ worker: WorkerView; created: boolean; persisted: boolean; token: string | null }> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'the body must be a JSON object: {"worker_id": "...", "worker_ip": "host:port"}')
    }
    const b = body as Record<string, unknown>
    const id = validateWorkerId(b.worker_id)
    if (b.worker_ip !== undefined && b.address !== undefined && b.worker_ip !== b.address) {
      throw new CloudaiError('CLOUDAI_BAD_ADDRESS', 'worker_ip and address are the same field (address is an alias); send one')
    }
    const address = validateAddress(b.worker_ip ?? b.address, 'worker_ip')
    this.guard()
    const now = Date.now()
    // Its token is issued with the record and shown once, in this answer; only its hash and
    // nonce are kept. A registration that changes nothing issues none (`token rotate` does).
    let token: string | null = null
    const { worker, created } = this.registry.register(id, address, now, () => {
      const issued = this.key.issue(id, now)
      token = issued.token
      return issued.stored
    })
    if (created) {
      this.log.info({ workerId: id, address }, `Worker ${id} registered at ${address} with a new token (offline until it connects; will reconnect automatically)`)
      this.monitor.dialNow(id).catch((err: unknown) => this.log.error({ workerId: id, err }, `Dial of new worker ${id} failed; the monitor dials it again on its interval`))
    }
    const persisted = await this.journal.sync()
    return { worker: toWorkerView(worker), created, persisted, token }
  }

  async rotateWorkerToken(id: string): Promise<TokenIssued> {
    validateWorkerId(id, 'worker id')
    this.guard()
    this.registry.require(id)
    const now = Date.now()
    const issued = this.key.issue(id, now)
    const { previousValidUntil } = this.registry.rotateCredential(id, issued.stored, this.config.tokenGraceMs, now)
    const until = previousValidUntil === null ? null : new Date(previousValidUntil).toISOString()
    this.log.info(
      { workerId: id, previousValidUntil: until },
      until === null
        ? `Worker ${id} has a new token; the old one no longer works`
        : `Worker ${id} has a new token; the old one works until the worker presents the new one, at the latest until ${until}`,
    )
    const persisted = await this.journal.sync()
    return { worker_id: id, token: issued.token, previous_valid_until: until, persisted }
  }

  async unregisterWorker(id: string): Promise<{ worker_id: string; persisted: boolean; tasks_requeued: string[] }> {
    validateWorkerId(id, 'worker id')
    this.guard()
    // The queue requeues them on the event, and cancels them on the worker when it is active.
    const requeued = this.tasks.onWorkerTasks(id).map((t) => t.id)
    const active = this.registry.get(id)?.isActive === true
    const worker = this.registry.unregister(id)
    const tasks = requeued.length === 0 ? '' : `; its ${requeued.length} task(s) go back to the queue${active ? ' and are cancelled on it' : ' (it is inactive: not told)'}`
    this.log.info({ workerId: id, address: worker.address, tasksRequeued: requeued.length, active }, `Worker ${id} unregistered; its token is revoked and no more reconnection attempts are made${tasks}`)
    const persisted = await this.journal.sync()
    return { worker_id: id, persisted, tasks_requeued: requeued }
  }

  cordonWorker(id: string): Promise<{ worker: WorkerView; persisted: boolean }> {
    return this.schedule(id, (w) => this.drains.cordon(w))
  }

  uncordonWorker(id: string): Promise<{ worker: WorkerView; persisted: boolean }> {
    return this.schedule(id, (w) => this.drains.uncordon(w))
  }

  drainWorker(id: string, body: unknown): Promise<{ worker: WorkerView; persisted: boolean }> {
    return this.schedule(id, (w) => this.drains.drain(w, parseDrainRequest(body)))
  }

  stopDrain(id: string): Promise<{ worker: WorkerView; persisted: boolean }> {
    return this.schedule(id, (w) => this.drains.stopDrain(w))
  }

  /** A change of a worker's scheduling (drains.ts), answered once the store holds it, or says it does not. */
  private async schedule(id: string, change: (id: string) => WorkerRecord): Promise<{ worker: WorkerView; persisted: boolean }> {
    validateWorkerId(id, 'worker id')
    this.guard()
    const worker = change(id)
    return { worker: toWorkerView(worker), persisted: await this.journal.sync() }
  }

  async submitTask(body: unknown): Promise<TaskView> {
    const input = parseTaskInput(body)
    if (input.targetWorkerId && !this.registry.get(input.targetWorkerId)) {
      throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `target_worker_id ${input.targetWorkerId} is not a registered worker`, { field: 'target_worker_id' })
    }
    this.guard()
    let task
    try {
      task = await this.tasks.submit(input, { acceptWhileDegraded: this.config.acceptWhileDegraded })
    } catch (err) {
      this.staleAsNotLeader(err)
      if (!isCloudaiError(err) || err.code !== 'CLOUDAI_STORE_DEGRADED') throw err
      throw new CloudaiError('CLOUDAI_STORE_DEGRADED', `task not accepted: ${err.message}, so it could not be made durable; submit it again once the store answers (GET /healthz), or start the master with --accept-while-degraded to queue tasks in memory during outages`, err.details)
    }
    const durable = this.tasks.isDurable(task.id)
    if (durable) this.log.info({ taskId: task.id, name: task.name, req: task.req, target: task.targetWorkerId }, `Task ${task.id} queued`)
    else this.log.warn({ taskId: task.id, name: task.name, durable }, `Task ${task.id} queued in memory only: the store is down; it is written when the store answers`)
    return this.taskView(task.id)
  }

  listTasks(query: { status?: TaskStatus; limit?: number; offset?: number }): { tasks: TaskView[]; total: number; limit: number; offset: number } {
    const limit = query.limit ?? 100
    const offset = query.offset ?? 0
    // From the table's indexes: the cost is the page (and its offset), not every task kept.
    const page = this.tasks.list({ status: query.status, offset, limit })
    // Lists carry only the end of each task's output; `GET /api/tasks/{id}` has the whole tail.
    return { tasks: page.tasks.map((t) => this.withWaitReason(toTaskView(t, this.tasks.isDurable(t.id), 4096))), total: page.total, limit, offset }
  }

  /** `id`: a task's id, or a prefix of exactly one (TaskTable.resolve). */
  getTask(id: string): TaskView {
    return this.taskView(this.tasks.resolve(validateTaskId(id)).id)
  }

  readTaskLogs(given: string, req: ReadRequest, sink: LogSink): () => void {
    this.guard()
    const task = this.tasks.resolve(validateTaskId(given))
    return this.logFeeds.read(task.id, req, sink)
  }

  async cancelTask(given: string): Promise<TaskView> {
    const task = this.tasks.resolve(validateTaskId(given))
    const id = task.id
    this.guard()
    if (task.status === 'completed' || task.status === 'failed' || task.status === 'cancelled') {
      throw new CloudaiError('CLOUDAI_TASK_FINISHED', `task ${id} is already ${task.status}; only queued, assigned or running tasks can be cancelled`)
    }
    let done
    try {
      done = await this.queue.cancel(task, 'cancelled by the operator')
    } catch (err) {
      this.staleAsNotLeader(err)
      if (!isCloudaiError(err) || err.code !== 'CLOUDAI_STORE_DEGRADED') throw err
      // A cancellation is final: acknowledged only once durable, so during an outage nothing changes.
      throw new CloudaiError('CLOUDAI_STORE_DEGRADED', `task ${id} not cancelled: ${err.message}, so the cancellation could not be made durable; it is still ${this.tasks.get(id)?.status ?? task.status}: cancel it again once the store answers (GET /healthz)`, err.details)
    }
    if (!done) {
      const now = this.tasks.require(id)
      throw new CloudaiError('CLOUDAI_TASK_FINISHED', `task ${id} finished (${now.status}) before it could be cancelled`)
    }
    this.log.info({ taskId: id, workerId: task.workerId }, `Task ${id} cancelled by the operator`)
    return this.taskView(id)
  }

  /**
   * A write the store refused as a deposed master's (CLOUDAI_STALE_EPOCH): the lease is lost, so
   * the operator hears who leads now (the guard's refusal), never a store error; nothing changed.
   */
  private staleAsNotLeader(err: unknown): void {
    if (!isCloudaiError(err) || err.code !== 'CLOUDAI_STALE_EPOCH') return
    this.guard()
    throw new CloudaiError('CLOUDAI_NOT_LEADER', `this master no longer leads (${err.message}); nothing was changed`, err.details)
  }

  private taskView(id: string): TaskView {
    return this.withWaitReason(toTaskView(this.tasks.require(id), this.tasks.isDurable(id)))
  }

  /** A queued task that no registered worker could ever run says so (it is still accepted). */
  private withWaitReason(view: TaskView): TaskView {
    if (view.status !== 'queued') return view
    const t = this.tasks.get(view.task_id)
    const never = t ? neverFitsReason(t, this.registry.values()) : null
    return never ? { ...view, reason: never } : view
  }

  workerMetrics(id: string, query: { since?: number }): WorkerMetricsView {
    const w = this.registry.require(validateWorkerId(id, 'worker id'))
    const now = Date.now()
    return toWorkerMetricsView(w, this.telemetry.summary(w.id), this.telemetry.history(w.id, query.since ?? 0), this.telemetry.stepMs, now)
  }

  health(): HealthReport & Partial<LeaderStatus> {
    const report = checkHealth({
      now: Date.now(),
      startedAt: this.parts.startedAt() || Date.now(),
      monitor: this.monitor.status,
      lastDialStartedAt: (id) => this.monitor.lastDialStartedAt(id),
      dialWithinMs: (id) => this.monitor.dialWithinMs(id),
      workers: this.registry.values(),
      thresholds: { maxInactiveMs: this.config.healthMaxInactiveMs, reconnectWithinMs: this.config.healthReconnectWithinMs },
      store: this.storeHealth(),
      warnings: this.workerAuth.warning === null ? [] : [{ check: 'worker-auth', message: this.workerAuth.warning }],
    })
    const role = this.parts.role?.()
    if (!role) return report
    const { acting, ...leader } = role
    // A standby (or a deposed master) is healthy as a standby: its checks are the leader's to pass.
    return acting ? { ...report, ...leader } : { ...report, status: 'healthy', reasons: [], ...leader }
  }

  private storeHealth(): StoreHealth {
    const s = this.journal.status()
    return {
      kind: this.parts.storeKind,
      status: s.healthy ? 'ok' : 'degraded',
      backlog: s.backlog,
      degraded_since: s.degradedSince === null ? null : new Date(s.degradedSince).toISOString(),
      last_error: s.lastError,
    }
  }

  async metrics(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.metricsView.contentType, body: await this.metricsView.text() }
  }

  status(): ClusterStatus & Partial<LeaderStatus> {
    const counts = this.registry.counts()
    const store = this.journal.status()
    return {
      workers: counts.total,
      active: counts.active,
      inactive: counts.total - counts.active,
      reconnect_monitor: this.monitor.status,
      tasks: this.tasks.counts(),
      store: { kind: this.parts.storeKind, healthy: store.healthy, pending_writes: store.backlog, last_error: store.lastError },
      grpc_address: this.parts.advertised(),
      worker_auth: this.config.workerAuth,
      started_at: new Date(this.parts.startedAt() || Date.now()).toISOString(),
      uptime_s: this.parts.startedAt() ? Math.round((Date.now() - this.parts.startedAt()) / 1000) : 0,
      ...this.leader(),
    }
  }

  /** The status's who-leads fields, without `acting`. */
  private leader(): Partial<LeaderStatus> {
    const role = this.parts.role?.()
    if (!role) return {}
    const { acting: _acting, ...leader } = role
    return leader
  }
}
