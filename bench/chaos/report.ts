import type { FaultKind, FaultRecord } from './faults.js'
import type { Figures, Findings } from './invariants.js'

// The table a chaos run prints (markdown, so the README can quote it) and the per-kind recovery
// figures both the table and the JSON carry.

export interface RecoveryStats {
  count: number
  recovered: number
  minMs: number | null
  medianMs: number | null
  maxMs: number | null
}

export function recoveryByKind(faults: readonly FaultRecord[]): Record<string, RecoveryStats> {
  const out: Record<string, RecoveryStats> = {}
  for (const f of faults) {
    out[f.kind] ??= { count: 0, recovered: 0, minMs: null, medianMs: null, maxMs: null }
    out[f.kind]!.count++
  }
  for (const [kind, s] of Object.entries(out)) {
    const times = faults.filter((f) => f.kind === kind && f.recoveryMs !== null).map((f) => f.recoveryMs!).sort((a, b) => a - b)
    s.recovered = times.length
    if (times.length > 0) {
      s.minMs = times[0]!
      s.maxMs = times[times.length - 1]!
      s.medianMs = times[Math.floor((times.length - 1) / 2)]!
    }
  }
  return out
}

const mib = (bytes: number | null): string => (bytes === null ? 'n/a' : `${(bytes / 1048576).toFixed(1)} MiB`)
const secs = (ms: number | null): string => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`)

export interface TableInput {
  figures: Figures
  faults: readonly FaultRecord[]
  skipped: Partial<Record<FaultKind, string>>
  rssStart: number | null
  rssEnd: number | null
  refused: Record<string, number>
  breaches: readonly string[]
}

export function table(r: TableInput): string {
  const f = r.figures
  const ok = (n: number): string => (n === 0 ? '0 ✓' : `**${n} ✗**`)
  const rows: [string, string][] = [
    // The master runs without --accept-while-degraded: every acknowledgement is durable (201), and
    // a submission while the store is down is refused (503, counted below as not acknowledged).
    ['acknowledged tasks', f.acknowledgedNotDurable === 0 ? String(f.acknowledged) : `${f.acknowledged} (${f.acknowledgedNotDurable} accepted while the store was down)`],
    ['not acknowledged (not counted)', Object.entries(r.refused).map(([k, v]) => `${k}: ${v}`).join(', ') || '0'],
    ['completed', String(f.completed)],
    ['failed: the command\'s own non-zero exit', String(f.failedOwnExit)],
    ['failed: anything else', f.failedOther === 0 ? '0' : `${f.failedOther} (${Object.entries(f.failedOtherByReason).map(([k, v]) => `${v}× ${k}`).join('; ')})`],
    ['cancelled', String(f.cancelled)],
    ['lost (acknowledged, unknown to the master)', ok(f.lost)],
    ...(f.lostNotDurable > 0 ? [['lost, accepted not durable (202) by a master restarted by the suite while its store was down', String(f.lostNotDurable)] as [string, string]] : []),
    ['stuck (not final by the deadline)', ok(f.stuck)],
    ['completed twice (history or /ws)', ok(f.completedTwice)],
    ['moved backwards from a final state', ok(f.movedBackwards)],
    ['failed because of a dead or paused worker', ok(f.failedDeadOrPausedWorker)],
    ['attempts spent on placements that never ran', f.placementsNeverRan === 0 ? ok(0) : `**${f.placementsNeverRan} ✗** (${f.tasksWithPlacementsNeverRan} tasks)`],
    ['placed again on a worker < 1 s after its AssignTask failed', ok(f.retriesWithoutBackoff)],
    ['commands run more than once (at-least-once)', `${f.ranMoreThanOnce} tasks, ${f.extraRuns} extra runs`],
    ['runs of tasks never acknowledged', String(f.runsOfUnacknowledged)],
    ['starts per worker (from the histories)', Object.entries(f.startsByWorker).sort(([a], [b]) => a.localeCompare(b)).map(([w, n]) => `${w}: ${n}`).join(', ') || '0'],
    ['placements whose AssignTask failed; most placements of one task', `${f.failedAssignments}; ${f.maxPlacements}`],
    ['faults not recovered within the deadline', ok(f.faultsNotRecovered)],
  ]
  const kinds = recoveryByKind(r.faults)
  for (const [kind, s] of Object.entries(kinds)) {
    rows.push([`fault ${kind}`, `${s.count}× , recovery ${s.recovered === s.count ? '' : `${s.recovered}/${s.count} recovered, `}median ${secs(s.medianMs)}, max ${secs(s.maxMs)}`])
  }
  for (const [kind, why] of Object.entries(r.skipped)) rows.push([`fault ${kind}`, `skipped: ${why}`])
  rows.push(['master RSS at start / at end', `${mib(r.rssStart)} / ${mib(r.rssEnd)}`])
  const width = Math.max(...rows.map(([k]) => k.length))
  const lines = ['| figure | value |', '|---|---|', ...rows.map(([k, v]) => `| ${k.padEnd(width)} | ${v} |`)]
  lines.push('', r.breaches.length === 0 ? 'Every invariant held.' : `Broken invariants:\n${r.breaches.map((b) => `- ${b}`).join('\n')}`)
  return lines.join('\n')
}

/** A long history (a retry loop's hundreds of entries) as its head and tail; the JSON has all of it. */
function clip(lines: readonly string[], head = 12, tail = 6): string[] {
  if (lines.length <= head + tail + 1) return [...lines]
  return [...lines.slice(0, head), `... ${lines.length - head - tail} more ...`, ...lines.slice(-tail)]
}

/** The tasks behind each broken invariant (and the duplicates with their cause), for a human to read. */
export function findingsText(findings: Findings, limit = 5): string {
  const out: string[] = []
  for (const [name, list] of Object.entries(findings)) {
    if (list.length === 0) continue
    out.push(`${name} (${list.length}${list.length > limit ? `, first ${limit}` : ''}):`)
    for (const t of list.slice(0, limit)) {
      out.push(`  ${t.taskId} [${t.kind}] ${t.status}, attempts ${t.attempts}, runs ${t.runs}${t.cause ? ` — ${t.cause}` : ''}`)
      for (const h of clip(t.history)) out.push(`    history: ${h}`)
      for (const e of clip(t.events)) out.push(`    /ws:     ${e}`)
    }
  }
  return out.join('\n')
}
