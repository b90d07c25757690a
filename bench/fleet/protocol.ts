// IPC between the fleet (parent) and its child processes. Every command carries a sequence number;
// the child answers each with a Reply of the same number.

export interface SimWorkerSpec {
  id: string
  /** 0 on first spawn: any free port; the same port is kept across offline/online. */
  port: number
}

/** Unary SendHeartbeat per beat (CloudAI's workers), or one StreamHeartbeats call (ours, by default). */
export type HeartbeatTransport = 'unary' | 'stream'

export type Command =
  | { seq: number; type: 'spawn'; workers: SimWorkerSpec[]; heartbeatMs: number; transport?: HeartbeatTransport }
  /** Each worker calls RegisterWorker on `master` and starts heartbeating. */
  | { seq: number; type: 'join'; ids: string[]; master: string }
  /** Heartbeats stop, the client closes, the server closes (as a worker process that died). */
  | { seq: number; type: 'offline'; ids: string[] }
  /**
   * The server listens again on its port; with `join`, the worker calls RegisterWorker itself at
   * once, on `master` when given (a worker that never joined has no master of its own yet).
   */
  | { seq: number; type: 'online'; ids: string[]; join: boolean; master?: string }
  /**
   * While paused, a worker keeps listening but turns MasterRegister down (success false): it stays
   * inactive on the master without giving up its port, which another socket could take meanwhile.
   */
  | { seq: number; type: 'pause'; ids: string[]; paused: boolean }
  /** Workers that accept TCP connections and never answer. */
  | { seq: number; type: 'tarpits'; count: number }
  /** Every worker of the child sends its next heartbeats this way. */
  | { seq: number; type: 'transport'; transport: HeartbeatTransport }
  /** These workers also send a copy of each heartbeat, the same way, to `address` (null: no more). */
  | { seq: number; type: 'mirror'; ids: string[]; address: string | null }
  | { seq: number; type: 'stats' }
  /** How many times each task id was started in this child (a task run twice shows 2). */
  | { seq: number; type: 'executions' }
  /** The master addresses that sent this child's workers a MasterRegister. */
  | { seq: number; type: 'masters' }
  | { seq: number; type: 'stop' }

export interface ChildStats {
  heartbeatsSent: number
  heartbeatsFailed: number
  registers: number
  registerFailures: number
  masterRegisters: number
  tasksAssigned: number
  tasksFinished: number
  reportsFailed: number
  /** Mirrored heartbeats (or mirror streams) that failed. */
  mirrorFailed: number
}

export type Reply =
  | { seq: number; ok: true; workers?: { id: string; address: string }[]; addresses?: string[]; stats?: ChildStats; executions?: [string, number][]; masters?: string[] }
  | { seq: number; ok: false; error: string }
