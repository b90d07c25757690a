import type { WorkerRecord } from '../shared/types.js'
import type { MonitorState } from './reconnect.js'

// The CloudAI guide's health criteria, as one pure function of the master's state:
//   - the reconnection monitor is running;
//   - inactive workers reconnect within a minute of coming up: every worker inactive for longer than
//     that has been dialled within that time (a worker that comes up is found by its next dial);
//   - no worker has been inactive for more than 5 minutes.
// Thresholds are configurable. /healthz answers 503 with the reasons and the worker ids.

export interface HealthThresholds {
  /** A worker inactive longer than this makes the master unhealthy. */
  maxInactiveMs: number
  /** Every inactive worker must have been dialled within this long. */
  reconnectWithinMs: number
}

export type HealthCheck = 'reconnect-monitor' | 'reconnect-latency' | 'inactive-workers'

export interface HealthReason {
  check: HealthCheck
  message: string
  worker_ids?: string[]
  /** How many workers fail the check (worker_ids lists at most MAX_IDS of them). */
  count?: number
}

export interface HealthReport {
  status: 'healthy' | 'unhealthy'
  reasons: HealthReason[]
  reconnect_monitor: MonitorState
  workers: { total: number; active: number; inactive: number }
  thresholds: { max_inactive_ms: number; reconnect_within_ms: number }
}

export interface HealthInput {
  now: number
  /** When this master started: a worker's inactivity before it is not this master's to judge. */
  startedAt: number
  monitor: MonitorState
  lastDialStartedAt: (id: string) => number | null
  workers: Iterable<WorkerRecord>
  thresholds: HealthThresholds
}

const MAX_IDS = 100

export function checkHealth(input: HealthInput): HealthReport {
  const { now, thresholds } = input
  const reasons: HealthReason[] = []
  const tooLong: string[] = []
  const undialled: string[] = []
  let total = 0
  let active = 0
  for (const w of input.workers) {
    total++
    if (w.isActive) {
      active++
      continue
    }
    const inactiveFor = now - Math.max(w.disconnectedAt ?? w.registeredAt, input.startedAt)
    if (inactiveFor > thresholds.maxInactiveMs) tooLong.push(w.id)
    if (input.monitor === 'running' && inactiveFor > thresholds.reconnectWithinMs) {
      const dialled = input.lastDialStartedAt(w.id)
      if (dialled === null || now - dialled > thresholds.reconnectWithinMs) undialled.push(w.id)
    }
  }
  if (input.monitor !== 'running') {
    reasons.push({ check: 'reconnect-monitor', message: `the reconnection monitor is ${input.monitor}: inactive workers are not dialled` })
  }
  if (undialled.length > 0) {
    reasons.push({
      check: 'reconnect-latency',
      message: `${undialled.length} inactive worker(s) were not dialled in the last ${fmt(thresholds.reconnectWithinMs)}: coming up, they would not be found in time`,
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
  return {
    status: reasons.length === 0 ? 'healthy' : 'unhealthy',
    reasons,
    reconnect_monitor: input.monitor,
    workers: { total, active, inactive: total - active },
    thresholds: { max_inactive_ms: thresholds.maxInactiveMs, reconnect_within_ms: thresholds.reconnectWithinMs },
  }
}

function fmt(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  if (ms % 1000 === 0) return `${ms / 1000} s`
  return `${ms} ms`
}
