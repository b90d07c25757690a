import type { HistoryPoint, LaneSummary, WindowName } from './telemetry/lane.js'
import type { TaskRecord, TaskStatus, WorkerRecord } from '../shared/types.js'
import type { Static } from '@sinclair/typebox'
import { schedulingState, type WorkerDrain } from '../shared/worker-scheduling.js'
import { isoTime } from '../shared/iso-time.js'
import type { ClusterStatusSchema } from './api/schema/status.js'
import type { TaskViewSchema } from './api/schema/tasks.js'
import type { CredentialViewSchema, DrainViewSchema, WorkerMetricsViewSchema, WorkerViewSchema } from './api/schema/workers.js'

// The JSON shapes the master shows to operators (REST, prompt, CLI). CloudAI's field names are
// kept where they exist (worker_id, worker_ip, is_active, total_*), so CloudAI clients read them.

// Each type is its schema's (src/master/api/schema/): what the API documents at /openapi.json and
// what the code builds are one definition, so they cannot drift apart.
export type WorkerView = Static<typeof WorkerViewSchema>
export type DrainView = Static<typeof DrainViewSchema>
export type CredentialView = Static<typeof CredentialViewSchema>
export type ClusterStatus = Static<typeof ClusterStatusSchema>

const iso = (ms: number | null): string | null => (ms === null ? null : isoTime(ms))

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

export type TaskView = Static<typeof TaskViewSchema>

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

/** GET /api/workers/{id}/metrics. `has_data` is false for a worker that never connected. */
export type WorkerMetricsView = Static<typeof WorkerMetricsViewSchema>

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
      ? { at: isoTime(Math.round(latest.at)), cpu: latest.cpu, memory: latest.memory, storage: latest.storage, gpu: latest.gpu, running_tasks: latest.running }
      : null,
    averages,
    peaks,
    samples_processed: summary?.processed ?? 0,
    samples_dropped: summary?.dropped ?? 0,
    summarized_at: summary ? isoTime(summary.at) : null,
    history_step_ms: stepMs,
    history: (history ?? []).map((p) => ({
      at: isoTime(p.at),
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
