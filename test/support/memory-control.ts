import type { ListBody } from '../../src/master/api/list-body.js'
import type { MasterControl, TokenIssued } from '../../src/master/control.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import type { HealthReport } from '../../src/master/health.js'
import type { ClusterStatus, TaskView, WorkerMetricsView, WorkerView } from '../../src/master/views.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { FINAL_STATUSES, type TaskStatus } from '../../src/shared/types.js'
import { validateAddress, validateTaskId, validateWorkerId } from '../../src/shared/validation.js'
import { parseDrainRequest } from '../../src/shared/worker-scheduling.js'

// One in-memory MasterControl for the unit tests of the front ends (HTTP API, prompt): the
// Master's validation and error codes over Maps, so a front end can be tested without gRPC or a store.

/** MasterControl over Maps, with the same validation and error codes as the Master. */
export class MemoryControl implements MasterControl {
  readonly workers = new Map<string, WorkerView>()
  readonly tasks = new Map<string, TaskView>()
  /** What listTasks was last called with: the route must hand over the validated query. */
  lastQuery: Parameters<MasterControl['listTasks']>[0] | null = null
  failStatusWith: Error | null = null
  /** Bodies submitTask received, as the front end built them. */
  readonly submitted: unknown[] = []
  /** Register and submit wait on this: a test can hold them open. */
  gate: Promise<void> = Promise.resolve()
  uptimeS = 0
  private nextTask = 1

  listWorkers(): WorkerView[] {
    return [...this.workers.values()]
  }

  listWorkersBody(): ListBody {
    const items = this.listWorkers().map((w) => JSON.stringify(w))
    const open = '{"workers":['
    const close = ']}'
    return { open, items, close, bytes: Buffer.byteLength(open + items.join(',') + close) }
  }

  getWorker(id: string): WorkerView {
    const worker = this.workers.get(validateWorkerId(id, 'worker id'))
    if (!worker) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    return worker
  }

  /** Tokens issued, by worker id (the latest). */
  readonly tokens = new Map<string, string>()
  private nextToken = 1

  private issue(id: string): string {
    const token = `cwt1_${String(this.nextToken++).padStart(43, '0')}`
    this.tokens.set(id, token)
    return token
  }

  async registerWorker(body: unknown): Promise<{ worker: WorkerView; created: boolean; persisted: boolean; token: string | null }> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'the body must be a JSON object')
    const b = body as Record<string, unknown>
    const id = validateWorkerId(b.worker_id)
    const address = validateAddress(b.worker_ip ?? b.address, 'worker_ip')
    const existing = this.workers.get(id)
    if (existing) {
      if (existing.address !== address) throw new CloudaiError('CLOUDAI_WORKER_EXISTS', `worker ${id} is registered at ${existing.address}`)
      return { worker: existing, created: false, persisted: true, token: null }
    }
    await this.gate // the Master awaits its store here: the handler goes async too
    const worker = workerView(id, address, { credential: { issued_at: new Date(0).toISOString(), presented_at: null, required: false, previous_valid_until: null } })
    this.workers.set(id, worker)
    return { worker, created: true, persisted: true, token: this.issue(id) }
  }

  async rotateWorkerToken(id: string): Promise<TokenIssued> {
    this.getWorker(id)
    await Promise.resolve()
    return { worker_id: id, token: this.issue(id), previous_valid_until: new Date(3_600_000).toISOString(), persisted: true }
  }

  async unregisterWorker(id: string): Promise<{ worker_id: string; persisted: boolean }> {
    validateWorkerId(id, 'worker id')
    if (!this.workers.delete(id)) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    await Promise.resolve()
    return { worker_id: id, persisted: true }
  }

  async cordonWorker(id: string): Promise<{ worker: WorkerView; persisted: boolean }> {
    return this.setScheduling(id, (w) => (w.cordoned ? w : { ...w, cordoned: true, scheduling: 'cordoned' }))
  }

  async uncordonWorker(id: string): Promise<{ worker: WorkerView; persisted: boolean }> {
    return this.setScheduling(id, (w) => ({ ...w, cordoned: false, scheduling: 'eligible', drain: null }))
  }

  async drainWorker(id: string, body: unknown): Promise<{ worker: WorkerView; persisted: boolean }> {
    const { deadlineMs, force } = parseDrainRequest(body)
    const at = new Date().toISOString()
    return this.setScheduling(id, (w) => ({ ...w, cordoned: true, scheduling: 'drained', drain: { started_at: at, deadline: deadlineMs === null ? null : new Date(Date.now() + deadlineMs).toISOString(), force, drained_at: at } }))
  }

  async stopDrain(id: string): Promise<{ worker: WorkerView; persisted: boolean }> {
    const w = this.getWorker(id)
    if (!w.drain) throw new CloudaiError('CLOUDAI_NOT_DRAINING', `worker ${id} is not being drained`)
    return this.setScheduling(id, (v) => ({ ...v, scheduling: 'cordoned', drain: null }))
  }

  private async setScheduling(id: string, change: (w: WorkerView) => WorkerView): Promise<{ worker: WorkerView; persisted: boolean }> {
    const worker = change(this.getWorker(id))
    this.workers.set(id, worker)
    await Promise.resolve()
    return { worker, persisted: true }
  }

  /** What health() answers; a test sets it to see the route's status code follow. */
  healthReport: HealthReport = {
    status: 'healthy',
    reasons: [],
    reconnect_monitor: 'running',
    workers: { total: 0, active: 0, inactive: 0 },
    thresholds: { max_inactive_ms: 300_000, reconnect_within_ms: 60_000 },
    store: { kind: 'memory', status: 'ok', backlog: 0, degraded_since: null, last_error: null },
  }
  /** What workerMetrics was last called with: the route must hand over the validated query. */
  lastMetricsQuery: { since?: number } | null = null
  metricsBody = '# HELP cloudai_workers_active Workers connected and heartbeating.\n# TYPE cloudai_workers_active gauge\ncloudai_workers_active 0\n'

  workerMetrics(id: string, query: { since?: number }): WorkerMetricsView {
    const w = this.getWorker(id)
    this.lastMetricsQuery = query
    const none = { '1m': null, '5m': null, '15m': null, '1h': null }
    return {
      worker_id: w.worker_id,
      is_active: w.is_active,
      has_data: false,
      uptime_s: null,
      last_heartbeat: null,
      since_last_heartbeat_ms: null,
      reconnects: w.reconnects,
      registered_at: w.registered_at,
      connected_at: w.connected_at,
      disconnected_at: w.disconnected_at,
      latest: null,
      averages: { ...none },
      peaks: { ...none },
      samples_processed: 0,
      samples_dropped: 0,
      summarized_at: null,
      history_step_ms: 5000,
      history: [],
    }
  }

  health(): HealthReport {
    return this.healthReport
  }

  metrics(): Promise<{ contentType: string; body: string }> {
    return Promise.resolve({ contentType: 'text/plain; version=0.0.4; charset=utf-8', body: this.metricsBody })
  }

  status(): ClusterStatus {
    if (this.failStatusWith) throw this.failStatusWith
    const active = this.listWorkers().filter((w) => w.is_active).length
    return {
      workers: this.workers.size,
      active,
      inactive: this.workers.size - active,
      reconnect_monitor: 'running',
      store: { kind: 'memory', healthy: true, pending_writes: 0, last_error: null },
      tasks: this.taskCounts(),
      grpc_address: '127.0.0.1:50051',
      started_at: new Date(0).toISOString(),
      uptime_s: this.uptimeS,
    }
  }

  private taskCounts(): Record<TaskStatus, number> {
    const counts: Record<TaskStatus, number> = { queued: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0 }
    for (const t of this.tasks.values()) counts[t.status]++
    return counts
  }

  async submitTask(body: unknown): Promise<TaskView> {
    this.submitted.push(body)
    const input = parseTaskInput(body)
    if (input.targetWorkerId !== null && !this.workers.has(input.targetWorkerId)) {
      throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `target_worker_id ${input.targetWorkerId} is not registered`)
    }
    await this.gate // the Master persists the task here
    const id = `task-${this.nextTask++}`
    const at = new Date(this.nextTask * 1000).toISOString()
    const task: TaskView = {
      task_id: id,
      name: input.name,
      command: input.command,
      docker_image: input.dockerImage,
      status: 'queued',
      worker_id: null,
      target_worker_id: input.targetWorkerId,
      req_cpu: input.req.cpu,
      req_memory: input.req.memory,
      req_storage: input.req.storage,
      req_gpu: input.req.gpu,
      timeout_s: input.timeoutS,
      max_attempts: input.maxAttempts,
      attempts: 0,
      attempt: 0,
      submitted_at: at,
      assigned_at: null,
      started_at: null,
      finished_at: null,
      exit_code: null,
      reason: null,
      logs: '',
      history: [{ status: 'queued', at, worker_id: null, reason: null }],
      durable: true,
    }
    this.tasks.set(id, task)
    return task
  }

  listTasks(query: { status?: TaskStatus; limit?: number; offset?: number }): { tasks: TaskView[]; total: number; limit: number; offset: number } {
    this.lastQuery = query
    const limit = query.limit ?? 100
    const offset = query.offset ?? 0
    const all = [...this.tasks.values()].reverse().filter((t) => query.status === undefined || t.status === query.status)
    return { tasks: all.slice(offset, offset + limit), total: all.length, limit, offset }
  }

  getTask(id: string): TaskView {
    const task = this.tasks.get(validateTaskId(id))
    if (!task) throw new CloudaiError('CLOUDAI_UNKNOWN_TASK', `task ${id} does not exist`)
    return task
  }

  async cancelTask(id: string): Promise<TaskView> {
    const task = this.getTask(id)
    if (FINAL_STATUSES.includes(task.status)) throw new CloudaiError('CLOUDAI_TASK_FINISHED', `task ${id} is already ${task.status}`)
    await Promise.resolve()
    const at = new Date().toISOString()
    const cancelled: TaskView = { ...task, status: 'cancelled', finished_at: at, reason: 'cancelled by the operator', history: [...task.history, { status: 'cancelled', at, worker_id: task.worker_id, reason: 'cancelled by the operator' }] }
    this.tasks.set(id, cancelled)
    return cancelled
  }
}

/** A registered, never-connected worker as the API shows it; `overrides` for anything else. */
export function workerView(id: string, address: string, overrides: Partial<WorkerView> = {}): WorkerView {
  return {
    worker_id: id,
    worker_ip: address,
    address,
    is_active: false,
    status: 'inactive',
    suspect: false,
    suspect_since: null,
    suspect_reason: null,
    scheduling: 'eligible',
    cordoned: false,
    drain: null,
    total_cpu: null,
    total_memory: null,
    total_storage: null,
    total_gpu: null,
    usage: null,
    running_tasks: [],
    reported_address: null,
    last_heartbeat: null,
    registered_at: new Date(0).toISOString(),
    connected_at: null,
    disconnected_at: null,
    reconnects: 0,
    credential: null,
    ...overrides,
  }
}
