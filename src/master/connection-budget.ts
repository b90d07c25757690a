import { readFileSync } from 'node:fs'
import { CloudaiError } from '../shared/errors.js'

// How many gRPC connections the master may hold open at once. Each is a file descriptor, and the
// process has a fixed number of them (RLIMIT_NOFILE; Node raises the soft limit to the hard one
// at start-up). Past that, accept() fails for everything: the HTTP API, the store, log files and
// the dial pool's sockets included. So the gRPC side gets the limit minus a reserve, and never
// more than GRPC_MAX_CONNECTIONS_DEFAULT unless the operator asks (and the limit allows it).

/** The default when the file-descriptor limit leaves room for it. */
export const GRPC_MAX_CONNECTIONS_DEFAULT = 20_000

/**
 * Descriptors kept for everything that is not a gRPC connection and has no bound of its own: the
 * store (SQLite's files or MongoDB's pool), stdio and log files, the listening sockets, the
 * threads' event fds, HTTP API requests, and the reconnection dials. WebSocket clients are bounded
 * by --ws-max-connections and come on top of this.
 */
export const FD_RESERVE_BASE = 256

/**
 * The soft RLIMIT_NOFILE of this process, from /proc/self/limits (Linux). Node has no getrlimit;
 * elsewhere, or when the file says "unlimited" or cannot be read, null: the flag's value stands.
 */
export function openFilesLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | null {
  let text: string
  try {
    text = read()
  } catch {
    return null
  }
  // "Max open files            20000                20000                files"
  const m = /^Max open files\s+(\d+|unlimited)\s+/m.exec(text)
  if (!m || m[1] === 'unlimited') return null
  return Number(m[1])
}

export interface ConnectionBudget {
  /** The gRPC connections the master serves at once. */
  max: number
  /** RLIMIT_NOFILE, when known. */
  fdLimit: number | null
  /** Descriptors kept back from the gRPC side. */
  reserve: number
  /** Set when the default had to be lowered below what the reserve wants: the master logs it. */
  warning?: string
}

/**
 * The effective --grpc-max-connections. Without the flag: 20,000, or the file-descriptor limit
 * minus the reserve when that is lower. A flag above what the limit allows is refused rather than
 * quietly lowered: the operator asked for a number the process cannot keep.
 * @throws CloudaiError CLOUDAI_BAD_CONFIG naming the flag, the limit and the reserve
 */
export function grpcConnectionBudget(requested: number | null, wsMaxConnections: number, fdLimit: number | null = openFilesLimit()): ConnectionBudget {
  const reserve = FD_RESERVE_BASE + wsMaxConnections
  if (fdLimit === null) return { max: requested ?? GRPC_MAX_CONNECTIONS_DEFAULT, fdLimit, reserve }
  const room = fdLimit - reserve
  const why = `the process may open ${fdLimit} files (ulimit -n) and keeps ${reserve} of them for everything else (${FD_RESERVE_BASE}, plus --ws-max-connections ${wsMaxConnections})`
  if (room < 1 && requested === null) {
    // Nobody asked for a number: a master on a small limit still starts, with half of it for gRPC
    // and a warning, rather than refusing a configuration the operator did not write.
    const max = Math.max(1, Math.floor(fdLimit / 2))
    return { max, fdLimit, reserve, warning: `${why}, which leaves none for gRPC connections: serving at most ${max}; raise the limit (ulimit -n, LimitNOFILE=) or lower --ws-max-connections` }
  }
  if (room < 1) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `no file descriptors are left for gRPC connections: ${why}; raise the limit (ulimit -n, LimitNOFILE=) or lower --ws-max-connections`, { flag: '--grpc-max-connections', env: 'CLOUDAI_GRPC_MAX_CONNECTIONS' })
  }
  if (requested === null) return { max: Math.min(GRPC_MAX_CONNECTIONS_DEFAULT, room), fdLimit, reserve }
  if (requested > room) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `--grpc-max-connections ${requested} is more than this process can hold: ${why}, which leaves ${room}; use at most ${room} or raise the limit (ulimit -n, LimitNOFILE=)`, { flag: '--grpc-max-connections', env: 'CLOUDAI_GRPC_MAX_CONNECTIONS' })
  }
  return { max: requested, fdLimit, reserve }
}
