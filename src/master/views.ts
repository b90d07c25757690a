import type { HistoryPoint, LaneSummary, WindowName } from './telemetry/lane.js'
import type { TaskRecord, TaskStatus, WorkerRecord } from '../shared/types.js'
import { schedulingState, type SchedulingState, type WorkerDrain } from '../shared/worker-scheduling.js'

// The JSON shapes the master shows to operators (REST, prompt, CLI). CloudAI's field names are
// kept where they exist (worker_id, worker_ip, is_active, total_*), so CloudAI clients read them.

export interface WorkerView {
  worker_id: string
  worker_ip: string
  address: string
  is_active: boolean
  status: 'active' | 'inactive'
  /** Active, but its last AssignTask got no answer: no tasks are placed on it until it answers again. */
  suspect: boolean
  suspect_since: string | null
  suspect_reason: string | null
  /** `cordoned`/`draining`/`drained`: an operator took it out of placement (cordon, drain); `eligible`: it takes tasks. */
  scheduling: SchedulingState
  cordoned: boolean
  /** The drain under way or done; null: none. */
  drain: DrainView | null
  total_cpu: number | null
  total_memory: number | null
  total_storage: number | null
  total_gpu: number | null
  usage: { cpu: number; memory: number; storage: number; gpu: number } | null
  running_tasks: { task_id: string; cpu: number; memory: number; gpu: number; status: string }[]
  reported_address: string | null
  last_heartbeat: string | null
  registered_at: string
  connected_at: string | null
  disconnected_at: string | null
  reconnects: number
  /** The worker's token, as far as it can be shown: when issued and first presented. Null: none issued. */
  credential: CredentialView | null
}

export interface DrainView {
  started_at: string
  /** When what still runs is cancelled and requeued; null: no deadline. */
  deadline: string | null
  force: boolean
  drained_at: string | null
}

export interface CredentialView {
  issued_at: string
  /** Null until the worker has called with this token. */
  presented_at: string | null
  /** True once the worker has presented a token: calls for it without one are refused, from loopback too. */
  required: boolean
  /** During a rotation, when the old token stops at the latest. */
  previous_valid_until: string | null
}

export interface ClusterStatus {
  workers: number
  active: number
  inactive: number
  reconnect_monitor: 'running' | 'disabled' | 'stopped'
  tasks: Record<TaskStatus, number>
  store: { kind: string; healthy: boolean; pending_writes: number; last_error: string | null }
  grpc_address: string
  /** `none`: worker calls without a token are accepted from anywhere (--worker-auth none). */
  worker_auth?: 'token' | 'none'
  started_at: string
  uptime_s: number
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

// A worker's view in the parts GET /api/workers renders apart (worker-list-json.ts): what changes
// on every heartbeat (usage, running tasks, last heartbeat) between what changes only when the
// worker connects, disconnects or turns suspect. toWorkerView is their union, in this key order.

export type WorkerHeadView = Pick<WorkerView, 'worker_id' | 'worker_ip' | 'address' | 'is_active' | 'status' | 'suspect' | 'suspect_since' | 'suspect_reason' | 'scheduling' | 'cordoned' | 'drain' | 'total_cpu' | 'total_memory' | 'total_storage' | 'total_gpu'>
export type WorkerTailView = Pick<WorkerView, 'registered_at' | 'connected_at' | 'disconnected_at' | 'reconnects' | 'credential'>

export function workerHeadView(w: WorkerRecord): WorkerHeadView {
  return {
    worker_id: w.id,
    worker_ip: w.address,
    address: w.address,
    is_active: w.isActive,
    status: w.isActive ? 'active' : 'inactive',
    suspect: Boolean(w.suspect),
    suspect_since: iso(w.suspect?.since ?? null),
    suspect_reason: w.suspect?.reason ?? null,
    scheduling: schedulingState(w.scheduling),
    cordoned: Boolean(w.scheduling),
    drain: w.scheduling?.drain ? drainView(w.scheduling.drain) : null,
    total_cpu: w.specs?.cpu ?? null,
    total_memory: w.specs?.memory ?? null,
    total_storage: w.specs?.storage ?? null,
    total_gpu: w.specs?.gpu ?? null,
  }
}

function drainView(d: WorkerDrain): DrainView {
  return { started_at: iso(d.startedAt) as string, deadline: iso(d.deadline), force: d.force, drained_at: iso(d.drainedAt) }
}

export function workerUsageView(w: WorkerRecord): WorkerView['usage'] {
  return w.usage ? { ...w.usage } : null
}

export function runningTasksView(w: WorkerRecord): WorkerView['running_tasks'] {
  return w.runningTasks.map((t) => ({ task_id: t.taskId, cpu: t.cpu, memory: t.memory, gpu: t.gpu, status: t.status }))
}

export function lastHeartbeatView(w: WorkerRecord): string | null {
  return iso(w.lastHeartbeat)
}

export function workerTailView(w: WorkerRecord): WorkerTailView {
  return {
    registered_at: iso(w.registeredAt) as string,
    connected_at: iso(w.connectedAt),
    disconnected_at: iso(w.disconnectedAt),
    reconnects: w.reconnects,
    credential: w.credential
      ? { issued_at: iso(w.credential.issuedAt) as string, presented_at: iso(w.credential.presentedAt), required: w.credential.enforced, previous_valid_until: iso(w.credential.previous?.expiresAt ?? null) }
      : null,
  }
}

export function toWorkerView(w: WorkerRecord): WorkerView {
  return {
    ...workerHeadView(w),
    usage: workerUsageView(w),
    running_tasks: runningTasksView(w),
    reported_address: w.reportedAddress,
    last_heartbeat: lastHeartbeatView(w),
    ...workerTailView(w),
  }
}

export interface TaskView {
  task_id: string
  name: string
  command: string
  docker_image: string
  status: TaskStatus
  worker_id: string | null
  target_worker_id: string | null
  req_cpu: number
  req_memory: number
  req_storage: number
  req_gpu: number
  timeout_s: number
  max_attempts: number
  /** Runs that started on a worker (what max_attempts bounds). */
  attempts: number
  /**
   * The number of the task's latest placement (0: never placed). Placements that never reached a
   * worker are numbered too, so it may be above `attempts`; the worker keeps the run's files in
   * `<data-dir>/tasks/<task_id>-<attempt>/`.
   */
  attempt: number
  submitted_at: string
  assigned_at: string | null
  started_at: string | null
  finished_at: string | null
  exit_code: number | null
  reason: string | null
  /** Last part of the output (the full log stays on the worker). */
  logs: string
  history: { status: TaskStatus; at: string; worker_id: string | null; reason: string | null }[]
  /** False for a task accepted while the store was down (--accept-while-degraded), until it is written. */
  durable: boolean
}

/** `logsLimit` trims the tail for lists; a single task shows all the master keeps (--task-output-tail). */
export function toTaskView(t: TaskRecord, durable: boolean, logsLimit = Number.POSITIVE_INFINITY): TaskView {
  return {
    task_id: t.id,
    name: t.name,
    command: t.command,
    docker_image: t.dockerImage,
    status: t.status,
    worker_id: t.workerId,
    target_worker_id: t.targetWorkerId,
    req_cpu: t.req.cpu,
    req_memory: t.req.memory,
    req_storage: t.req.storage,
    req_gpu: t.req.gpu,
    timeout_s: t.timeoutS,
    max_attempts: t.maxAttempts,
    attempts: t.attempts,
    attempt: t.attempt,
    submitted_at: iso(t.submittedAt) as string,
    assigned_at: iso(t.assignedAt),
    started_at: iso(t.startedAt),
    finished_at: iso(t.finishedAt),
    exit_code: t.exitCode,
    reason: t.reason,
    logs: t.logsTail.length > logsLimit ? t.logsTail.slice(-logsLimit) : t.logsTail,
    history: t.history.map((h) => ({ status: h.status, at: iso(h.at) as string, worker_id: h.workerId, reason: h.reason })),
    durable,
  }
}

interface UsageView {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

/** GET /api/workers/{id}/metrics. `has_data` is false for a worker that never connected. */
export interface WorkerMetricsView {
  worker_id: string
  is_active: boolean
  has_data: boolean
  /** Seconds since the worker connected, while it is active. */
  uptime_s: number | null
  last_heartbeat: string | null
  since_last_heartbeat_ms: number | null
  reconnects: number
  registered_at: string
  connected_at: string | null
  disconnected_at: string | null
  latest: (UsageView & { at: string; running_tasks: number }) | null
  /** Averages weighted by samples over the last 1m, 5m, 15m and 1h; null where no sample fell. */
  averages: Record<WindowName, (UsageView & { running_tasks: number; samples: number }) | null>
  peaks: Record<WindowName, UsageView | null>
  samples_processed: number
  samples_dropped: number
  /** When the telemetry thread computed the averages (they trail the heartbeats by at most a second). */
  summarized_at: string | null
  history_step_ms: number
  /**
   * Points of `history_step_ms` for the last 10 minutes, of about a minute before; `step_ms` is a
   * point's width (absent from masters that kept one resolution, which the CLI may talk to).
   */
  history: (UsageView & { at: string; step_ms?: number; samples: number; running_tasks: number; cpu_peak: number; memory_peak: number; storage_peak: number; gpu_peak: number })[]
}

const NO_WINDOWS = { '1m': null, '5m': null, '15m': null, '1h': null } as const

export function toWorkerMetricsView(w: WorkerRecord, summary: LaneSummary | null, history: HistoryPoint[] | null, stepMs: number, now: number): WorkerMetricsView {
  const windows = summary?.windows
  const averages = { ...NO_WINDOWS } as WorkerMetricsView['averages']
  const peaks = { ...NO_WINDOWS } as WorkerMetricsView['peaks']
  if (windows) {
    for (const [name, stats] of Object.entries(windows) as [WindowName, (typeof windows)[WindowName]][]) {
      if (!stats) continue
      const { running, ...usage } = stats.average
      averages[name] = { ...usage, running_tasks: running, samples: stats.samples }
      peaks[name] = { ...stats.peak }
    }
  }
  const latest = summary?.latest
  return {
    worker_id: w.id,
    is_active: w.isActive,
    has_data: w.lastHeartbeat !== null || (history?.length ?? 0) > 0,
    uptime_s: w.isActive && w.connectedAt !== null ? Math.max(0, Math.round((now - w.connectedAt) / 1000)) : null,
    last_heartbeat: iso(w.lastHeartbeat),
    since_last_heartbeat_ms: w.lastHeartbeat === null ? null : Math.max(0, now - w.lastHeartbeat),
    reconnects: w.reconnects,
    registered_at: iso(w.registeredAt) as string,
    connected_at: iso(w.connectedAt),
    disconnected_at: iso(w.disconnectedAt),
    latest: latest
      ? { at: new Date(Math.round(latest.at)).toISOString(), cpu: latest.cpu, memory: latest.memory, storage: latest.storage, gpu: latest.gpu, running_tasks: latest.running }
      : null,
    averages,
    peaks,
    samples_processed: summary?.processed ?? 0,
    samples_dropped: summary?.dropped ?? 0,
    summarized_at: summary ? new Date(summary.at).toISOString() : null,
    history_step_ms: stepMs,
    history: (history ?? []).map((p) => ({
      at: new Date(p.at).toISOString(),
      step_ms: p.stepMs,
      samples: p.samples,
      cpu: p.cpu,
      memory: p.memory,
      storage: p.storage,
      gpu: p.gpu,
      running_tasks: p.running,
      cpu_peak: p.cpuPeak,
      memory_peak: p.memoryPeak,
      storage_peak: p.storagePeak,
      gpu_peak: p.gpuPeak,
    })),
  }
}
