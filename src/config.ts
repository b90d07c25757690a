import type { LevelWithSilent } from 'pino'
import { BUDGET_DEFAULTS } from './master/reconnect/budget.js'

// One validated config object per process. The CLI (yargs, with CLOUDAI_* environment
// equivalents) builds these; nothing else reads argv or the environment.

export interface LogConfig {
  level: LevelWithSilent
  pretty: boolean
}

/** The levels --log-level takes (here, not beside the logger: the CLI's client commands load no pino). */
export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** PEM files of a process's gRPC TLS: its certificate and key, and the CA it trusts. */
export interface TlsConfig {
  certPath: string
  keyPath: string
  /**
   * Clients verify servers against it, and servers require client certificates signed by it
   * (mutual TLS). Without it clients trust the system's CAs and servers ask for no certificate.
   */
  caPath: string | null
}

/**
 * What protects the gRPC side: a shared token checked in both directions, and TLS. The cluster
 * token proves membership, not identity: every holder can act as every other; who a worker is
 * comes from its own token (worker-credential.ts).
 */
export interface ClusterSecurity {
  /** Sent as `cloudai-cluster-token` metadata on every call, required on every call received. */
  clusterToken: string | null
  tls: TlsConfig | null
}

/** Where the master persists workers and tasks. */
export type StoreConfig =
  | { kind: 'sqlite' }
  | {
      kind: 'mongodb'
      /** mongodb:// or mongodb+srv:// URI, credentials included; never logged as given. */
      uri: string
      database: string
      serverSelectionTimeoutMs: number
      connectTimeoutMs: number
      socketTimeoutMs: number
      maxPoolSize: number
    }

export interface MasterConfig extends ClusterSecurity {
  /** Identity sent to workers in MasterRegister (CloudAI used `master-1`). */
  masterId: string
  grpcHost: string
  /** 0 means any free port; the chosen one is logged. */
  grpcPort: number
  httpHost: string
  httpPort: number
  /** host:port workers should call back on; defaults to <grpcHost or 127.0.0.1>:<bound gRPC port>. */
  advertise: string | null
  /** The SQLite store's directory (the default store). */
  dataDir: string
  store: StoreConfig
  /**
   * Changes the journal holds for a store that is down before it coalesces them (latest state
   * per worker and per task); nothing is dropped.
   */
  storeJournalLimit: number
  /**
   * How often the workers' heartbeat fields (last heartbeat, usage, running tasks) are written to
   * the store, for the whole fleet in one batch; state changes are written at once, never waiting for it.
   */
  storeHeartbeatIntervalMs: number
  /** POST /api/tasks while the store is down: keep the task in memory (flagged not durable) instead of 503. */
  acceptWhileDegraded: boolean
  /** A finished task (completed, failed, cancelled) is removed from memory and the store this long after it finished. */
  taskRetentionMs: number
  /** Finished tasks kept at most; past it the oldest finished are removed first. */
  maxFinishedTasks: number
  /** Bytes of each task's output the master keeps (its end); the worker keeps the whole log. */
  taskOutputTailBytes: number
  /** 0 disables the monitor (with a warning). */
  reconnectIntervalMs: number
  /** A worker that went inactive within this long is re-dialled often (src/master/reconnect/schedule.ts); 0: only once per interval. */
  reconnectFastWindowMs: number
  /** Reconnection dials started per second at most (src/master/reconnect/budget.ts). */
  reconnectRatePerSec: number
  /** Reconnection dials in flight at most. */
  reconnectMaxInflight: number
  dialTimeoutMs: number
  heartbeatTimeoutMs: number
  /**
   * How long the tasks of a worker that went inactive wait before they are requeued: a worker back
   * within it keeps them (nothing requeued, nothing killed). 0: at once. Null: the heartbeat timeout.
   */
  requeueAfterMs: number | null
  /** Threads of the Piscina dial pool (0 = from the cores). */
  dialThreads: number
  /** `inline` dials on the main thread instead of the pool: only to measure what the pool is for. */
  dialer: 'pool' | 'inline'
  /** Time the gRPC server gives in-flight calls at shutdown before it cancels them. */
  shutdownGraceMs: number
  /** A gRPC connection with no call open for this long is closed (a heartbeat stream is a call). */
  grpcIdleTimeoutMs: number
  /**
   * gRPC connections open at once. Null: 20,000, or fewer where the file-descriptor limit minus
   * a reserve for the API and the store is lower (src/master/connection-budget.ts).
   */
  grpcMaxConnections: number | null
  /** Where telemetry lanes run: a thread per worker, `auto` (from the cores) or that many threads. */
  telemetryThreads: 'per-worker' | 'auto' | number
  /** History kept per worker. */
  telemetryHistoryMs: number
  /** Width of one history point (samples within it are averaged, peaks kept). */
  telemetryStepMs: number
  /** /healthz: a worker inactive for longer makes the master unhealthy. */
  healthMaxInactiveMs: number
  /** /healthz: every inactive worker must have been dialled within this long. */
  healthReconnectWithinMs: number
  /** A WebSocket client this far behind is closed (telemetry to it pauses at half). */
  wsMaxBufferBytes: number
  wsMaxConnections: number
  /** When set, every HTTP route but /healthz and the dashboard's files, and every WebSocket, needs `Authorization: Bearer <token>`. */
  apiToken: string | null
  /**
   * Names (host names or IP addresses) the HTTP API answers to in Host besides its defaults:
   * loopback, httpHost, and for a wildcard httpHost the machine's host name and addresses.
   */
  apiAllowHosts: readonly string[]
  /** Origins (`https://host[:port]`) of other sites whose pages may call the HTTP API and open /ws. */
  apiAllowOrigins: readonly string[]
  /**
   * The master's secret (0600): workers' tokens are derived from it and its proofs to workers made
   * with it. Null: `<dataDir>/master.key`. Created at the first start.
   */
  masterKeyFile: string | null
  /**
   * `token`: worker calls must carry the worker's token, except from loopback for a worker that
   * has never presented one. `none`: calls without a token are accepted from anywhere for such
   * workers (CloudAI workers send none); warned about at start and every minute.
   */
  workerAuth: 'token' | 'none'
  /** After a rotation, how long the old token still works if the worker does not present the new one first. */
  tokenGraceMs: number
  /**
   * Starts as a standby (issue 19): serves its API and gRPC as a standby, loads nothing, and takes
   * over when the leader's lease in the shared store lapses. The one way to share a store (and,
   * with SQLite, a data directory) with a running master.
   */
  standby: boolean
  /** How often the leader renews its lease in the store, and how often a standby polls it. */
  leaseRenewMs: number
  /**
   * A leader that has not renewed for this long (on its own monotonic clock, from when it sent the
   * last renewal that succeeded) stops acting and goes back to standby; a standby takes over about
   * this long after a leader died.
   */
  leaseTimeoutMs: number
  log: LogConfig
}

export interface WorkerConfig extends ClusterSecurity {
  id: string
  host: string
  port: number
  /**
   * host:port of the masters to join at start (worker-initiated join): one, or a leader and its
   * standbys (`--master a,b`), tried in turn; the only masters whose MasterRegister is followed.
   * Empty: waits for MasterRegister from any master.
   */
  masters: string[]
  /** host:port the master should dial; defaults to <first non-internal IPv4 or host>:<bound port>. */
  advertise: string | null
  heartbeatIntervalMs: number
  /** Upper bound of the join/re-join backoff. */
  joinMaxBackoffMs: number
  /** Task working directories, log files and undelivered results (the outbox). */
  dataDir: string
  /** Time a cancelled or timed-out task gets between SIGTERM and SIGKILL. */
  killGraceMs: number
  /** A finished task's directory (work dir and full log) is removed this long after it finished. */
  taskRetentionMs: number
  /**
   * This worker's token, as `cloudai register` printed it: sent on every call to the master, and
   * the key the master's proofs are checked with. Null: calls carry none, and the master's calls
   * (MasterRegister, AssignTask, CancelTask) are served to loopback callers only.
   */
  token: string | null
  /** Where the token was read from (to warn when others can read it); null when not from a file. */
  tokenFile: string | null
  /**
   * `proof`: MasterRegister, AssignTask and CancelTask need the master's proof (with a token), or
   * come from loopback (without). `none`: served to any caller, for a CloudAI master (it sends no
   * proof); warned about at start and every minute.
   */
  masterAuth: 'proof' | 'none'
  log: LogConfig
}

export const MASTER_DEFAULTS: Omit<MasterConfig, 'log'> = {
  masterId: 'master-1',
  grpcHost: '0.0.0.0',
  grpcPort: 50051,
  httpHost: '127.0.0.1',
  httpPort: 8080,
  advertise: null,
  dataDir: './data',
  store: { kind: 'sqlite' },
  storeJournalLimit: 10_000,
  storeHeartbeatIntervalMs: 15_000,
  acceptWhileDegraded: false,
  taskRetentionMs: 7 * 86_400_000,
  maxFinishedTasks: 100_000,
  taskOutputTailBytes: 64 * 1024,
  reconnectIntervalMs: 30_000,
  reconnectFastWindowMs: 600_000,
  // One source for the budget's defaults: budget.ts says why (what 5,000 dead workers cost).
  reconnectRatePerSec: BUDGET_DEFAULTS.ratePerSec,
  reconnectMaxInflight: BUDGET_DEFAULTS.maxInflight,
  dialTimeoutMs: 3_000,
  heartbeatTimeoutMs: 15_000,
  requeueAfterMs: null,
  dialThreads: 0,
  dialer: 'pool',
  shutdownGraceMs: 5_000,
  grpcIdleTimeoutMs: 300_000,
  grpcMaxConnections: null,
  telemetryThreads: 'auto',
  telemetryHistoryMs: 3_600_000,
  telemetryStepMs: 5_000,
  healthMaxInactiveMs: 300_000,
  healthReconnectWithinMs: 60_000,
  wsMaxBufferBytes: 1024 * 1024,
  wsMaxConnections: 1000,
  apiToken: null,
  apiAllowHosts: [],
  apiAllowOrigins: [],
  masterKeyFile: null,
  workerAuth: 'token',
  tokenGraceMs: 3_600_000,
  standby: false,
  leaseRenewMs: 1_000,
  leaseTimeoutMs: 5_000,
  clusterToken: null,
  tls: null,
}

/** What a MongoDB store gets for the settings not given (the URI has no default). */
export const MONGO_STORE_DEFAULTS: Omit<Extract<StoreConfig, { kind: 'mongodb' }>, 'kind' | 'uri'> = {
  database: 'cloudai',
  serverSelectionTimeoutMs: 5_000,
  connectTimeoutMs: 10_000,
  socketTimeoutMs: 30_000,
  maxPoolSize: 10,
}

export const WORKER_DEFAULTS: Omit<WorkerConfig, 'id' | 'log'> = {
  host: '0.0.0.0',
  port: 50052,
  masters: [],
  advertise: null,
  heartbeatIntervalMs: 5_000,
  joinMaxBackoffMs: 5_000,
  dataDir: './worker-data',
  killGraceMs: 5_000,
  taskRetentionMs: 7 * 86_400_000,
  token: null,
  tokenFile: null,
  masterAuth: 'proof',
  clusterToken: null,
  tls: null,
}
