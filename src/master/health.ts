import type { WorkerRecord } from '../shared/types.js'
import type { MonitorState } from './reconnect/monitor.js'

// The CloudAI guide's health criteria, as one pure function of the master's state:
//   - the reconnection monitor is running;
//   - inactive workers reconnect within a minute of coming up: every worker inactive for longer than
//     that has been dialled within that time (a worker that comes up is found by its next dial);
//     one inside its fast re-dial window (src/master/reconnect/schedule.ts) is held to the
//     schedule's promise instead: dialled within two fast caps and a dial timeout;
//   - no worker has been inactive for more than 5 minutes.
// A drained worker (drains.ts) counts in neither: an operator took it out of service to stop it.
// Thresholds are configurable. /healthz answers 503 with the reasons and the worker ids.

export interface HealthThresholds {
  /** A worker inactive longer than this makes the master unhealthy. */
  maxInactiveMs: number
  /** Every inactive worker must have been dialled within this long. */
  reconnectWithinMs: number
}

export type HealthCheck = 'reconnect-monitor' | 'reconnect-latency' | 'inactive-workers' | 'store'

export interface HealthReason {
  check: HealthCheck
  message: string
  worker_ids?: string[]
  /** How many workers fail the check (worker_ids lists at most MAX_IDS of them). */
  count?: number
}

/** The store as /healthz reports it: degraded while the journal holds what it could not write. */
export interface StoreHealth {
  kind: string
  status: 'ok' | 'degraded'
  /** Changes journalled and not yet in the store. */
  backlog: number
  degraded_since: string | null
  last_error: string | null
}

/** Something an operator must know that does not make the master unhealthy (it is configured so). */
export interface HealthWarning {
  check: 'worker-auth'
  message: string
}

export interface HealthReport {
  /**
   * `degraded` (HTTP 200) when only the store is down: the master works from memory and must not be
   * restarted for it (a restart would drop the journal); `unhealthy` (503) for the other checks.
   */
  status: 'healthy' | 'degraded' | 'unhealthy'
  reasons: HealthReason[]
  /** Configured weaknesses, e.g. --worker-auth none; they never change `status`. (Absent from older masters.) */
  warnings?: HealthWarning[]
  store: StoreHealth
  reconnect_monitor: MonitorState
  /** `inactive` leaves out drained workers that are stopped: a planned stop (so total may exceed active + inactive). */
  workers: { total: number; active: number; inactive: number }
  thresholds: { max_inactive_ms: number; reconnect_within_ms: number }
}

export interface HealthInput {
  now: number
  /** When this master started: a worker's inactivity before it is not this master's to judge. */
  startedAt: number
  monitor: MonitorState
  lastDialStartedAt: (id: string) => number | null
  /**
   * How long this worker may go undialled, when the reconnection schedule promises more than the
   * threshold (a worker inside its fast re-dial window); null: `thresholds.reconnectWithinMs`.
   */
  dialWithinMs?: (id: string) => number | null
  workers: Iterable<WorkerRecord>
  thresholds: HealthThresholds
  store: StoreHealth
  warnings?: HealthWarning[]
}

const MAX_IDS = 100

export function checkHealth(input: HealthInput): HealthReport {
  const { now, thresholds } = input
  const reasons: HealthReason[] = []
  const tooLong: string[] = []
  const undialled: string[] = []
  /** Of those, workers inside their fast re-dial window (held to the schedule's shorter promise). */
  let fastUndialled = 0
  let total = 0
  let active = 0
  let stopped = 0
  for (const w of input.workers) {
    total++
    if (w.isActive) {
      active++
      continue
    }
    // A drained worker was taken out of service by an operator: stopping it is no alarm, and not
    // counted inactive either.
    if (w.scheduling?.drain?.drainedAt != null) {
      stopped++
      continue
    }
    const inactiveFor = now - Math.max(w.disconnectedAt ?? w.registeredAt, input.startedAt)
    if (inactiveFor > thresholds.maxInactiveMs) tooLong.push(w.id)
    // The schedule's promise only ever tightens the operator's threshold, never loosens it.
    const within = Math.min(input.dialWithinMs?.(w.id) ?? Infinity, thresholds.reconnectWithinMs)
    if (input.monitor === 'running' && inactiveFor > within) {
      const dialled = input.lastDialStartedAt(w.id)
      if (dialled === null || now - dialled > within) {
        undialled.push(w.id)
        if (within < thresholds.reconnectWithinMs) fastUndialled++
      }
    }
  }
  if (input.monitor !== 'running') {
    reasons.push({ check: 'reconnect-monitor', message: `the reconnection monitor is ${input.monitor}: inactive workers are not dialled` })
  }
  if (undialled.length > 0) {
    reasons.push({
      check: 'reconnect-latency',
      message:
        fastUndialled > 0
          ? `${undialled.length} inactive worker(s) were not dialled as often as the reconnection schedule promises (${fastUndialled} of them lost recently, due every few seconds; the others within ${fmt(thresholds.reconnectWithinMs)}): coming up, they would not be found in time; the reconnection budget may be short (--reconnect-rate)`
          : `${undialled.length} inactive worker(s) were not dialled in the last ${fmt(thresholds.reconnectWithinMs)}: coming up, they would not be found in time`,
      worker_ids: undialled.sort().slice(0, MAX_IDS),
      count: undialled.length,
    })
  }
  if (tooLong.length > 0) {
    reasons.push({
      check: 'inactive-workers',
      message: `${tooLong.length} worker(s) have been inactive for more than ${fmt(thresholds.maxInactiveMs)}`,
      worker_ids: tooLong.sort().slice(0, MAX_IDS),
      count: tooLong.length,
    })
  }
  const unhealthy = reasons.length > 0
  if (input.store.status === 'degraded') {
    reasons.push({
      check: 'store',
      message: `the ${input.store.kind} store is not answering (${input.store.last_error ?? 'unknown error'}): running from memory, ${input.store.backlog} change(s) journalled`,
      count: input.store.backlog,
    })
  }
  return {
    status: unhealthy ? 'unhealthy' : reasons.length > 0 ? 'degraded' : 'healthy',
    reasons,
    warnings: input.warnings ?? [],
    store: input.store,
    reconnect_monitor: input.monitor,
    workers: { total, active, inactive: total - active - stopped },
    thresholds: { max_inactive_ms: thresholds.maxInactiveMs, reconnect_within_ms: thresholds.reconnectWithinMs },
  }
}

function fmt(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  if (ms % 1000 === 0) return `${ms / 1000} s`
  return `${ms} ms`
}
