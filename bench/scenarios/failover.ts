// Scenario "failover" (issue 19): a leader and a standby (`cloudai master --standby`) share one
// SQLite data directory; a fleet of simulated workers heartbeats to the leader while tasks flow in
// through the API. Then the leader is killed (SIGKILL, a crash) or stopped (SIGTERM, an upgrade).
// Measured from the signal: when the standby answers the API as leader, and when every worker is
// active on it. Checked: every task the API acknowledged ends completed, none was started twice on
// the fleet (counted by the simulated workers themselves), none was requeued by the takeover
// (attempts stay 1), and the new leader marked no worker inactive.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Fleet } from '../fleet/fleet.js'
import { MasterUnderTest } from '../fleet/master.js'
import { fmt, percentile, type Scenario, type ScenarioContext, type ScenarioResult, type Size } from '../lib/suite.js'

interface Profile {
  workers: number
  /** Tasks submitted per second while the fleet runs. */
  rate: number
  /** Runs of each kind (kill -9, SIGTERM). */
  runs: number
  /** How long tasks flow before the signal and after the takeover. */
  flowMs: number
  /** Extra master flags: the smoke run (tiny) shortens the lease so that it stays quick; quick and full run the defaults the targets are for. */
  masterArgs: string[]
}

const PROFILES: Record<Size, Profile> = {
  tiny: { workers: 10, rate: 5, runs: 1, flowMs: 1000, masterArgs: ['--lease-renew', '100ms', '--lease-timeout', '1s'] },
  quick: { workers: 100, rate: 10, runs: 1, flowMs: 3000, masterArgs: [] },
  full: { workers: 500, rate: 20, runs: 5, flowMs: 3000, masterArgs: [] },
}

/** CloudAI's heartbeat interval; the masters run their defaults (lease 1 s / 5 s, heartbeat timeout 15 s). */
const HEARTBEAT_MS = 5000
/** Each task runs this long, so that some are running on the workers at the signal. */
const COMMAND = 'sleep 0.5'
/** Issue 19's targets. */
const LEAD_AFTER_KILL_MS = 6000
const ACTIVE_AFTER_KILL_MS = 15_000
const LEAD_AFTER_TERM_MS = 1000
/** Counts workers the heartbeat timeout marked inactive (src/master/liveness.ts). */
const TIMEOUTS_METRIC = 'cloudai_worker_heartbeat_timeouts_total'

type Kind = 'kill' | 'term'

interface StatusBody {
  role?: string
  workers: number
  active: number
  tasks: Record<string, number>
}

interface Run {
  kind: Kind
  workers: number
  /** Signal → the standby's /api/status says leader and GET /api/tasks answers 200. */
  leadMs: number | null
  /** Signal → every worker active on the new leader. */
  allActiveMs: number | null
  accepted: number
  lost: number
  /** Tasks started more than once on the fleet. */
  twice: number
  /** Tasks whose attempts went above 1 (requeued). */
  requeued: number
  /** Workers the new leader's heartbeat timeout marked inactive after the takeover. */
  markedInactive: number | null
  submitRefused: number
  /**
   * Masters other than this run's two that sent the fleet a MasterRegister: a stray master left by
   * an interrupted run, leading on its old store, dials the ports it remembers, and a simulated
   * worker (which checks no epoch or token) follows it away from this run's leader.
   */
  foreignMasters: string[]
  /** What the new leader says of each acknowledged task that did not end completed. */
  notCompleted: { id: string; status: string | null; attempts: number | null; worker_id: string | null }[]
}

async function status(m: MasterUnderTest): Promise<StatusBody | null> {
  try {
    const { status: code, body } = await m.request<StatusBody>('/api/status')
    return code === 200 ? body : null
  } catch {
    return null
  }
}

/** Submits COMMAND at `rate` per second to whichever master takes it, until stopped. */
function submitter(masters: MasterUnderTest[], rate: number): { stop(): Promise<void>; accepted: string[]; refused: () => number } {
  const accepted: string[] = []
  let refused = 0
  let target = 0
  let running = true
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const t0 = performance.now()
      const m = masters[target]!
      try {
        const { status: code, body } = await m.request<{ task_id: string }>('/api/tasks', { method: 'POST', body: { command: COMMAND, name: `failover-${i}` } })
        if (code === 201) accepted.push(body.task_id)
        else {
          refused++
          target = (target + 1) % masters.length
        }
      } catch {
        // Not acknowledged: a connection the killed master never answered is no task of ours.
        refused++
        target = (target + 1) % masters.length
      }
      const wait = 1000 / rate - (performance.now() - t0)
      if (wait > 0) await sleep(wait)
    }
  })()
  return {
    accepted,
    refused: () => refused,
    async stop() {
      running = false
      await loop
    },
  }
}

async function metric(m: MasterUnderTest, name: string): Promise<number | null> {
  try {
    const v = (await m.metrics([name]))[name]
    return v === undefined ? null : v
  } catch {
    return null
  }
}

async function oneRun(ctx: ScenarioContext, p: Profile, kind: Kind, index: number): Promise<Run> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cloudai-bench-failover-'))
  const started: { stop(): Promise<void> }[] = []
  try {
    const logFile = (role: string): string | undefined => (ctx.logDir ? join(ctx.logDir, `failover-${kind}-${index + 1}-${role}.log`) : undefined)
    // Each its own --master-id, as the README sets two masters up: the lease names its holder.
    const leader = await MasterUnderTest.start([...p.masterArgs, '--master-id', 'failover-a'], { dataDir, logFile: logFile('leader') })
    started.push(leader)
    const standby = await MasterUnderTest.start([...p.masterArgs, '--master-id', 'failover-b', '--standby'], { dataDir, logFile: logFile('standby') })
    started.push(standby)
    const fleet = await Fleet.start({ workers: p.workers, heartbeatMs: HEARTBEAT_MS, idPrefix: `fo-${kind}` })
    started.push(fleet)
    await leader.register(fleet.workers)
    await leader.waitFor((s) => s.active === p.workers, `${p.workers} workers active on the leader`, 60_000)
    const standbyStatus = await status(standby)
    if (standbyStatus?.role !== 'standby') throw new Error(`the second master is not a standby: ${JSON.stringify(standbyStatus)}`)

    const sub = submitter([leader, standby], p.rate)
    // Tasks queued, assigned and running on the workers at the signal.
    await sleep(p.flowMs)
    ctx.progress(`failover: ${kind === 'kill' ? 'kill -9' : 'SIGTERM'} of the leader with ${p.workers} workers`)
    const exited = new Promise((resolve) => leader.child.once('exit', resolve))
    const t0 = performance.now()
    leader.child.kill(kind === 'kill' ? 'SIGKILL' : 'SIGTERM')

    let leadMs: number | null = null
    let allActiveMs: number | null = null
    const deadline = t0 + 60_000
    while (performance.now() < deadline && (leadMs === null || allActiveMs === null)) {
      const s = await status(standby)
      if (s?.role === 'leader') {
        if (leadMs === null) {
          const tasks = await standby.request('/api/tasks?limit=1').catch(() => null)
          if (tasks?.status === 200) leadMs = performance.now() - t0
        }
        if (leadMs !== null && s.active === p.workers) allActiveMs = performance.now() - t0
      }
      if (standby.child.exitCode !== null) throw new Error(`the standby exited with ${standby.child.exitCode}: ${standby.stderr}`)
      await sleep(20)
    }
    await exited
    // Tasks keep coming to the new leader for a while, then every acknowledged one must finish.
    await sleep(p.flowMs)
    await sub.stop()
    const drainDeadline = performance.now() + 90_000
    for (;;) {
      const s = await status(standby)
      const t = s?.tasks
      if (t && t.queued === 0 && t.assigned === 0 && t.running === 0) break
      if (performance.now() > drainDeadline) break
      await sleep(100)
    }
    let lost = 0
    let requeued = 0
    const notCompleted: Run['notCompleted'] = []
    for (const id of sub.accepted) {
      const { status: code, body } = await standby.request<{ status: string; attempts: number; worker_id: string | null }>(`/api/tasks/${id}`)
      const task = code === 200 ? body : null
      if (task?.status !== 'completed') {
        lost++
        notCompleted.push({ id, status: task?.status ?? null, attempts: task?.attempts ?? null, worker_id: task?.worker_id ?? null })
      } else if (task.attempts > 1) requeued++
    }
    const executions = await fleet.executions()
    const twice = [...executions.values()].filter((n) => n > 1).length
    const markedInactive = await metric(standby, TIMEOUTS_METRIC)
    const ours = new Set([leader.grpcAddress, standby.grpcAddress])
    const foreignMasters = [...await fleet.masters()].filter((a) => !ours.has(a))
    return { kind, workers: p.workers, leadMs, allActiveMs, accepted: sub.accepted.length, lost, twice, requeued, markedInactive, submitRefused: sub.refused(), foreignMasters, notCompleted }
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => undefined)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

const worst = (xs: (number | null)[]): number | null => (xs.some((x) => x === null) ? null : percentile(xs.map(Number).sort((a, b) => a - b), 99))

export const failover: Scenario = {
  name: 'failover',
  description: 'a leader and a standby on one store, a fleet and tasks flowing; kill -9 / SIGTERM of the leader: time to lead, time to every worker active, tasks lost / run twice / requeued',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const runs: Run[] = []
    for (const kind of ['kill', 'term'] as const) {
      for (let i = 0; i < p.runs; i++) runs.push(await oneRun(ctx, p, kind, i))
    }
    const of = (kind: Kind): Run[] => runs.filter((r) => r.kind === kind)
    const killLead = worst(of('kill').map((r) => r.leadMs))
    const killActive = worst(of('kill').map((r) => r.allActiveMs))
    const termLead = worst(of('term').map((r) => r.leadMs))
    const sum = (f: (r: Run) => number | null): number | null => (runs.some((r) => f(r) === null) ? null : runs.reduce((n, r) => n + f(r)!, 0))
    const lost = sum((r) => r.lost)
    const twice = sum((r) => r.twice)
    const requeued = sum((r) => r.requeued)
    const inactive = sum((r) => r.markedInactive)
    const row = (r: Run): string[] => [r.kind === 'kill' ? 'kill -9' : 'SIGTERM', String(r.workers), fmt(r.leadMs), fmt(r.allActiveMs), String(r.accepted), String(r.lost), String(r.twice), String(r.requeued), fmt(r.markedInactive), String(r.submitRefused), String(r.foreignMasters.length)]
    return {
      tables: [{
        title: `failover: leader and standby on one SQLite store, ${p.workers} simulated workers (heartbeat ${HEARTBEAT_MS / 1000} s), ${p.rate} tasks/s`,
        columns: ['signal', 'workers', 'leads after (ms)', 'all active after (ms)', 'tasks acknowledged', 'lost', 'run twice', 'requeued', 'marked inactive', 'submits refused (not acknowledged)', 'other masters that dialled the fleet'],
        rows: runs.map(row),
      }],
      notes: [
        `Targets (issue 19): kill -9: leads within ${LEAD_AFTER_KILL_MS / 1000} s p99 and every worker active within ${ACTIVE_AFTER_KILL_MS / 1000} s; SIGTERM: leads within ${LEAD_AFTER_TERM_MS / 1000} s; no task lost, none run twice, none requeued, no worker marked inactive by the takeover. With ${p.runs} run(s) of each kind, p99 is the worst run.`,
        '"leads after": from the signal to the first /api/status with role leader whose GET /api/tasks also answers 200, polled every 20 ms.',
        'Submits refused are requests the API did not acknowledge (the dead leader, or the standby before it leads): no task was promised for them.',
        ...(runs.some((r) => r.foreignMasters.length > 0)
          ? [`A master outside this run (${[...new Set(runs.flatMap((r) => r.foreignMasters))].join(', ')}) sent the fleet MasterRegister: a stray process (ps aux | grep cloudai.js) took workers away from this run's masters, and the runs it touched say nothing of a takeover.`]
          : []),
        ...(p.masterArgs.length > 0 ? [`This size runs the masters with ${p.masterArgs.join(' ')} (a smoke run, kept short): the targets are for the defaults (quick, full).`] : []),
      ],
      targets: [
        { name: 'kill -9: standby leads (ms, p99)', target: `≤ ${LEAD_AFTER_KILL_MS}`, value: killLead, met: killLead === null ? null : killLead <= LEAD_AFTER_KILL_MS },
        { name: 'kill -9: every worker active (ms, p99)', target: `≤ ${ACTIVE_AFTER_KILL_MS}`, value: killActive, met: killActive === null ? null : killActive <= ACTIVE_AFTER_KILL_MS },
        { name: 'SIGTERM: standby leads (ms, p99)', target: `≤ ${LEAD_AFTER_TERM_MS}`, value: termLead, met: termLead === null ? null : termLead <= LEAD_AFTER_TERM_MS },
        { name: 'tasks lost', target: '0', value: lost, met: lost === null ? null : lost === 0 },
        { name: 'tasks run twice', target: '0', value: twice, met: twice === null ? null : twice === 0 },
        { name: 'tasks requeued by the takeover', target: '0', value: requeued, met: requeued === null ? null : requeued === 0 },
        { name: 'workers marked inactive by the takeover', target: '0', value: inactive, met: inactive === null ? null : inactive === 0 },
      ],
      raw: runs,
    }
  },
}
