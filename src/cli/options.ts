import type { LevelWithSilent } from 'pino'
import type { Options } from 'yargs'
import { accessSync, constants, readFileSync } from 'node:fs'
import { LOG_LEVELS, MASTER_DEFAULTS, MONGO_STORE_DEFAULTS, WORKER_DEFAULTS, type ClusterSecurity, type LogConfig, type MasterConfig, type StoreConfig, type WorkerConfig } from '../config.js'
import { formatDuration, formatLongDuration, parseDuration, parseLongDuration } from '../shared/duration.js'
import { TASK_LOG_IDLE_DEFAULT_MS, TASK_LOG_KEEPALIVE_MS } from '../shared/task-log-stream.js'
import { CloudaiError, isCloudaiError } from '../shared/errors.js'
import type { TaskStatus } from '../shared/types.js'
import { parseAddress, parsePort, validateAddress, validateString, validateTaskId, validateWorkerId } from '../shared/validation.js'
import { parseAllowedHost, parseAllowedOrigin } from '../master/api/guard.js'
import { LOG_TAIL_MAX, parseLogSince, parseMetricsQuery } from '../master/api/query.js'
import { GRPC_MAX_CONNECTIONS_DEFAULT } from '../master/connection-budget.js'
import { REDIAL_DEFAULTS } from '../master/reconnect/schedule.js'
import { checkDatabaseName, isMongoUri, validateMongoUri } from '../store/mongo-uri.js'
import { validateToken } from '../shared/worker-credential.js'
import type { TaskListQuery, TaskSubmitBody } from './api-client.js'

// The flags of every command, their CLOUDAI_* environment names, and the functions that turn
// parsed argv into the validated config objects of src/config.ts. Everything here is pure: main.ts
// owns yargs and the process. A bad value is refused with CLOUDAI_BAD_CONFIG naming the flag and
// what it accepts, which main.ts prints with exit code 2.

export const ENV_PREFIX = 'CLOUDAI'

/** `grpc-port` -> `CLOUDAI_GRPC_PORT`: the name yargs' `.env('CLOUDAI')` reads for the flag. */
export function envName(flag: string): string {
  return `${ENV_PREFIX}_${flag.replace(/-/g, '_').toUpperCase()}`
}

type Argv = Readonly<Record<string, unknown>>

/**
 * Appends the environment name to each description, since yargs' help does not show it. Valued
 * flags take exactly one argument: without `nargs` yargs reads `--dial-timeout -1s` as the short
 * flags -1 -s, and the user would hear about unknown flags instead of a negative duration.
 */
function withEnv(table: Record<string, Options>): Record<string, Options> {
  return Object.fromEntries(Object.entries(flagsOnly(table)).map(([flag, o]) => [flag, { ...o, describe: `${o.describe ?? ''} [env ${envName(flag)}]` }]))
}

/**
 * Flags that have no environment variable, because a default for them set once in a shell would
 * surprise: every task pinned to one worker, or a CLOUDAI_ENV meant for something else. They are
 * left out of COMMAND_KEYS, so such a variable is dropped instead of read.
 */
function flagsOnly(table: Record<string, Options>): Record<string, Options> {
  return Object.fromEntries(Object.entries(table).map(([flag, o]) => [flag, { ...o, ...(o.type === 'string' ? { nargs: 1 } : {}) }]))
}

// Ports and durations are declared as strings so that our validators, not yargs' number
// coercion, see what was typed: yargs would turn "80x" into NaN and "1e3" into 1000.
export const LOG_OPTIONS = withEnv({
  'log-level': { type: 'string', default: 'info', describe: `log level: ${LOG_LEVELS.join(', ')}` },
  'log-format': { type: 'string', describe: 'json (one object per line) or pretty (for people); default: pretty when stdout is a terminal, json otherwise' },
  'log-pretty': { type: 'boolean', describe: 'the same as --log-format pretty (--no-log-pretty: json); --log-format wins' },
})

const MAX_TELEMETRY_THREADS = 64
// Points per worker's history: 1 h at 1 s, 48 bytes each (about 170 KiB a worker).
const MAX_HISTORY_POINTS = 3600

// Secrets are better set in the environment than typed: argv is visible to every user in `ps`.
const SECURITY_OPTIONS = {
  'cluster-token': { type: 'string', describe: 'shared secret every gRPC call between master and workers must carry, in both directions (16 to 1024 printable characters); it proves membership, not identity: every holder can act as every worker' },
  'tls-cert': { type: 'string', describe: 'PEM certificate for gRPC over TLS (with --tls-key)' },
  'tls-key': { type: 'string', describe: 'PEM private key of --tls-cert' },
  'tls-ca': { type: 'string', describe: 'PEM CA: peers must present certificates it signed (mutual TLS), and servers are verified against it; a certificate\'s URI SAN spiffe://cloudai/worker/<id> or spiffe://cloudai/master then names its holder' },
} satisfies Record<string, Options>

const M = MONGO_STORE_DEFAULTS
const GRPC_IDLE_MIN_MS = 1_000
const GRPC_IDLE_MAX_MS = 24 * 3_600_000
const GRPC_MAX_CONNECTIONS_MAX = 1_000_000
/** --requeue-after at most: a day (a worker silent that long is not coming back with its tasks). */
const REQUEUE_AFTER_MAX_MS = 24 * 3_600_000
const RECONNECT_RATE_MAX = 100_000
/** Below the dialer's 65,536 cancel slots, which the suspect probes share. */
const RECONNECT_INFLIGHT_MAX = 50_000
const JOURNAL_LIMIT_MIN = 100
// --store-heartbeat-interval: at least a second (more often is a write per heartbeat again), at most
// ten minutes (the store's last-seen of a worker is that old at worst).
const STORE_HEARTBEAT_MIN_MS = 1000
const STORE_HEARTBEAT_MAX_MS = 600_000
const JOURNAL_LIMIT_MAX = 10_000_000
const POOL_SIZE_MAX = 1000
// Retention: down to a second so that tests (and an operator trying it) see it act; up to a year.
const RETENTION_MIN_MS = 1_000
const RETENTION_MAX_MS = 365 * 86_400_000
const MAX_FINISHED_TASKS_MAX = 10_000_000
const OUTPUT_TAIL_MIN = 1024
const OUTPUT_TAIL_MAX = 1024 * 1024
// The lease (issue 19): renewals at least every 50 ms and at most every minute; a timeout from
// 300 ms (tests) to 10 minutes, and at least LEASE_RENEWALS_PER_TIMEOUT renewals within it, so that
// one slow or lost renewal does not depose a healthy leader.
const LEASE_RENEW_MIN_MS = 50
const LEASE_RENEW_MAX_MS = 60_000
const LEASE_TIMEOUT_MIN_MS = 300
const LEASE_TIMEOUT_MAX_MS = 600_000
const LEASE_RENEWALS_PER_TIMEOUT = 3
const RETENTION_RANGE = `${formatLongDuration(RETENTION_MIN_MS)} to ${formatLongDuration(RETENTION_MAX_MS)}`

/** What --task-retention says, for the master and the worker alike. */
const taskRetentionDescription = (what: string): string => `${what} this long after it finished (${RETENTION_RANGE}: s, m, h or d)`

// The MongoDB settings have no yargs default, so that giving one to a SQLite master can be told
// from not giving it (and refused); their defaults are applied in buildStore.
const STORE_OPTIONS = {
  store: { type: 'string', default: 'sqlite', describe: 'where workers and tasks are kept: sqlite (a file under --data-dir) or a mongodb:// / mongodb+srv:// URI (better set in the environment: it carries the password)' },
  'store-database': { type: 'string', describe: `MongoDB database (default ${M.database})` },
  'store-server-selection-timeout': { type: 'string', describe: `MongoDB: how long an operation waits for a usable server (100ms to 10m, default ${formatDuration(M.serverSelectionTimeoutMs)})` },
  'store-connect-timeout': { type: 'string', describe: `MongoDB: deadline of one TCP/TLS connection attempt (100ms to 10m, default ${formatDuration(M.connectTimeoutMs)})` },
  'store-socket-timeout': { type: 'string', describe: `MongoDB: silence on an open connection after which it is dropped (1s to 1h, default ${formatDuration(M.socketTimeoutMs)})` },
  'store-pool-size': { type: 'string', describe: `MongoDB: connections at most (1 to ${POOL_SIZE_MAX}, default ${M.maxPoolSize})` },
  'store-journal-limit': { type: 'string', default: String(MASTER_DEFAULTS.storeJournalLimit), describe: `changes held while the store is down before they are coalesced per worker and per task (${JOURNAL_LIMIT_MIN} to ${JOURNAL_LIMIT_MAX}; nothing is dropped)` },
  'store-heartbeat-interval': { type: 'string', default: formatDuration(MASTER_DEFAULTS.storeHeartbeatIntervalMs), describe: `how often the workers' last heartbeat, usage and running tasks are written to the store, in one batch (${formatDuration(STORE_HEARTBEAT_MIN_MS)} to ${formatDuration(STORE_HEARTBEAT_MAX_MS)}; state changes are written at once)` },
  'accept-while-degraded': { type: 'boolean', default: MASTER_DEFAULTS.acceptWhileDegraded, describe: 'while the store is down, accept POST /api/tasks (kept in memory, flagged not durable) instead of answering 503' },
} satisfies Record<string, Options>

const MONGO_ONLY_FLAGS = ['store-database', 'store-server-selection-timeout', 'store-connect-timeout', 'store-socket-timeout', 'store-pool-size'] as const

export const MASTER_OPTIONS = withEnv({
  'master-id': { type: 'string', default: MASTER_DEFAULTS.masterId, describe: 'identity sent to workers in MasterRegister' },
  'grpc-host': { type: 'string', default: MASTER_DEFAULTS.grpcHost, describe: 'interface for the gRPC server' },
  'grpc-port': { type: 'string', default: String(MASTER_DEFAULTS.grpcPort), describe: 'gRPC port workers call (0 = any free port)' },
  'http-host': { type: 'string', default: MASTER_DEFAULTS.httpHost, describe: 'interface for the HTTP API' },
  'http-port': { type: 'string', default: String(MASTER_DEFAULTS.httpPort), describe: 'HTTP API port (0 = any free port)' },
  advertise: { type: 'string', describe: 'host:port workers call back on (default: this host and the gRPC port)' },
  'data-dir': { type: 'string', default: MASTER_DEFAULTS.dataDir, describe: 'directory of the SQLite store' },
  'reconnect-interval': { type: 'string', default: formatDuration(MASTER_DEFAULTS.reconnectIntervalMs), describe: 'time between reconnection passes (0 disables them)' },
  'reconnect-fast-window': { type: 'string', default: formatDuration(MASTER_DEFAULTS.reconnectFastWindowMs), describe: `a worker that went inactive within this long is re-dialled every ${REDIAL_DEFAULTS.firstDelayMs}ms to ${formatDuration(REDIAL_DEFAULTS.fastCapMs)}, not once per interval (0 = only once per interval; up to 24h)` },
  'reconnect-rate': { type: 'string', default: String(MASTER_DEFAULTS.reconnectRatePerSec), describe: `reconnection dials started per second at most, which bounds what dead workers cost (1 to ${RECONNECT_RATE_MAX})` },
  'reconnect-max-inflight': { type: 'string', default: String(MASTER_DEFAULTS.reconnectMaxInflight), describe: `reconnection dials in flight at most (1 to ${RECONNECT_INFLIGHT_MAX})` },
  'dial-timeout': { type: 'string', default: formatDuration(MASTER_DEFAULTS.dialTimeoutMs), describe: 'deadline of one MasterRegister dial (more than 0)' },
  'heartbeat-timeout': { type: 'string', default: formatDuration(MASTER_DEFAULTS.heartbeatTimeoutMs), describe: 'silence after which a worker is inactive (more than 0)' },
  'requeue-after': { type: 'string', describe: `how long an inactive worker's tasks wait before they are requeued; a worker back within it keeps them (0 = at once; up to ${formatDuration(REQUEUE_AFTER_MAX_MS)}; default: the heartbeat timeout)` },
  'dial-threads': { type: 'string', default: String(MASTER_DEFAULTS.dialThreads), describe: 'threads of the dial pool (0 = from the cores)' },
  dialer: { type: 'string', default: MASTER_DEFAULTS.dialer, describe: 'where reconnection dials run: pool (threads) or inline (the main thread; for comparison only)' },
  'shutdown-grace': { type: 'string', default: formatDuration(MASTER_DEFAULTS.shutdownGraceMs), describe: 'time in-flight gRPC calls get at shutdown' },
  'grpc-idle-timeout': { type: 'string', default: formatDuration(MASTER_DEFAULTS.grpcIdleTimeoutMs), describe: `a gRPC connection with no call open for this long is closed; a heartbeat stream is a call (${formatDuration(GRPC_IDLE_MIN_MS)} to ${formatDuration(GRPC_IDLE_MAX_MS)})` },
  'grpc-max-connections': { type: 'string', describe: `gRPC connections open at once; more are closed as they arrive (1 to ${GRPC_MAX_CONNECTIONS_MAX}; default ${GRPC_MAX_CONNECTIONS_DEFAULT}, or fewer to stay below the file-descriptor limit minus a reserve for the API and the store)` },
  'telemetry-threads': { type: 'string', default: String(MASTER_DEFAULTS.telemetryThreads), describe: `where heartbeats are processed: per-worker (a thread each), auto (from the cores) or a thread count up to ${MAX_TELEMETRY_THREADS}` },
  'telemetry-history': { type: 'string', default: formatDuration(MASTER_DEFAULTS.telemetryHistoryMs), describe: 'usage history kept per worker (1m to 24h)' },
  'telemetry-step': { type: 'string', default: formatDuration(MASTER_DEFAULTS.telemetryStepMs), describe: 'width of one history point (100ms to 10m; samples within it are averaged)' },
  'health-max-inactive': { type: 'string', default: formatDuration(MASTER_DEFAULTS.healthMaxInactiveMs), describe: '/healthz fails when a worker is inactive longer than this (more than 0)' },
  'health-reconnect-within': { type: 'string', default: formatDuration(MASTER_DEFAULTS.healthReconnectWithinMs), describe: '/healthz fails when an inactive worker was not dialled within this (more than 0)' },
  'ws-max-buffer': { type: 'string', default: '1MiB', describe: 'a WebSocket client this far behind is closed; telemetry to it pauses at half (bytes, or with KiB / MiB: 16KiB to 256MiB)' },
  'ws-max-connections': { type: 'string', default: String(MASTER_DEFAULTS.wsMaxConnections), describe: 'WebSocket connections served at once (1 to 100000)' },
  'api-token': { type: 'string', describe: 'require Authorization: Bearer <token> on the HTTP API and the WebSocket (all but /healthz and the dashboard page); 16 to 1024 printable characters' },
  'api-allow-host': {
    type: 'string',
    array: true,
    describe: 'another name the HTTP API answers to in Host (a host name or IP address, no port), besides localhost, 127.0.0.1, ::1 and --http-host (bound to 0.0.0.0 or ::, also this machine\'s host name and addresses); repeat it or give a comma list',
  },
  'api-allow-origin': {
    type: 'string',
    array: true,
    describe: 'origin (http:// or https://, host, optional port) of another site whose pages may call the HTTP API and open /ws; the dashboard needs none; repeat it or give a comma list',
  },
  'master-key-file': { type: 'string', describe: 'the master\'s secret key (created with mode 0600 at the first start): workers\' tokens derive from it; back it up apart from the store (default <data-dir>/master.key)' },
  'worker-auth': { type: 'string', default: MASTER_DEFAULTS.workerAuth, describe: 'token: worker calls must carry the worker\'s token, or with --tls-ca a certificate naming it (without either only from loopback, for workers that never presented theirs); none: accept calls without a token from anywhere, for CloudAI workers (warned about every minute)' },
  'task-retention': { type: 'string', default: formatLongDuration(MASTER_DEFAULTS.taskRetentionMs), describe: taskRetentionDescription('a finished task (completed, failed, cancelled) is removed from memory, the API and the store') },
  'max-finished-tasks': { type: 'string', default: String(MASTER_DEFAULTS.maxFinishedTasks), describe: `finished tasks kept at most; past it the oldest finished are removed first (1 to ${MAX_FINISHED_TASKS_MAX})` },
  'task-output-tail': { type: 'string', default: '64KiB', describe: 'bytes of each task\'s output the master keeps, its end (1KiB to 1MiB); the worker keeps the whole log for its --task-retention' },
  'token-grace': { type: 'string', default: formatDuration(MASTER_DEFAULTS.tokenGraceMs), describe: 'after `cloudai token rotate`, how long the old token still works if the worker does not present the new one first (0 to 168h)' },
  standby: { type: 'boolean', default: MASTER_DEFAULTS.standby, describe: 'start as a standby of the master that holds the store\'s lease: serve the API and gRPC as a standby (503 CLOUDAI_NOT_LEADER naming the leader), load nothing, take over when its lease lapses; the one way to share a store (with SQLite: a --data-dir) with a running master' },
  'lease-renew': { type: 'string', default: formatDuration(MASTER_DEFAULTS.leaseRenewMs), describe: `how often the leader renews its lease in the store and a standby polls it (${formatDuration(LEASE_RENEW_MIN_MS)} to ${formatDuration(LEASE_RENEW_MAX_MS)}; at most a third of --lease-timeout)` },
  'lease-timeout': { type: 'string', default: formatDuration(MASTER_DEFAULTS.leaseTimeoutMs), describe: `a leader that could not renew its lease for this long stops acting and goes back to standby (so does one whose store does not answer for this long); a standby takes over about this long after the leader died (${formatDuration(LEASE_TIMEOUT_MIN_MS)} to ${formatDuration(LEASE_TIMEOUT_MAX_MS)})` },
  ...STORE_OPTIONS,
  ...SECURITY_OPTIONS,
})

export const WORKER_OPTIONS = withEnv({
  id: { type: 'string', demandOption: true, describe: 'worker id: 1 to 64 characters of A-Z a-z 0-9 . _ -' },
  host: { type: 'string', default: WORKER_DEFAULTS.host, describe: 'interface for the worker gRPC server' },
  port: { type: 'string', default: String(WORKER_DEFAULTS.port), describe: 'worker gRPC port (0 = any free port)' },
  master: { type: 'string', describe: 'host:port of the master to join at start, or several comma-separated (a leader and its standbys: the worker joins whichever leads and follows takeovers); only these may make it follow them (default: wait for MasterRegister from any master)' },
  advertise: { type: 'string', describe: 'host:port the master should dial (default: this host and the bound port)' },
  'heartbeat-interval': { type: 'string', default: formatDuration(WORKER_DEFAULTS.heartbeatIntervalMs), describe: 'time between heartbeats (more than 0)' },
  'join-max-backoff': { type: 'string', default: formatDuration(WORKER_DEFAULTS.joinMaxBackoffMs), describe: 'cap of the join / re-join backoff (more than 0)' },
  'data-dir': { type: 'string', default: WORKER_DEFAULTS.dataDir, describe: 'directory of task working dirs, task logs and undelivered results' },
  'kill-grace': { type: 'string', default: formatDuration(WORKER_DEFAULTS.killGraceMs), describe: 'time a cancelled or timed-out task gets between SIGTERM and SIGKILL (more than 0)' },
  'task-retention': { type: 'string', default: formatLongDuration(WORKER_DEFAULTS.taskRetentionMs), describe: taskRetentionDescription('a finished task\'s directory under --data-dir (its work dir and full output log) is removed') },
  'token-file': { type: 'string', describe: 'file holding this worker\'s token (as `cloudai register` printed it; surrounding whitespace is ignored)' },
  'master-auth': { type: 'string', default: WORKER_DEFAULTS.masterAuth, describe: 'proof: MasterRegister, AssignTask and CancelTask need the master\'s proof (with a token), with --tls-ca or the master\'s certificate, or a caller on this machine that is not a worker (without); none: serve them to any caller, for a CloudAI master (warned about every minute)' },
  // CLOUDAI_WORKER_TOKEN: the environment's name for --token (CLOUDAI_TOKEN would not say whose).
  'worker-token': { type: 'string', hidden: true, describe: 'the same as --token' },
  ...SECURITY_OPTIONS,
})

/**
 * `--token` has no CLOUDAI_TOKEN: it would not say which of the three tokens it is. Its
 * environment name is CLOUDAI_WORKER_TOKEN (the hidden --worker-token above), so it is left out of
 * COMMAND_KEYS and a CLOUDAI_TOKEN in the environment is dropped instead of read.
 */
export const WORKER_TOKEN_OPTION: Record<string, Options> = flagsOnly({
  token: { type: 'string', describe: 'this worker\'s token, as `cloudai register` printed it; sent on every call to the master and checked against the master\'s proofs (better: CLOUDAI_WORKER_TOKEN or --token-file, since ps shows argv) [env CLOUDAI_WORKER_TOKEN]' },
})

export const DEFAULT_API = 'http://127.0.0.1:8080'

export const API_OPTIONS = withEnv({
  api: { type: 'string', default: DEFAULT_API, describe: 'base URL of the master HTTP API' },
  json: { type: 'boolean', default: false, describe: 'print the raw JSON response (for scripts)' },
  'api-token': { type: 'string', describe: 'the master\'s --api-token, sent as Authorization: Bearer' },
})

// `task submit`: the task's needs and limits may come from the environment (a shell that always
// submits to the GPU pool); its target, name and variables are per task.
const TASK_SUBMIT_ENV_OPTIONS = withEnv({
  cpu: { type: 'string', describe: 'CPU cores the task needs (a number, 0 or more)' },
  mem: { type: 'string', describe: 'memory the task needs, in GB' },
  gpu: { type: 'string', describe: 'GPUs the task needs' },
  storage: { type: 'string', describe: 'storage the task needs, in GB' },
  timeout: { type: 'string', describe: 'time limit of one run, e.g. 30s, 10m, 2h (0 = none)' },
  'max-attempts': { type: 'string', describe: 'runs at most this many times (a whole number, 1 or more)' },
  image: { type: 'string', describe: 'run the command in this Docker image (the worker needs a Docker engine)' },
})

export const TASK_SUBMIT_OPTIONS: Record<string, Options> = {
  ...TASK_SUBMIT_ENV_OPTIONS,
  ...flagsOnly({
    worker: { type: 'string', describe: 'run it on this worker only (target_worker_id)' },
    name: { type: 'string', describe: 'a name to recognise it by in the task list' },
    env: { type: 'string', array: true, describe: 'KEY=VALUE set in the environment of the command; repeat it for more' },
  }),
}

const TASKS_ENV_OPTIONS = withEnv({
  limit: { type: 'string', describe: 'show at most this many tasks, 1 to 1000 (default 100)' },
})

export const TASKS_OPTIONS: Record<string, Options> = {
  ...flagsOnly({
    status: { type: 'string', describe: 'only tasks in this status: queued (or pending), assigned, running, completed, failed, cancelled' },
  }),
  ...TASKS_ENV_OPTIONS,
  ...flagsOnly({
    offset: { type: 'string', describe: 'skip this many of the newest tasks first (default 0)' },
  }),
}

export type CommandName = 'master' | 'worker' | 'register' | 'unregister' | 'token' | 'cordon' | 'uncordon' | 'drain' | 'workers' | 'status' | 'health' | 'metrics' | 'watch' | 'task' | 'tasks' | 'cancel' | 'logs'

// `drain <id>`: how to drain is a choice made per call, never the shell's.
export const DRAIN_OPTIONS: Record<string, Options> = flagsOnly({
  deadline: { type: 'string', describe: 'after this long (30s, 10m, 1h), cancel and requeue what still runs there (no attempt counted); default: none, wait for it to finish' },
  force: { type: 'boolean', default: false, describe: 'do not wait for what runs there: cancel and requeue it now (no attempt counted)' },
  detach: { type: 'boolean', default: false, describe: 'return once the drain started, instead of waiting (with progress) until the worker is drained' },
})

// `logs <id>`: what to read of a task's output.
/** `logs --idle-timeout`: from a second (a test, a link known to be quick) to an hour. */
const LOG_IDLE_MIN_MS = 1_000
const LOG_IDLE_MAX_MS = 3_600_000

export const LOGS_OPTIONS: Record<string, Options> = flagsOnly({
  follow: { alias: 'f', type: 'boolean', default: false, describe: 'follow the output until the task ends, then exit with its exit code' },
  tail: { type: 'string', describe: 'only the last N lines (1 to 100000), then follow with -f' },
  since: { type: 'string', describe: 'only the lines from this time on: a duration back from now (10m, 2h, 1d) or an RFC 3339 time (2026-12-01T19:00:00Z)' },
  after: { type: 'string', describe: 'only the lines after this sequence number (what a reader saw last; the API\'s SSE id)' },
  timestamps: { type: 'boolean', default: false, describe: 'start each line with the time the worker read it (RFC 3339)' },
  'idle-timeout': { type: 'string', default: formatDuration(TASK_LOG_IDLE_DEFAULT_MS), describe: `with nothing from the master for this long (it sends a keepalive every ${formatDuration(TASK_LOG_KEEPALIVE_MS)}), count the connection as lost and reconnect (${formatDuration(LOG_IDLE_MIN_MS)} to ${formatDuration(LOG_IDLE_MAX_MS)})` },
})

export interface LogsOptions {
  follow: boolean
  tail: number
  /** Lines after this sequence number; 0 = from the first. */
  after: number
  /** `--since` as typed (checked), or null. */
  since: string | null
  timestamps: boolean
  /** Nothing read for this long: the connection is lost (a cut link, a master stopped dead). */
  idleTimeoutMs: number
}

/** `logs` flags, checked with the route's own limits. */
export function buildLogsOptions(argv: Argv): LogsOptions {
  return {
    follow: argv.follow === true,
    tail: optional(argv, 'tail', wholeNumber(1, LOG_TAIL_MAX)) ?? 0,
    after: optional(argv, 'after', wholeNumber(0)) ?? 0,
    since: optional(argv, 'since', logSince) ?? null,
    timestamps: argv.timestamps === true,
    idleTimeoutMs: optional(argv, 'idle-timeout', durationWithin(LOG_IDLE_MIN_MS, LOG_IDLE_MAX_MS)) ?? TASK_LOG_IDLE_DEFAULT_MS,
  }
}

// `register --wait`: waiting is a choice made per call.
export const REGISTER_OPTIONS: Record<string, Options> = flagsOnly({
  wait: { type: 'boolean', default: false, describe: 'wait until the worker is active (connected), with a spinner on a terminal' },
  timeout: { type: 'string', default: '60s', describe: 'with --wait: give up after this long (exit code 1; the worker stays registered)' },
})

export const WATCH_OPTIONS: Record<string, Options> = flagsOnly({
  metrics: { type: 'boolean', default: false, describe: 'also show each worker\'s telemetry (about one line per worker per heartbeat)' },
})

// `metrics <id> --since`: a start time belongs to one question, never to the shell.
export const METRICS_OPTIONS: Record<string, Options> = flagsOnly({
  since: { type: 'string', describe: 'history from this time: an ISO 8601 time, epoch ms, or a duration back from now (15m, 1h); default: all kept' },
})

/** Flags and positionals each command takes: the CLOUDAI_* variables that apply to it. */
export const COMMAND_KEYS: Readonly<Record<CommandName, readonly string[]>> = {
  master: [...Object.keys(MASTER_OPTIONS), ...Object.keys(LOG_OPTIONS)],
  worker: [...Object.keys(WORKER_OPTIONS), ...Object.keys(LOG_OPTIONS)],
  register: [...Object.keys(API_OPTIONS), 'id', 'address'],
  unregister: [...Object.keys(API_OPTIONS), 'id'],
  cordon: [...Object.keys(API_OPTIONS), 'id'],
  uncordon: [...Object.keys(API_OPTIONS), 'id'],
  drain: [...Object.keys(API_OPTIONS), 'id'],
  // `token rotate <id>`: the first word is all envOnlyKeys sees.
  token: [...Object.keys(API_OPTIONS), 'id'],
  workers: Object.keys(API_OPTIONS),
  status: Object.keys(API_OPTIONS),
  health: Object.keys(API_OPTIONS),
  metrics: [...Object.keys(API_OPTIONS), 'id'],
  watch: Object.keys(API_OPTIONS),
  // `task <id>`, `task submit`, `task cancel <id>`: the first word is all envOnlyKeys sees.
  task: [...Object.keys(API_OPTIONS), ...Object.keys(TASK_SUBMIT_ENV_OPTIONS), 'id'],
  tasks: [...Object.keys(API_OPTIONS), ...Object.keys(TASKS_ENV_OPTIONS)],
  cancel: [...Object.keys(API_OPTIONS), 'id'],
  logs: [...Object.keys(API_OPTIONS), 'id'],
}

/**
 * yargs' `.env(prefix)` reads every variable with the prefix, and `.strict()` then refuses the
 * ones that are not flags of the command being run (yargs/yargs#873): CLOUDAI_PORT, meant for
 * workers, would stop a master from starting. These are the argv keys that such variables put
 * there, so that main.ts can drop them before validation. A key also typed on the command line is
 * left in place for strict mode to refuse.
 */
export function envOnlyKeys(env: Readonly<Record<string, string | undefined>>, command: unknown, args: readonly string[]): string[] {
  const known = new Set(typeof command === 'string' && Object.hasOwn(COMMAND_KEYS, command) ? COMMAND_KEYS[command as CommandName] : [])
  const keys: string[] = []
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || !name.startsWith(`${ENV_PREFIX}_`)) continue
    // yargs-parser nests on `__` (CLOUDAI_A__B is a.b); the first segment is the argv key.
    const flag = name.slice(ENV_PREFIX.length + 1).split('__')[0]!.toLowerCase().replace(/_+/g, '-').replace(/^-|-$/g, '')
    if (flag === '' || known.has(flag)) continue
    const forms = [flag, flag.replace(/-(.)/g, (_, c: string) => c.toUpperCase())]
    const typed = args.some((a) => forms.some((f) => a === `--${f}` || a.startsWith(`--${f}=`) || a === `--no-${f}`))
    if (!typed) keys.push(...new Set(forms))
  }
  return keys
}

// --- building the config objects ---------------------------------------------------------------

/** The shared validators have codes of their own (CLOUDAI_BAD_ADDRESS, ...); on the command line all are config errors. */
function asConfigError<T>(run: () => T, details?: Record<string, unknown>): T {
  try {
    return run()
  } catch (err) {
    if (isCloudaiError(err) && err.code !== 'CLOUDAI_BAD_CONFIG') throw new CloudaiError('CLOUDAI_BAD_CONFIG', err.message, details)
    throw err
  }
}

/**
 * A single-valued flag given more than once is its last value, as with getopt tools and kubectl:
 * a wrapper script appends its overrides. yargs collects the values of a repeated flag in an array
 * (and so does the prompt's parseFlags). yargs' `duplicate-arguments-array: false` would keep the
 * last one instead, but it does so for array flags too and cuts --env down to its last variable;
 * hence the rule is here, on the path of every flag of both front ends.
 */
function lastGiven(value: unknown): unknown {
  return Array.isArray(value) ? value.at(-1) : value
}

/** Runs a validator under the flag's name, so that its message names the flag; a repeated flag is its last value. */
function flag<T>(name: string, value: unknown, parse: (value: unknown, field: string) => T): T {
  return asConfigError(() => parse(lastGiven(value), `--${name}`), flagDetails(name))
}

/** A repeatable flag (`array: true` in its table, like --env): every value given, in order. */
function repeated<T>(argv: Argv, name: string, parse: (values: readonly unknown[], field: string) => T): T | undefined {
  const value = argv[name]
  if (value === undefined) return undefined
  return asConfigError(() => parse(Array.isArray(value) ? value : [value], `--${name}`), flagDetails(name))
}

function flagDetails(name: string): Record<string, unknown> {
  return { flag: `--${name}`, env: envName(name) }
}

/** The flag's value, or `fallback` when it was not given (argv built by hand in tests omits defaults). */
function read<T>(argv: Argv, name: string, fallback: T, parse: (value: unknown, field: string) => T): T {
  const value = argv[name]
  return value === undefined ? fallback : flag(name, value, parse)
}

function optionalAddress(argv: Argv, name: string): string | null {
  return read<string | null>(argv, name, null, validateAddress)
}

/** The most addresses --master takes: a leader and its standbys, not a fleet. */
export const MAX_MASTERS = 16

/** `--master a,b`: one address or several, comma-separated, each host:port, none twice. */
function masterList(value: unknown, field: string): string[] {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} needs host:port, or several separated by commas (a leader and its standbys), for example 10.0.0.1:50051,10.0.0.2:50051`)
  }
  const items = value.split(',').map((item) => item.trim())
  if (items.length > MAX_MASTERS) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} lists ${items.length} addresses; at most ${MAX_MASTERS}`)
  const out: string[] = []
  items.forEach((item, i) => {
    const which = items.length > 1 ? `${field} address ${i + 1} of ${items.length}` : field
    if (item === '') throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${which} is empty: separate host:port addresses with single commas, for example 10.0.0.1:50051,10.0.0.2:50051`)
    const address = validateAddress(item, which)
    if (out.includes(address)) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} lists ${address} twice`)
    out.push(address)
  })
  return out
}

function positiveDuration(value: unknown, field: string): number {
  const ms = parseDuration(value, field)
  if (ms === 0) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} must be more than 0: use for example 500ms, 3s or 1m`)
  return ms
}

function port(value: unknown, field: string): number {
  return parsePort(value, field, true)
}

/** A bind interface: a DNS name, an IPv4 address or an IPv6 literal (`::`, or bracketed `[::]`). */
function bindHost(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} is required: a host name or an IP address, for example 0.0.0.0`)
  }
  // Kept bare: the servers bracket IPv6 literals themselves when they bind.
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value
  try {
    parseAddress(`${bare.includes(':') ? `[${bare}]` : bare}:1`, field)
  } catch {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value.slice(0, 80))} is not a host name or an IP address (for example 0.0.0.0, 127.0.0.1 or ::)`)
  }
  return bare
}

const MAX_DIAL_THREADS = 256

function dialThreads(value: unknown, field: string): number {
  const text = typeof value === 'number' ? String(value) : value
  if (typeof text !== 'string' || !/^\d{1,3}$/.test(text) || Number(text) > MAX_DIAL_THREADS) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a thread count: use 0 (from the cores) or a whole number up to ${MAX_DIAL_THREADS}`)
  }
  return Number(text)
}

/** A token: 16 to 1024 printable ASCII characters, no spaces (it travels in headers and metadata). */
function secret(value: unknown, field: string): string {
  if (typeof value !== 'string' || !/^[\x21-\x7e]{16,1024}$/.test(value)) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} must be 16 to 1024 printable characters without spaces (for example the output of \`openssl rand -hex 32\`)`)
  }
  return value
}

/** A file that must be readable now: a typo should stop the start, not the first handshake. */
function readableFile(value: unknown, field: string): string {
  const path = nonEmpty(4096)(value, field)
  try {
    accessSync(path, constants.R_OK)
  } catch (err) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(path)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  return path
}

function buildSecurity(argv: Argv): ClusterSecurity {
  const clusterToken = read<string | null>(argv, 'cluster-token', null, secret)
  const certPath = read<string | null>(argv, 'tls-cert', null, readableFile)
  const keyPath = read<string | null>(argv, 'tls-key', null, readableFile)
  const caPath = read<string | null>(argv, 'tls-ca', null, readableFile)
  if ((certPath === null) !== (keyPath === null)) throw new CloudaiError('CLOUDAI_BAD_CONFIG', '--tls-cert and --tls-key go together: give both, or neither')
  if (caPath !== null && certPath === null) throw new CloudaiError('CLOUDAI_BAD_CONFIG', '--tls-ca needs --tls-cert and --tls-key: every process both serves and calls gRPC')
  return { clusterToken, tls: certPath !== null && keyPath !== null ? { certPath, keyPath, caPath } : null }
}

function telemetryThreads(value: unknown, field: string): 'per-worker' | 'auto' | number {
  if (value === 'per-worker' || value === 'auto') return value
  const text = typeof value === 'number' ? String(value) : value
  if (typeof text !== 'string' || !/^\d{1,3}$/.test(text) || Number(text) < 1 || Number(text) > MAX_TELEMETRY_THREADS) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a telemetry placement: use per-worker, auto or a whole number from 1 to ${MAX_TELEMETRY_THREADS}`)
  }
  return Number(text)
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kib: 1024, kb: 1024, k: 1024, mib: 1024 ** 2, mb: 1024 ** 2, m: 1024 ** 2 }

/** Bytes: `65536`, `64KiB`, `1MiB` (KB and MB are read as KiB and MiB). */
function byteSize(min: number, max: number) {
  return (value: unknown, field: string): number => {
    const m = typeof value === 'string' ? /^(\d{1,12})\s*([a-zA-Z]*)$/.exec(value) : typeof value === 'number' ? [String(value), String(value), ''] : null
    const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined
    const bytes = m && unit !== undefined ? Number(m[1]) * unit : Number.NaN
    if (!(bytes >= min && bytes <= max)) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a size from ${min / 1024}KiB to ${max / 1024 ** 2}MiB: use bytes, or a number with KiB or MiB`)
    }
    return bytes
  }
}

function durationWithin(min: number, max: number) {
  return (value: unknown, field: string): number => {
    const ms = parseDuration(value, field)
    if (ms < min || ms > max) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is out of range: use from ${formatDuration(min)} to ${formatDuration(max)}`)
    return ms
  }
}

/** --task-retention: 1s to 365d, in days too. */
function retention(value: unknown, field: string): number {
  const ms = parseLongDuration(value, field, RETENTION_MAX_MS)
  if (ms < RETENTION_MIN_MS) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is out of range: use from ${RETENTION_RANGE}`)
  return ms
}

function dialerKind(value: unknown, field: string): 'pool' | 'inline' {
  if (value !== 'pool' && value !== 'inline') {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a dialer: use pool or inline`)
  }
  return value
}

function logLevel(value: unknown, field: string): LevelWithSilent {
  if (typeof value !== 'string' || !(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a log level: use one of ${LOG_LEVELS.join(', ')}`)
  }
  return value as LevelWithSilent
}

function bool(value: unknown, field: string): boolean {
  if (typeof value === 'boolean') return value
  if (value === 'true' || value === '1') return true
  if (value === 'false' || value === '0' || value === '') return false
  throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a boolean: use true or false`)
}

function nonEmpty(max: number) {
  return (value: unknown, field: string): string => {
    const text = validateString(value, field, { required: true, max })
    if (text.trim() !== text) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(text)} must not start or end with spaces`)
    return text
  }
}

const LOG_FORMATS = ['json', 'pretty'] as const

function logFormat(value: unknown, field: string): (typeof LOG_FORMATS)[number] {
  if (typeof value === 'string' && (LOG_FORMATS as readonly string[]).includes(value)) return value as (typeof LOG_FORMATS)[number]
  throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a log format: use json or pretty`)
}

/** pino's convention: people at a terminal read pretty lines, anything else gets JSON lines. */
export function buildLogConfig(argv: Argv, terminal = process.stdout.isTTY === true): LogConfig {
  const level = read(argv, 'log-level', 'info' as LevelWithSilent, logLevel)
  const format = read<string | null>(argv, 'log-format', null, logFormat)
  const pretty = read<boolean | null>(argv, 'log-pretty', null, bool)
  return { level, pretty: format !== null ? format === 'pretty' : (pretty ?? terminal) }
}

export function buildMasterConfig(argv: Argv): MasterConfig {
  const config = readMasterConfig(argv)
  if (config.leaseRenewMs * LEASE_RENEWALS_PER_TIMEOUT > config.leaseTimeoutMs) {
    throw new CloudaiError(
      'CLOUDAI_BAD_CONFIG',
      `--lease-renew ${formatDuration(config.leaseRenewMs)} is too close to --lease-timeout ${formatDuration(config.leaseTimeoutMs)}: renew at most every ${formatDuration(Math.floor(config.leaseTimeoutMs / LEASE_RENEWALS_PER_TIMEOUT))} (a third of the timeout), so that one slow renewal does not depose a healthy leader`,
      flagDetails('lease-renew'),
    )
  }
  const points = Math.ceil(config.telemetryHistoryMs / config.telemetryStepMs)
  if (points > MAX_HISTORY_POINTS) {
    throw new CloudaiError(
      'CLOUDAI_BAD_CONFIG',
      `--telemetry-history ${formatDuration(config.telemetryHistoryMs)} at --telemetry-step ${formatDuration(config.telemetryStepMs)} is ${points} points per worker: at most ${MAX_HISTORY_POINTS}; use a wider step or a shorter history`,
    )
  }
  return config
}

function readMasterConfig(argv: Argv): MasterConfig {
  const d = MASTER_DEFAULTS
  return {
    masterId: read(argv, 'master-id', d.masterId, nonEmpty(128)),
    grpcHost: read(argv, 'grpc-host', d.grpcHost, bindHost),
    grpcPort: read(argv, 'grpc-port', d.grpcPort, port),
    httpHost: read(argv, 'http-host', d.httpHost, bindHost),
    httpPort: read(argv, 'http-port', d.httpPort, port),
    advertise: optionalAddress(argv, 'advertise'),
    dataDir: read(argv, 'data-dir', d.dataDir, nonEmpty(4096)),
    store: buildStore(argv),
    storeJournalLimit: read(argv, 'store-journal-limit', d.storeJournalLimit, wholeNumber(JOURNAL_LIMIT_MIN, JOURNAL_LIMIT_MAX)),
    storeHeartbeatIntervalMs: read(argv, 'store-heartbeat-interval', d.storeHeartbeatIntervalMs, durationWithin(STORE_HEARTBEAT_MIN_MS, STORE_HEARTBEAT_MAX_MS)),
    acceptWhileDegraded: read(argv, 'accept-while-degraded', d.acceptWhileDegraded, bool),
    // 0 is allowed here: it turns the monitor off (the master warns about it).
    reconnectIntervalMs: read(argv, 'reconnect-interval', d.reconnectIntervalMs, parseDuration),
    reconnectFastWindowMs: read(argv, 'reconnect-fast-window', d.reconnectFastWindowMs, durationWithin(0, 24 * 3_600_000)),
    reconnectRatePerSec: read(argv, 'reconnect-rate', d.reconnectRatePerSec, wholeNumber(1, RECONNECT_RATE_MAX)),
    reconnectMaxInflight: read(argv, 'reconnect-max-inflight', d.reconnectMaxInflight, wholeNumber(1, RECONNECT_INFLIGHT_MAX)),
    dialTimeoutMs: read(argv, 'dial-timeout', d.dialTimeoutMs, positiveDuration),
    heartbeatTimeoutMs: read(argv, 'heartbeat-timeout', d.heartbeatTimeoutMs, positiveDuration),
    requeueAfterMs: read<number | null>(argv, 'requeue-after', d.requeueAfterMs, durationWithin(0, REQUEUE_AFTER_MAX_MS)),
    dialThreads: read(argv, 'dial-threads', d.dialThreads, dialThreads),
    dialer: read(argv, 'dialer', d.dialer, dialerKind),
    shutdownGraceMs: read(argv, 'shutdown-grace', d.shutdownGraceMs, parseDuration),
    grpcIdleTimeoutMs: read(argv, 'grpc-idle-timeout', d.grpcIdleTimeoutMs, durationWithin(GRPC_IDLE_MIN_MS, GRPC_IDLE_MAX_MS)),
    grpcMaxConnections: read<number | null>(argv, 'grpc-max-connections', d.grpcMaxConnections, wholeNumber(1, GRPC_MAX_CONNECTIONS_MAX)),
    telemetryThreads: read(argv, 'telemetry-threads', d.telemetryThreads, telemetryThreads),
    telemetryHistoryMs: read(argv, 'telemetry-history', d.telemetryHistoryMs, durationWithin(60_000, 24 * 3_600_000)),
    telemetryStepMs: read(argv, 'telemetry-step', d.telemetryStepMs, durationWithin(100, 600_000)),
    healthMaxInactiveMs: read(argv, 'health-max-inactive', d.healthMaxInactiveMs, positiveDuration),
    healthReconnectWithinMs: read(argv, 'health-reconnect-within', d.healthReconnectWithinMs, positiveDuration),
    wsMaxBufferBytes: read(argv, 'ws-max-buffer', d.wsMaxBufferBytes, byteSize(16 * 1024, 256 * 1024 * 1024)),
    wsMaxConnections: read(argv, 'ws-max-connections', d.wsMaxConnections, wholeNumber(1, 100_000)),
    apiToken: read<string | null>(argv, 'api-token', null, secret),
    apiAllowHosts: repeated(argv, 'api-allow-host', listOf(parseAllowedHost)) ?? d.apiAllowHosts,
    apiAllowOrigins: repeated(argv, 'api-allow-origin', listOf(parseAllowedOrigin)) ?? d.apiAllowOrigins,
    masterKeyFile: read<string | null>(argv, 'master-key-file', d.masterKeyFile, nonEmpty(4096)),
    workerAuth: read(argv, 'worker-auth', d.workerAuth, oneOf(['token', 'none'] as const)),
    tokenGraceMs: read(argv, 'token-grace', d.tokenGraceMs, durationWithin(0, 7 * 24 * 3_600_000)),
    standby: read(argv, 'standby', d.standby, bool),
    leaseRenewMs: read(argv, 'lease-renew', d.leaseRenewMs, durationWithin(LEASE_RENEW_MIN_MS, LEASE_RENEW_MAX_MS)),
    leaseTimeoutMs: read(argv, 'lease-timeout', d.leaseTimeoutMs, durationWithin(LEASE_TIMEOUT_MIN_MS, LEASE_TIMEOUT_MAX_MS)),
    taskRetentionMs: read(argv, 'task-retention', d.taskRetentionMs, retention),
    maxFinishedTasks: read(argv, 'max-finished-tasks', d.maxFinishedTasks, wholeNumber(1, MAX_FINISHED_TASKS_MAX)),
    taskOutputTailBytes: read(argv, 'task-output-tail', d.taskOutputTailBytes, byteSize(OUTPUT_TAIL_MIN, OUTPUT_TAIL_MAX)),
    ...buildSecurity(argv),
    log: buildLogConfig(argv),
  }
}

/** A repeatable flag whose values may also be comma lists (an environment variable is one value). */
function listOf(parse: (value: string, field: string) => string) {
  return (values: readonly unknown[], field: string): string[] => {
    const out: string[] = []
    for (const value of values) {
      if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} takes text, got ${JSON.stringify(value)}`)
      for (const item of value.split(',')) {
        if (item.trim() === '') continue
        const parsed = parse(item, field)
        if (!out.includes(parsed)) out.push(parsed)
      }
    }
    return out
  }
}

function oneOf<const T extends string>(values: readonly T[]) {
  return (value: unknown, field: string): T => {
    if (typeof value !== 'string' || !(values as readonly string[]).includes(value)) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not allowed: use ${values.join(' or ')}`)
    }
    return value as T
  }
}

/**
 * The worker's token from --token, --token-file or CLOUDAI_WORKER_TOKEN: one of them at most, so
 * that nobody wonders which one a worker runs with. The file is read now: a wrong path or a
 * damaged token stops the start. The value is never quoted back in a message.
 */
function workerToken(argv: Argv): { token: string | null; tokenFile: string | null } {
  const given = (['token', 'token-file', 'worker-token'] as const).filter((f) => argv[f] !== undefined)
  if (given.length > 1) {
    const names = given.map((f) => (f === 'worker-token' ? 'CLOUDAI_WORKER_TOKEN' : `--${f}`)).join(' and ')
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${names} were both given: give the worker's token one way`)
  }
  if (argv.token !== undefined) return { token: flag('token', argv.token, validateToken), tokenFile: null }
  if (argv['worker-token'] !== undefined) return { token: asConfigError(() => validateToken(lastGiven(argv['worker-token']), 'CLOUDAI_WORKER_TOKEN')), tokenFile: null }
  if (argv['token-file'] === undefined) return { token: null, tokenFile: null }
  const path = flag('token-file', argv['token-file'], nonEmpty(4096))
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `--token-file ${JSON.stringify(path)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, flagDetails('token-file'))
  }
  return { token: asConfigError(() => validateToken(text.trim(), `the content of --token-file ${JSON.stringify(path)}`)), tokenFile: path }
}

type StoreTarget = { kind: 'sqlite' } | { kind: 'mongodb'; uri: string }

/** `sqlite` or a MongoDB URI. The value is never quoted back: a mistyped URI may hold a password. */
function storeTarget(value: unknown, field: string): StoreTarget {
  if (value === 'sqlite') return { kind: 'sqlite' }
  if (typeof value === 'string' && isMongoUri(value)) return { kind: 'mongodb', uri: validateMongoUri(value, field) }
  throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} must be sqlite or a MongoDB URI (mongodb://host:port or mongodb+srv://host)`)
}

function databaseName(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} must be a database name`)
  return checkDatabaseName(value, field)
}

function buildStore(argv: Argv): StoreConfig {
  const target = read<StoreTarget>(argv, 'store', { kind: 'sqlite' }, storeTarget)
  if (target.kind === 'sqlite') {
    const given = MONGO_ONLY_FLAGS.filter((f) => argv[f] !== undefined)
    if (given.length > 0) {
      const names = given.map((f) => `--${f}`).join(', ')
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${names} only apply to a MongoDB store, and --store is sqlite: give --store a mongodb:// URI (or ${envName('store')}), or drop ${given.length > 1 ? 'them' : 'it'}`, {
        flag: `--${given[0]}`,
        env: envName(given[0]!),
      })
    }
    return { kind: 'sqlite' }
  }
  return {
    kind: 'mongodb',
    uri: target.uri,
    database: read(argv, 'store-database', M.database, databaseName),
    serverSelectionTimeoutMs: read(argv, 'store-server-selection-timeout', M.serverSelectionTimeoutMs, durationWithin(100, 600_000)),
    connectTimeoutMs: read(argv, 'store-connect-timeout', M.connectTimeoutMs, durationWithin(100, 600_000)),
    socketTimeoutMs: read(argv, 'store-socket-timeout', M.socketTimeoutMs, durationWithin(1_000, 3_600_000)),
    maxPoolSize: read(argv, 'store-pool-size', M.maxPoolSize, wholeNumber(1, POOL_SIZE_MAX)),
  }
}

export function buildWorkerConfig(argv: Argv): WorkerConfig {
  const d = WORKER_DEFAULTS
  return {
    id: flag('id', argv.id, validateWorkerId),
    host: read(argv, 'host', d.host, bindHost),
    port: read(argv, 'port', d.port, port),
    masters: read(argv, 'master', [...d.masters], masterList),
    advertise: optionalAddress(argv, 'advertise'),
    heartbeatIntervalMs: read(argv, 'heartbeat-interval', d.heartbeatIntervalMs, positiveDuration),
    joinMaxBackoffMs: read(argv, 'join-max-backoff', d.joinMaxBackoffMs, positiveDuration),
    dataDir: read(argv, 'data-dir', d.dataDir, nonEmpty(4096)),
    killGraceMs: read(argv, 'kill-grace', d.killGraceMs, positiveDuration),
    taskRetentionMs: read(argv, 'task-retention', d.taskRetentionMs, retention),
    ...workerToken(argv),
    masterAuth: read(argv, 'master-auth', d.masterAuth, oneOf(['proof', 'none'] as const)),
    ...buildSecurity(argv),
    log: buildLogConfig(argv),
  }
}

export interface ApiCommandOptions {
  /** Base URL without a trailing slash. */
  api: string
  json: boolean
  apiToken: string | null
}

function apiUrl(value: unknown, field: string): string {
  const allowed = `must be an http:// or https:// URL, for example ${DEFAULT_API}`
  if (typeof value !== 'string' || !URL.canParse(value)) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} ${allowed}`)
  const url = new URL(value)
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} ${allowed}`)
  }
  return url.href.replace(/\/+$/, '')
}

export function buildApiOptions(argv: Argv): ApiCommandOptions {
  return {
    api: read(argv, 'api', DEFAULT_API, apiUrl),
    json: read(argv, 'json', false, bool),
    apiToken: read<string | null>(argv, 'api-token', null, secret),
  }
}

/** The `<id>` argument of register / unregister. */
export function parseWorkerIdArg(value: unknown): string {
  return asConfigError(() => validateWorkerId(value, 'worker id'))
}

/** The `<host:port>` argument of register. */
export function parseAddressArg(value: unknown): string {
  return asConfigError(() => validateAddress(value, 'address'))
}

/**
 * `task submit [options] -- <command...>`: the words after `--` are the task's command, kept
 * away from yargs, which would parse numbers in them ("600" -> 600, "0x10" -> 16) and could take
 * a later `--cpu` for one of our flags. Other commands get their arguments untouched.
 */
export function splitTaskCommand(args: readonly string[]): { args: string[]; command: string[] | null } {
  const dashes = args.indexOf('--')
  // Global flags may come first, with their values (`--api http://… task submit -- …`): the
  // command is `task submit` wherever it stands among the words before `--`.
  const words = (dashes < 0 ? args : args.slice(0, dashes)).filter((a) => !a.startsWith('-'))
  const at = words.indexOf('task')
  if (dashes < 0 || at < 0 || words[at + 1] !== 'submit') return { args: [...args], command: null }
  return { args: args.slice(0, dashes), command: args.slice(dashes + 1) }
}

// --- tasks ---------------------------------------------------------------------------------------

/** The `<id>` argument of task / cancel, checked with the master's own rule. */
export function parseTaskIdArg(value: unknown): string {
  return asConfigError(() => validateTaskId(value))
}

const AMOUNT = /^\d+(?:\.\d+)?$/
const WHOLE = /^\d{1,15}$/
const ENV_ENTRY = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s

/** Cores, GB, GPUs: a plain decimal, 0 or more ("1e3", "0x10", "-1" and "" are refused). */
function amount(value: unknown, field: string): number {
  const text = typeof value === 'number' ? String(value) : value
  const n = typeof text === 'string' && AMOUNT.test(text) ? Number(text) : Number.NaN
  if (!Number.isFinite(n)) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not an amount: use a number, 0 or more, for example 2 or 0.5`)
  return n
}

function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: unknown, field: string): number => {
    const text = typeof value === 'number' ? String(value) : value
    const n = typeof text === 'string' && WHOLE.test(text) ? Number(text) : Number.NaN
    if (!(n >= min && n <= max)) {
      const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not allowed: use a whole number ${range}`)
    }
    return n
  }
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} must be text, got ${JSON.stringify(value)}`)
  return value
}

/** `--env KEY=VALUE`, repeatable; the value may contain `=` and be empty. */
function envEntries(values: readonly unknown[], field: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const entry of values) {
    const match = typeof entry === 'string' ? ENV_ENTRY.exec(entry) : null
    if (!match) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(entry)} is not KEY=VALUE: use for example ${field} MODE=fast (KEY: letters, digits and _, not starting with a digit)`)
    }
    const key = match[1]!
    const val = match[2]!
    // The same variable twice: the later one wins, as with `docker run -e` (a wrapper appends overrides).
    out[key] = val
  }
  return out
}

/** Only the flags that were given: the master applies its own defaults to the rest. */
function optional<T>(argv: Argv, name: string, parse: (value: unknown, field: string) => T): T | undefined {
  return argv[name] === undefined ? undefined : flag(name, argv[name], parse)
}

/** `task submit`'s body fields by the flag each comes from, for the master's answers. */
export const TASK_SUBMIT_FLAGS: Readonly<Record<string, string>> = {
  name: '--name',
  req_cpu: '--cpu',
  req_memory: '--mem',
  req_gpu: '--gpu',
  req_storage: '--storage',
  target_worker_id: '--worker',
  timeout_s: '--timeout',
  max_attempts: '--max-attempts',
  env: '--env',
  docker_image: '--image',
}

/**
 * The POST /api/tasks body of `task submit`: the flags (argv as yargs or the prompt parsed them)
 * and the words of the command, joined with spaces. A single argument is the command as it is, so
 * `-- 'make test | tee log'` keeps its pipe. Throws CLOUDAI_BAD_CONFIG naming the flag.
 */
export function buildTaskSubmitBody(argv: Argv, words: readonly string[]): TaskSubmitBody {
  const command = words.join(' ')
  // With --image and no command, the image's own entrypoint runs (as CloudAI runs such a task).
  if (command.trim() === '' && argv.image === undefined) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', 'the task needs a command after -- (or --image alone, to run the image\'s entrypoint), for example: task submit --cpu 1 -- echo hello')
  }
  const fields: Omit<TaskSubmitBody, 'command'> = {
    name: optional(argv, 'name', text),
    req_cpu: optional(argv, 'cpu', amount),
    req_memory: optional(argv, 'mem', amount),
    req_gpu: optional(argv, 'gpu', amount),
    req_storage: optional(argv, 'storage', amount),
    target_worker_id: optional(argv, 'worker', validateWorkerId),
    timeout_s: optional(argv, 'timeout', (v, f) => parseDuration(v, f) / 1000),
    max_attempts: optional(argv, 'max-attempts', wholeNumber(1)),
    env: repeated(argv, 'env', envEntries),
    docker_image: optional(argv, 'image', text),
  }
  const given = Object.entries(fields).filter(([, v]) => v !== undefined)
  return { command, ...Object.fromEntries(given) }
}

/** Every TaskStatus, checked by the compiler; CloudAI's `pending` is our `queued`. */
const TASK_STATUSES = { queued: true, assigned: true, running: true, completed: true, failed: true, cancelled: true } as const satisfies Record<TaskStatus, true>
export const TASK_LIST_MAX = 1000

function taskStatus(value: unknown, field: string): TaskStatus {
  if (value === 'pending') return 'queued'
  if (typeof value === 'string' && Object.hasOwn(TASK_STATUSES, value)) return value as TaskStatus
  throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a task status: use one of ${Object.keys(TASK_STATUSES).join(', ')} (pending means queued)`)
}

/** `tasks [--status S] [--limit N] [--offset M]`, validated as the master validates the query. */
export function buildTaskQuery(argv: Argv): TaskListQuery {
  const query: TaskListQuery = {}
  const status = optional(argv, 'status', taskStatus)
  const limit = optional(argv, 'limit', wholeNumber(1, TASK_LIST_MAX))
  const offset = optional(argv, 'offset', wholeNumber(0))
  if (status !== undefined) query.status = status
  if (limit !== undefined) query.limit = limit
  if (offset !== undefined) query.offset = offset
  return query
}

/** `logs --since`: checked with the route's own rules, sent as typed (the master reads the duration on its clock). */
function logSince(value: unknown): string {
  try {
    if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'since must be a string')
    parseLogSince(value, Date.now())
    return value
  } catch (err) {
    if (!isCloudaiError(err)) throw err
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `--${err.message.replace('; to read after a line\'s sequence number, use after=', '; to read after a line\'s sequence number, use --after ')}`)
  }
}

/** `metrics --since`: checked here with the master's own rules, sent as typed. */
export function parseSinceArg(given: unknown): string | undefined {
  const value = lastGiven(given)
  if (value === undefined) return undefined
  try {
    if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'since must be a string')
    parseMetricsQuery(new URLSearchParams({ since: value }).toString(), Date.now())
    return value
  } catch (err) {
    if (!isCloudaiError(err)) throw err
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `--${err.message}`)
  }
}

/** The POST /api/workers/{id}/drain body (`deadline_s` only when given). */
export interface DrainBody {
  deadline_s?: number
  force: boolean
}

/** `drain <id> [--deadline D] [--force] [--detach]`; --deadline and --force together are refused (force has no deadline to wait for). */
export function buildDrainRequest(argv: Argv): { body: DrainBody; detach: boolean } {
  const deadlineMs = read<number | null>(argv, 'deadline', null, positiveDuration)
  const force = read(argv, 'force', false, bool)
  if (force && deadlineMs !== null) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', '--force and --deadline do not go together: --force cancels and requeues what runs there now; --deadline waits that long first', { flag: '--force' })
  }
  const body: DrainBody = deadlineMs === null ? { force } : { deadline_s: deadlineMs / 1000, force }
  return { body, detach: read(argv, 'detach', false, bool) }
}

/** `register --wait --timeout`. */
export function buildRegisterWait(argv: Argv): { wait: boolean; timeoutMs: number } {
  return { wait: read(argv, 'wait', false, bool), timeoutMs: read(argv, 'timeout', 60_000, positiveDuration) }
}
