import type { WorkerRecord } from '../shared/types.js'

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
