// TypeScript shapes of the proto messages as @grpc/proto-loader delivers them (keepCase, longs as
// numbers, defaults filled in). Field names are the wire names; see proto/cloudai.proto.

export interface WorkerInfoMsg {
  worker_id: string
  worker_ip: string
  total_cpu: number
  total_memory: number
  total_storage: number
  total_gpu: number
}

/**
 * cloudai addition (issue 19) on MasterInfo, Task and TaskID: the calling master's epoch from its
 * lease (NO_EPOCH, 0, from a master without one and from CloudAI's, which send none). Optional
 * when sending: WorkerClients and the dial stamp it; always there when received (defaults).
 */
interface MasterEpochField {
  master_epoch?: number
}

export interface MasterInfoMsg extends MasterEpochField {
  master_id: string
  master_address: string
}

export interface RegisterAckMsg {
  success: boolean
  message: string
}

export interface RunningTaskMsg {
  task_id: string
  cpu_allocated: number
  memory_allocated: number
  status: string
  gpu_allocated: number
  attempt: number
}

export interface HeartbeatMsg {
  worker_id: string
  cpu_usage: number
  memory_usage: number
  storage_usage: number
  running_tasks: RunningTaskMsg[]
  gpu_usage: number
}

export interface HeartbeatAckMsg {
  success: boolean
}

export interface TaskMsg extends MasterEpochField {
  task_id: string
  docker_image: string
  command: string
  req_cpu: number
  req_memory: number
  req_storage: number
  req_gpu: number
  target_worker_id: string
  user_id: string
  sla_multiplier: number
  task_type: string
  task_name: string
  submitted_at: number
  timeout_ms: number
  env: Record<string, string>
  attempt: number
}

export interface TaskAckMsg {
  success: boolean
  message: string
  /**
   * cloudai addition: AssignTask refused (success false) because the worker already has another
   * attempt of the task, running or finished with its result not yet delivered: that attempt's
   * number. 0 (or absent: CloudAI's workers, our other answers) otherwise.
   */
  held_attempt?: number
}

export interface TaskIdMsg extends MasterEpochField {
  task_id: string
}

export interface TaskResultMsg {
  task_id: string
  worker_id: string
  status: string
  logs: string
  result_location: string
  output_files: string[]
  exit_code: number
  duration_ms: number
  started_at: number
  finished_at: number
  attempt: number
  reason: string
  /** exit_code is meaningful (proto3 cannot tell 0 from unset). */
  has_exit_code: boolean
  /** Lines of the attempt's output (0 from a CloudAI worker: unknown); `logs` holds the last of them. */
  log_lines?: number
}

export interface AckMsg {
  success: boolean
  message: string
}

export interface TaskLogRequestMsg {
  task_id: string
  user_id: string
  follow: boolean
  /** cloudai additions (0 = unset). */
  from_seq: number
  tail: number
}

export interface LogChunkMsg {
  task_id: string
  content: string
  /** A string, CloudAI's type: RFC 3339 from cloudai workers (see proto/cloudai.proto). */
  timestamp: string
  is_complete: boolean
  status: string
  /** cloudai additions (see proto/cloudai.proto). */
  seq: number
  stream: string
  gap: boolean
  missed: number
  exit_code: number
  has_exit_code: boolean
  attempt: number
  /** Unix milliseconds (cloudai addition; 0 from CloudAI's workers). */
  time_ms: number
}
