import type { StoredCredential } from './worker-credential.js'
import type { WorkerScheduling } from './worker-scheduling.js'

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
  /** Which attempt of the task the worker runs (0 from peers that do not say). */
  attempt: number
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
  /**
   * What the master keeps of the worker's token (a nonce and a hash: nothing that lets anyone
   * present it). Null for a worker registered before tokens, or by another master: it has no
   * token until an operator rotates one, and gets no proof on the master's calls.
   */
  credential: StoredCredential | null
  /**
   * Set while the worker is suspect: an AssignTask to it got no answer (refused, unreachable, timed
   * out), so nothing is placed on it until it answers a probe, a heartbeat, or registers again.
   * Kept in memory only (absent in stored records: not suspect); replaced, never edited in place.
   */
  suspect?: WorkerSuspicion | null
  /**
   * Cordoned or drained by an operator (worker-scheduling.ts): no new placements. Persisted with
   * the worker; absent or null: it takes placements. Replaced, never edited in place.
   */
  scheduling?: WorkerScheduling | null
}

export interface WorkerSuspicion {
  /** Epoch ms. */
  since: number
  /** What failed, as the AssignTask error said. */
  reason: string
}

/**
 * What ended a suspicion: a probe (MasterRegister) answered, or an AssignTask did. Only calls the
 * master makes prove that it reaches the worker; a heartbeat or a RegisterWorker proves the other way.
 */
export type SuspicionCleared = 'probe' | 'assign'

/** What changed about a worker's credential ('certificate': it proved itself by its client certificate). */
export type CredentialChange = 'rotated' | 'presented' | 'certificate'

/** Why a worker went inactive; carried by the event for later consumers (tasks, WebSocket). */
export type InactiveReason = 'heartbeat-timeout' | 'unregistered' | 'shutdown'

/** Events the registry emits; everything else in the master reacts to these. */
export interface RegistryEvents {
  'worker-registered': [worker: WorkerRecord]
  'worker-unregistered': [worker: WorkerRecord, info: { wasActive: boolean }]
  'worker-active': [worker: WorkerRecord, meta: { reconnect: boolean }]
  'worker-inactive': [worker: WorkerRecord, meta: { reason: InactiveReason }]
  'worker-changed': [worker: WorkerRecord]
  /** An active worker did not answer AssignTask: no placements on it until it is cleared (or goes inactive). */
  'worker-suspect': [worker: WorkerRecord, meta: WorkerSuspicion]
  /** A suspect worker answered again and takes placements. */
  'worker-cleared': [worker: WorkerRecord, meta: { by: SuspicionCleared }]
  /** A new token was issued (rotation), the worker presented its current one for the first time, or its certificate. */
  'worker-credential': [worker: WorkerRecord, meta: { change: CredentialChange }]
  /** Cordoned, uncordoned, a drain started, stopped or done: `scheduling` changed. */
  'worker-scheduling': [worker: WorkerRecord]
}

export type TaskStatus = 'queued' | 'assigned' | 'running' | 'completed' | 'failed' | 'cancelled'

export const FINAL_STATUSES: readonly TaskStatus[] = ['completed', 'failed', 'cancelled']

export interface TaskRequirements {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

export interface TaskTransition {
  status: TaskStatus
  at: number
  workerId: string | null
  reason: string | null
  /** On a step back to 'queued' that took back the run it counted (a drain stopped it); absent otherwise. */
  refundedRun?: true
}

/** A task as the master keeps it; every transition is persisted before it is acknowledged. */
export interface TaskRecord {
  /** `task-` and a random UUID: unique without a clock. */
  id: string
  name: string
  command: string
  dockerImage: string
  req: TaskRequirements
  targetWorkerId: string | null
  userId: string
  /** 0 = no timeout. */
  timeoutS: number
  maxAttempts: number
  env: Record<string, string>
  status: TaskStatus
  workerId: string | null
  /**
   * Runs that started on a worker: counted when the worker confirms the start (its AssignTask
   * answer, a heartbeat listing it, or its completion report), never for a placement that did
   * not reach one. `maxAttempts` bounds this.
   */
  attempts: number
  /**
   * Number of the latest placement, sent as AssignTask's `attempt`; heartbeats and completion
   * reports must name it. Every placement gets a new one, so a run that may have started on a
   * worker that did not answer is never confused with a later one. 0 before the first placement.
   */
  attempt: number
  submittedAt: number
  assignedAt: number | null
  startedAt: number | null
  finishedAt: number | null
  exitCode: number | null
  /** Why it failed or was cancelled, or why it waits (never fits anywhere). */
  reason: string | null
  logsTail: string
  /** Lines of the attempt's output, as its worker numbered them (logsTail holds the last); absent when unknown. */
  logLines?: number
  updatedAt: number
  history: TaskTransition[]
}

export interface TaskEvents {
  'task-changed': [task: TaskRecord, previous: TaskStatus | null]
  /** Removed by retention: its last record (final), and every worker it was ever placed on. */
  'task-pruned': [task: TaskRecord, workers: readonly string[]]
}
