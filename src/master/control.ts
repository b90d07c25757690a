import type { TaskStatus } from '../shared/types.js'
import type { HealthReport } from './health.js'
import type { ListBody } from './list-body.js'
import type { LogSink, ReadRequest } from './task-log-feeds.js'
import type { ClusterStatus, TaskView, WorkerMetricsView, WorkerView } from './views.js'

/** A worker token as issued: shown once, here; the master keeps only its hash. */
export interface TokenIssued {
  worker_id: string
  token: string
  /** When the token it replaced stops working at the latest (sooner if the worker presents the new one); null: at once, or there was none. */
  previous_valid_until: string | null
  persisted: boolean
}

/**
 * What an operator can do to a running master. The HTTP API and the interactive prompt are two
 * front ends of this one interface; the master's control service (control-service.ts) implements
 * it. Every method validates its input and throws CloudaiError with a stable code on bad input;
 * one that changes something throws CLOUDAI_SHUTTING_DOWN while the master starts or stops.
 */
export interface MasterControl {
  listWorkers(): WorkerView[]
  /**
   * The same list as the JSON body `{"workers":[…]}`, one text per worker: what GET /api/workers
   * streams. Rendered a few ms of the event loop at a time, so that a large list never holds it;
   * null when `wanted` turned false meanwhile (the walk stopped: nobody waits for the list).
   */
  listWorkersBody(wanted?: () => boolean): Promise<ListBody | null>
  /** @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER */
  getWorker(id: string): WorkerView
  /**
   * Registers a worker from an operator body `{worker_id, worker_ip}` (`address` is an alias of
   * worker_ip). Works while the worker is offline: it is stored inactive and dialled at once and
   * then by the reconnection monitor. Registering the same id and address again is a no-op
   * (created=false); the same id with another address is CLOUDAI_WORKER_EXISTS.
   * `persisted` says whether the store has it already (false while the store is failing: the
   * registration still holds in memory and is written when the store answers).
   * A new worker gets its token, `token`, shown only in this answer; a no-op has none (null): an
   * operator who lost it asks rotateWorkerToken for a new one.
   */
  registerWorker(body: unknown): Promise<{ worker: WorkerView; created: boolean; persisted: boolean; token: string | null }>
  /**
   * Issues the worker a new token. The old one keeps working until the worker presents the new one,
   * or for the master's --token-grace at the latest. @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER
   */
  rotateWorkerToken(id: string): Promise<TokenIssued>
  /** Removes the worker from memory and the store, revokes its token and cancels every dial to it. */
  /**
   * Drops a worker: its token stops at once, no more dials; the tasks it ran go back to the queue
   * (`tasks_requeued`) and, when it is active, it is told to cancel them.
   */
  unregisterWorker(id: string): Promise<{ worker_id: string; persisted: boolean; tasks_requeued?: string[] }>
  /** No new placements on the worker (tasks that target it wait); idempotent. @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER */
  cordonWorker(id: string): Promise<{ worker: WorkerView; persisted: boolean }>
  /** Ends a cordon, and a drain under way with it. @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER */
  uncordonWorker(id: string): Promise<{ worker: WorkerView; persisted: boolean }>
  /**
   * Cordons and drains the worker from a body `{deadline_s, force}` (both optional): what runs
   * there may finish; at the deadline (at once with force) the rest is cancelled and requeued
   * without counting an attempt; then the worker is `drained`. Works on an inactive worker too.
   * @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER, CLOUDAI_BAD_REQUEST, CLOUDAI_BAD_FIELD
   */
  drainWorker(id: string, body: unknown): Promise<{ worker: WorkerView; persisted: boolean }>
  /** Stops a drain; the worker stays cordoned. @throws CLOUDAI_UNKNOWN_WORKER, CLOUDAI_NOT_DRAINING (409) */
  stopDrain(id: string): Promise<{ worker: WorkerView; persisted: boolean }>
  status(): ClusterStatus
  /**
   * A worker's telemetry: latest usage, rolling averages and peaks, history from `since` (epoch ms),
   * uptime, time since its last heartbeat, reconnects. A registered worker that never connected has
   * `has_data: false` (not an error). @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER
   */
  workerMetrics(id: string, query: { since?: number }): WorkerMetricsView
  /** The health criteria of the CloudAI guide (see health.ts). */
  health(): HealthReport
  /** Everything /metrics shows, in the Prometheus text format. */
  metrics(): Promise<{ contentType: string; body: string }>

  /**
   * Submits a task from an operator body (see README: command, name, req_cpu / cpu_required, ...,
   * target_worker_id, timeout_s, max_attempts, env, docker_image). Persisted before it returns.
   * @throws CLOUDAI_BAD_FIELD / CLOUDAI_BAD_REQUEST / CLOUDAI_UNKNOWN_WORKER (target) /
   *         CLOUDAI_STORE_FAILED (503: not durable, not accepted)
   */
  submitTask(body: unknown): Promise<TaskView>
  /** Newest first. `status` filters; `limit` 1..1000 (default 100); `offset` >= 0. */
  listTasks(query: { status?: TaskStatus; limit?: number; offset?: number }): { tasks: TaskView[]; total: number; limit: number; offset: number }
  /** @throws CLOUDAI_BAD_TASK_ID, CLOUDAI_UNKNOWN_TASK */
  getTask(id: string): TaskView
  /** Cancels a queued or running task. @throws CLOUDAI_UNKNOWN_TASK, CLOUDAI_TASK_FINISHED (409) */
  cancelTask(id: string): Promise<TaskView>
  /**
   * Serves a task's output to `sink` (src/master/task-log-feeds.ts); returns the call that stops
   * it. Checked before anything is written. Optional for a front end's sake: without it the route
   * answers CLOUDAI_NOT_FOUND (the master's control service has it).
   * @throws CLOUDAI_BAD_TASK_ID, CLOUDAI_UNKNOWN_TASK, CLOUDAI_AMBIGUOUS_TASK_ID
   */
  readTaskLogs?(id: string, req: ReadRequest, sink: LogSink): () => void
}
