import type { TaskEvent } from './events.js'
import type { FaultRecord } from './faults.js'
import { FAIL_EXIT, type RunLine, type SubmittedTask } from './tasks.js'

// The checks at the end of a run, on what the master says of every acknowledged task (its final
// view, with its history), the /ws events watched throughout, and the runs counted in the runs
// file. What the master promises (README, "How it behaves"): an acknowledged task is never lost;
// it ends; it completes once and is announced completed once; a final state is final; a dead or
// paused worker costs a task a retry elsewhere, never the task (issue 16, finding 1); `attempts`
// counts runs that started on a worker, never placements that did not reach one. A command may
// run more than once (at-least-once): that is counted and listed with its cause, not a breach.

const FINAL = new Set(['completed', 'failed', 'cancelled'])
/**
 * A task placed again on the worker whose AssignTask just failed, this soon after, was placed with
 * no backoff and no sign of life from it (a restarted worker takes longer than this to come back,
 * the suite restarts one 1 s at the earliest): the tight loop finding 1 says must stop.
 */
const RETRY_WITHOUT_BACKOFF_MS = 1000
/** Reasons the master gives when it gives up on a task because of its worker (not the command). */
const WORKER_CAUSED = /gave up after|inactive|AssignTask|no longer runs it|unreachable|UNAVAILABLE|ECONNREFUSED/i

export interface TaskView {
  task_id: string
  status: string
  worker_id: string | null
  attempts: number
  exit_code: number | null
  reason: string | null
  history: { status: string; at: string; worker_id: string | null; reason: string | null }[]
}

export interface TaskFinding {
  taskId: string
  kind: string
  status: string
  attempts: number
  runs: number
  reason: string | null
  history: string[]
  events: string[]
  cause?: string
}

export interface Figures {
  acknowledged: number
  acknowledgedNotDurable: number
  completed: number
  failedOwnExit: number
  failedOther: number
  failedOtherByReason: Record<string, number>
  cancelled: number
  lost: number
  /** Accepted as not durable (202) by a master the suite killed to heal a fault while its store was down. */
  lostNotDurable: number
  stuck: number
  completedTwice: number
  movedBackwards: number
  failedDeadOrPausedWorker: number
  placementsNeverRan: number
  tasksWithPlacementsNeverRan: number
  ranMoreThanOnce: number
  extraRuns: number
  runsOfUnacknowledged: number
  faultsNotRecovered: number
  /** Placements (`assigned` in a history) whose AssignTask failed: not an invariant, but a tight retry loop shows here. */
  failedAssignments: number
  /** The most placements one task had. */
  maxPlacements: number
  /** Placements on a worker within RETRY_WITHOUT_BACKOFF_MS of an AssignTask to it failing for the same task. */
  retriesWithoutBackoff: number
  /** Starts (`running` in the histories) per worker: how the work spread. */
  startsByWorker: Record<string, number>
}

export interface Findings {
  lost: TaskFinding[]
  lostNotDurable: TaskFinding[]
  stuck: TaskFinding[]
  completedTwice: TaskFinding[]
  movedBackwards: TaskFinding[]
  failedDeadOrPausedWorker: TaskFinding[]
  placementsNeverRan: TaskFinding[]
  retriesWithoutBackoff: TaskFinding[]
  ranMoreThanOnce: TaskFinding[]
}

export interface Verdict {
  figures: Figures
  findings: Findings
  /** One line per broken invariant; empty when all hold. */
  breaches: string[]
}

export interface CheckInput {
  acknowledged: readonly SubmittedTask[]
  /** The master's view of each acknowledged task at the end; null: it does not know it (404). */
  views: ReadonlyMap<string, TaskView | null>
  events: ReadonlyMap<string, TaskEvent[]>
  runs: readonly RunLine[]
  faults: readonly FaultRecord[]
  heartbeatTimeoutMs: number
  /** ChaosCluster.killedWhileDegraded. */
  killedWhileDegraded: ReadonlySet<number>
}

function historyLines(v: TaskView | null): string[] {
  return (v?.history ?? []).map((h) => `${h.at} ${h.status}${h.worker_id ? ` on ${h.worker_id}` : ''}${h.reason ? `: ${h.reason}` : ''}`)
}

function eventLines(events: readonly TaskEvent[]): string[] {
  return events.map((e) => `${new Date(e.at).toISOString()} ${e.previous ?? '-'} -> ${e.status} (master start ${e.masterStart})`)
}

/** Index of the first entry after a final one that names another state, or -1. */
function backwardsAt(statuses: readonly string[]): number {
  const first = statuses.findIndex((s) => FINAL.has(s))
  if (first < 0) return -1
  return statuses.findIndex((s, i) => i > first && s !== statuses[first])
}

/** The faults under way around `at` (from their injection to their recovery plus a heartbeat timeout). */
function faultsAround(at: number, faults: readonly FaultRecord[], heartbeatTimeoutMs: number): string[] {
  return faults
    .filter((f) => at >= f.injectedAt - 1000 && at <= (f.recoveredAt ?? f.clearedAt) + 2 * heartbeatTimeoutMs)
    .map((f) => `${f.kind} of ${f.target} at ${new Date(f.injectedAt).toISOString()}`)
}

/** Why a task's command ran more than once: the requeues in its history and the faults around them. */
function duplicateCause(v: TaskView | null, faults: readonly FaultRecord[], heartbeatTimeoutMs: number): string {
  const requeues = (v?.history ?? []).filter((h, i) => i > 0 && h.status === 'queued')
  if (requeues.length === 0) {
    const first = v?.history[0] ? Date.parse(v.history[0].at) : 0
    const around = faultsAround(first, faults, heartbeatTimeoutMs)
    return `no requeue in its history (the same attempt ran again)${around.length ? `; around: ${around.join(', ')}` : ''}`
  }
  return requeues
    .map((h) => {
      const around = faultsAround(Date.parse(h.at), faults, heartbeatTimeoutMs)
      return `${h.reason ?? 'requeued'}${around.length ? ` [${around.join(', ')}]` : ''}`
    })
    .join('; ')
}

/**
 * Placements of `v` on a worker within RETRY_WITHOUT_BACKOFF_MS of an AssignTask to that worker
 * failing, with no sign of life from that worker in between: a `running` entry on it in any task's
 * history (an AssignTask it answered, or a run it confirmed) says it answers again, and placing
 * on it at once is then what a master should do.
 */
function retriesWithoutBackoff(v: TaskView, lifeSigns: ReadonlyMap<string, readonly number[]>): number {
  let n = 0
  let failed: { worker: string; at: number } | null = null
  for (const h of v.history) {
    const m = /AssignTask to worker (\S+) failed/.exec(h.reason ?? '')
    if (h.status !== 'assigned' && m) failed = { worker: m[1]!, at: Date.parse(h.at) }
    else if (h.status === 'assigned') {
      const at = Date.parse(h.at)
      if (failed && h.worker_id === failed.worker && at - failed.at < RETRY_WITHOUT_BACKOFF_MS) {
        const since = failed.at
        const answered = (lifeSigns.get(failed.worker) ?? []).some((t) => t > since && t <= at)
        if (!answered) n++
      }
      failed = null
    }
  }
  return n
}

/** When each worker was seen running something: the `running` entries of every task's history. */
function lifeSignsOf(views: Iterable<TaskView | null>): Map<string, number[]> {
  const out = new Map<string, number[]>()
  for (const v of views) {
    for (const h of v?.history ?? []) {
      if (h.status !== 'running' || !h.worker_id) continue
      let list = out.get(h.worker_id)
      if (!list) out.set(h.worker_id, (list = []))
      list.push(Date.parse(h.at))
    }
  }
  return out
}

function reasonGroup(reason: string | null): string {
  if (!reason) return '(none)'
  return reason.replace(/task-[0-9a-f-]{36}/g, '<task>').replace(/\d+/g, 'N').slice(0, 120)
}

export function checkInvariants(input: CheckInput): Verdict {
  const runsByTask = new Map<string, number>()
  for (const r of input.runs) runsByTask.set(r.taskId, (runsByTask.get(r.taskId) ?? 0) + 1)
  const ackIds = new Set(input.acknowledged.map((t) => t.id))
  const lifeSigns = lifeSignsOf(input.views.values())
  const findings: Findings = { lost: [], lostNotDurable: [], stuck: [], completedTwice: [], movedBackwards: [], failedDeadOrPausedWorker: [], placementsNeverRan: [], retriesWithoutBackoff: [], ranMoreThanOnce: [] }
  const f: Figures = {
    acknowledged: input.acknowledged.length,
    acknowledgedNotDurable: input.acknowledged.filter((t) => t.ack === 202).length,
    completed: 0, failedOwnExit: 0, failedOther: 0, failedOtherByReason: {}, cancelled: 0, lost: 0, lostNotDurable: 0, stuck: 0, completedTwice: 0, movedBackwards: 0,
    failedDeadOrPausedWorker: 0, placementsNeverRan: 0, tasksWithPlacementsNeverRan: 0, ranMoreThanOnce: 0, extraRuns: 0,
    runsOfUnacknowledged: [...runsByTask.entries()].filter(([id]) => !ackIds.has(id)).reduce((n, [, c]) => n + c, 0),
    faultsNotRecovered: input.faults.filter((x) => x.recoveredAt === null).length,
    failedAssignments: 0,
    maxPlacements: 0,
    startsByWorker: {},
    retriesWithoutBackoff: 0,
  }
  for (const t of input.acknowledged) {
    const v = input.views.get(t.id) ?? null
    const events = input.events.get(t.id) ?? []
    const runs = runsByTask.get(t.id) ?? 0
    const finding = (cause?: string): TaskFinding => ({
      taskId: t.id, kind: t.kind, status: v?.status ?? 'unknown to the master', attempts: v?.attempts ?? 0, runs, reason: v?.reason ?? null,
      history: historyLines(v), events: eventLines(events), ...(cause ? { cause } : {}),
    })
    if (v === null) {
      if (t.ack === 202 && input.killedWhileDegraded.has(t.masterStart)) {
        f.lostNotDurable++
        findings.lostNotDurable.push(finding())
      } else {
        f.lost++
        findings.lost.push(finding())
      }
      continue
    }
    if (!FINAL.has(v.status)) {
      f.stuck++
      findings.stuck.push(finding())
    } else if (v.status === 'completed') {
      f.completed++
    } else if (v.status === 'cancelled') {
      f.cancelled++
    } else if (t.kind === 'fail' && v.exit_code === FAIL_EXIT) {
      f.failedOwnExit++
    } else {
      f.failedOther++
      const g = reasonGroup(v.reason)
      f.failedOtherByReason[g] = (f.failedOtherByReason[g] ?? 0) + 1
      if (WORKER_CAUSED.test(v.reason ?? '')) {
        f.failedDeadOrPausedWorker++
        findings.failedDeadOrPausedWorker.push(finding())
      }
    }
    f.failedAssignments += v.history.filter((h) => h.status !== 'assigned' && /AssignTask/.test(h.reason ?? '')).length
    for (const h of v.history) if (h.status === 'running' && h.worker_id) f.startsByWorker[h.worker_id] = (f.startsByWorker[h.worker_id] ?? 0) + 1
    f.maxPlacements = Math.max(f.maxPlacements, v.history.filter((h) => h.status === 'assigned').length)
    const completedInHistory = v.history.filter((h) => h.status === 'completed').length
    const completedInEvents = events.filter((e) => e.status === 'completed').length
    if (completedInHistory > 1 || completedInEvents > 1) {
      f.completedTwice++
      findings.completedTwice.push(finding(`completed ${completedInHistory}x in its history, ${completedInEvents}x in the /ws events`))
    }
    const inHistory = backwardsAt(v.history.map((h) => h.status))
    const inEvents = backwardsAt(events.map((e) => e.status))
    if (inHistory >= 0 || inEvents >= 0) {
      f.movedBackwards++
      findings.movedBackwards.push(finding(inHistory >= 0 ? `history entry ${inHistory} follows a final state` : `/ws event ${inEvents} follows a final state`))
    }
    if (v.attempts > runs) {
      f.placementsNeverRan += v.attempts - runs
      f.tasksWithPlacementsNeverRan++
      findings.placementsNeverRan.push(finding(`${v.attempts} attempt(s), ${runs} run(s) in the runs file`))
    }
    const tight = retriesWithoutBackoff(v, lifeSigns)
    if (tight > 0) {
      f.retriesWithoutBackoff += tight
      findings.retriesWithoutBackoff.push(finding(`placed ${tight} time(s) on a worker within ${RETRY_WITHOUT_BACKOFF_MS} ms of its AssignTask failing`))
    }
    if (runs > 1) {
      f.ranMoreThanOnce++
      f.extraRuns += runs - 1
      findings.ranMoreThanOnce.push(finding(duplicateCause(v, input.faults, input.heartbeatTimeoutMs)))
    }
  }
  const breaches: string[] = []
  const must = (n: number, what: string): void => {
    if (n !== 0) breaches.push(`${what}: ${n} (must be 0)`)
  }
  must(f.lost, 'lost (acknowledged, unknown to the master)')
  must(f.stuck, 'stuck (not final by the deadline)')
  must(f.completedTwice, 'completed twice')
  must(f.movedBackwards, 'moved backwards from a final state')
  must(f.failedDeadOrPausedWorker, 'failed because of a dead or paused worker')
  must(f.placementsNeverRan, 'attempts spent on placements that never ran')
  must(f.retriesWithoutBackoff, `placements on a worker within ${RETRY_WITHOUT_BACKOFF_MS} ms of its AssignTask failing (no backoff)`)
  must(f.faultsNotRecovered, 'faults not recovered within the deadline')
  return { figures: f, findings, breaches }
}
