// Shared shapes of the master's state. The registry owns these records; the store, the API
// and (later) telemetry only read them or receive copies.

/** Capacity a worker reports when it registers: CPU cores, memory and storage in GB, GPU count. */
export interface WorkerSpecs {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

/** Usage a worker reports in each heartbeat, in percent (0 to 100). */
export interface WorkerUsage {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

export interface RunningTaskInfo {
  taskId: string
  cpu: number
  memory: number
  gpu: number
  status: string
}

/** Times are milliseconds since the Unix epoch; null means "has not happened yet". */
export interface WorkerRecord {
  id: string
  /** host:port the master dials; set by the operator, authoritative. */
  address: string
  isActive: boolean
  specs: WorkerSpecs | null
  usage: WorkerUsage | null
  runningTasks: RunningTaskInfo[]
  /** What the worker said its address was in RegisterWorker (informational). */
  reportedAddress: string | null
  registeredAt: number
  connectedAt: number | null
  lastHeartbeat: number | null
  disconnectedAt: number | null
  /** Times the worker went from inactive to active after its first connection. */
  reconnects: number
}

/** Why a worker went inactive; carried by the event for later consumers (tasks, WebSocket). */
export type InactiveReason = 'heartbeat-timeout' | 'unregistered' | 'shutdown'

/** Events the registry emits; everything else in the master reacts to these. */
export interface RegistryEvents {
  'worker-registered': [worker: WorkerRecord]
  'worker-unregistered': [worker: WorkerRecord]
  'worker-active': [worker: WorkerRecord, meta: { reconnect: boolean }]
  'worker-inactive': [worker: WorkerRecord, meta: { reason: InactiveReason }]
  'worker-changed': [worker: WorkerRecord]
}
