import type { TaskRecord, TaskStatus, WorkerRecord } from '../shared/types.js'

// The JSON shapes the master shows to operators (REST, prompt, CLI). CloudAI's field names are
// kept where they exist (worker_id, worker_ip, is_active, total_*), so CloudAI clients read them.

export interface WorkerView {
  worker_id: string
  worker_ip: string
  address: string
  is_active: boolean
  status: 'active' | 'inactive'
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
}

export interface ClusterStatus {
  workers: number
  active: number
  inactive: number
  reconnect_monitor: 'running' | 'disabled' | 'stopped'
  tasks: Record<TaskStatus, number>
  store: { kind: string; healthy: boolean; pending_writes: number; last_error: string | null }
  grpc_address: string
  started_at: string
  uptime_s: number
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

export function toWorkerView(w: WorkerRecord): WorkerView {
  return {
    worker_id: w.id,
    worker_ip: w.address,
    address: w.address,
    is_active: w.isActive,
    status: w.isActive ? 'active' : 'inactive',
    total_cpu: w.specs?.cpu ?? null,
    total_memory: w.specs?.memory ?? null,
    total_storage: w.specs?.storage ?? null,
    total_gpu: w.specs?.gpu ?? null,
    usage: w.usage ? { ...w.usage } : null,
    running_tasks: w.runningTasks.map((t) => ({ task_id: t.taskId, cpu: t.cpu, memory: t.memory, gpu: t.gpu, status: t.status })),
    reported_address: w.reportedAddress,
    last_heartbeat: iso(w.lastHeartbeat),
    registered_at: iso(w.registeredAt) as string,
    connected_at: iso(w.connectedAt),
    disconnected_at: iso(w.disconnectedAt),
    reconnects: w.reconnects,
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
  attempts: number
  submitted_at: string
  assigned_at: string | null
  started_at: string | null
  finished_at: string | null
  exit_code: number | null
  reason: string | null
  /** Last part of the output (the full log stays on the worker). */
  logs: string
  history: { status: TaskStatus; at: string; worker_id: string | null; reason: string | null }[]
}

/** `logsLimit` trims the tail for lists; a single task shows it whole (at most 1 MiB). */
export function toTaskView(t: TaskRecord, logsLimit = Number.POSITIVE_INFINITY): TaskView {
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
    submitted_at: iso(t.submittedAt) as string,
    assigned_at: iso(t.assignedAt),
    started_at: iso(t.startedAt),
    finished_at: iso(t.finishedAt),
    exit_code: t.exitCode,
    reason: t.reason,
    logs: t.logsTail.length > logsLimit ? t.logsTail.slice(-logsLimit) : t.logsTail,
    history: t.history.map((h) => ({ status: h.status, at: iso(h.at) as string, worker_id: h.workerId, reason: h.reason })),
  }
}
