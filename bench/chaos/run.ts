import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { netnsUnavailable } from '../../test/support/netns.js'
import { ChaosCluster } from './cluster.js'
import { TaskEventLog } from './events.js'
import { clearLeftovers, FAULT_KINDS, runFault, type FaultContext, type FaultKind, type FaultRecord } from './faults.js'
import { checkInvariants, type Figures, type Findings, type TaskView } from './invariants.js'
import { Random } from './random.js'
import { readOnlyUnavailable } from './readonly-dir.js'
import { killTaskGroups, readRuns, TaskStream } from './tasks.js'

// The chaos run: a real cluster (cluster.ts), a steady stream of tasks (tasks.ts), the /ws events
// watched throughout (events.ts), and faults injected one at a time until the duration is over
// (faults.ts): the first round is every available kind once, in the seed's order, then the seed's
// random picks. Then, with every process running and no fault active, it waits until every
// acknowledged task is final and checks the invariants (invariants.ts). Whatever happens, it
// kills every process it started and every task process, undoes mounts and namespaces, and
// removes its temp dir.

export interface ChaosSettings {
  durationMs: number
  workers: number
  seed: number
  heartbeatTimeoutMs: number
  reconnectIntervalMs: number
  /** Pause between two submissions. */
  taskIntervalMs: number
  /** Pause between a fault's recovery and the next fault: from 0.5 s up to this. */
  maxGapMs: number
  /** How long a fault may take to recover before it counts as not recovered (and is healed). */
  recoveryTimeoutMs: number
  /** How long, at the end, every acknowledged task has to become final. */
  drainTimeoutMs: number
  /**
   * Inject one round, one fault of each kind the machine can make, and stop (the short profile);
   * else go on until the duration is over. A round is finished whatever the clock says: on a loaded
   * machine the last fault must not be dropped, and each fault's recovery deadline bounds the round.
   */
  oneRound: boolean
}

export const DEFAULT_SETTINGS: Omit<ChaosSettings, 'durationMs'> = {
  workers: 3,
  seed: 16,
  heartbeatTimeoutMs: 3000,
  reconnectIntervalMs: 1000,
  taskIntervalMs: 300,
  maxGapMs: 2000,
  recoveryTimeoutMs: 30_000,
  drainTimeoutMs: 90_000,
  oneRound: false,
}

export interface ChaosResult {
  settings: ChaosSettings
  startedAt: string
  wallMs: number
  skipped: Partial<Record<FaultKind, string>>
  faults: FaultRecord[]
  figures: Figures
  findings: Findings
  breaches: string[]
  rssStart: number | null
  rssEnd: number | null
  masterStarts: number
  refused: Record<string, number>
  wsConnections: number
  /** Task process groups still alive at the end and killed then. */
  taskGroupsKilled: number
  /** The run's temp dir (removed) and the CLI processes it started (killed), for a caller to check. */
  dir: string
  pids: number[]
}

const FINAL = new Set(['completed', 'failed', 'cancelled'])

export async function runChaos(settings: ChaosSettings, say: (line: string) => void = () => {}, signal?: AbortSignal): Promise<ChaosResult> {
  const checkAbort = (): void => {
    if (signal?.aborted) throw new Error(`chaos run stopped (${String(signal.reason)})`)
  }
  if (settings.workers < 3 || settings.workers > 5) throw new Error(`workers must be 3 to 5 (got ${settings.workers})`)
  const started = Date.now()
  // Two streams from the seed: the faults' choices must not depend on how many tasks were
  // submitted before them (the task stream runs concurrently).
  const rng = new Random(settings.seed)
  const taskRng = new Random((settings.seed ^ 0x9e3779b9) >>> 0)
  const dir = mkdtempSync(join(tmpdir(), 'cloudai-chaos-'))
  const runsFile = join(dir, 'runs.log')
  const marker = randomBytes(6).toString('hex')
  const skipped: Partial<Record<FaultKind, string>> = {}
  const noNetns = await netnsUnavailable()
  if (noNetns) skipped.partition = noNetns
  const noReadOnly = await readOnlyUnavailable()
  if (noReadOnly) skipped['store-readonly'] = noReadOnly
  for (const [k, why] of Object.entries(skipped)) say(`fault ${k} skipped: ${why}`)
  const kinds = FAULT_KINDS.filter((k) => skipped[k] === undefined)

  let cluster: ChaosCluster | null = null
  let stream: TaskStream | null = null
  let events: TaskEventLog | null = null
  let taskGroupsKilled = 0
  try {
    cluster = await ChaosCluster.start(dir, { workers: settings.workers, heartbeatTimeoutMs: settings.heartbeatTimeoutMs, reconnectIntervalMs: settings.reconnectIntervalMs, partition: noNetns === null })
    const c = cluster
    say(`cluster up in ${Date.now() - started} ms: master on gRPC ${c.grpcPort}, HTTP ${c.httpPort}; workers ${c.workers.map((w) => `${w.id}${w.partitioned ? ' (own namespace)' : ''}`).join(', ')}`)
    const rssStart = c.masterRss()
    events = new TaskEventLog(c)
    events.start()
    stream = new TaskStream(c, taskRng, runsFile, marker, settings.taskIntervalMs)
    stream.start()

    const ctx: FaultContext = { cluster: c, rng, heartbeatTimeoutMs: settings.heartbeatTimeoutMs, recoveryTimeoutMs: settings.recoveryTimeoutMs }
    const faults: FaultRecord[] = []
    const endAt = started + settings.durationMs
    const plan = rng.shuffle(kinds)
    const more = (): boolean => (settings.oneRound ? plan.length > 0 : Date.now() < endAt)
    while (more()) {
      checkAbort()
      await sleep(rng.int(500, settings.maxGapMs))
      if (!more()) break
      const kind = plan.shift() ?? rng.pick(kinds)
      const f = await runFault(kind, ctx)
      faults.push(f)
      say(`${new Date(f.injectedAt).toISOString()} ${f.kind} of ${f.target}: held ${f.heldMs} ms, ${f.recoveryMs === null ? `NOT recovered within ${settings.recoveryTimeoutMs} ms (restarted)` : `recovered in ${f.recoveryMs} ms`}; ${f.note}`)
    }
    checkAbort()
    await stream.stop()
    say(`submissions stopped: ${stream.acknowledged.length} acknowledged`)

    // The end state: every process running and every worker active, no fault under way.
    await c.waitAllActive(settings.recoveryTimeoutMs, 0)
    const views = await drain(c, stream.acknowledged.map((t) => t.id), settings.drainTimeoutMs, say)
    checkAbort()
    // Late events (a duplicate completion announced after the last task went final) still count.
    await sleep(1000)
    const rssEnd = c.masterRss()
    await events.stop()
    const runs = readRuns(runsFile, marker)
    const verdict = checkInvariants({ acknowledged: stream.acknowledged, views, events: events.byTask, runs, faults, heartbeatTimeoutMs: settings.heartbeatTimeoutMs, killedWhileDegraded: c.killedWhileDegraded })
    const masterStarts = c.masterStarts
    await c.close()
    taskGroupsKilled = killTaskGroups(runs)
    return {
      settings, startedAt: new Date(started).toISOString(), wallMs: Date.now() - started, skipped, faults, ...verdict, rssStart, rssEnd,
      masterStarts, refused: stream.refused, wsConnections: events.connections, taskGroupsKilled, dir, pids: c.pids,
    }
  } finally {
    await stream?.stop().catch(() => {})
    await events?.stop().catch(() => {})
    await cluster?.close().catch((err: unknown) => say(`clean-up: ${(err as Error).message}`))
    taskGroupsKilled += killTaskGroups(readRuns(runsFile, marker))
    await clearLeftovers().catch((err: unknown) => say(`clean-up: ${(err as Error).message}`))
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Waits until the master shows every task in a final state, or the deadline passes; returns the
 * last view of each (null for a task it does not know).
 */
async function drain(c: ChaosCluster, ids: readonly string[], timeoutMs: number, say: (line: string) => void): Promise<Map<string, TaskView | null>> {
  const views = new Map<string, TaskView | null>()
  const deadline = Date.now() + timeoutMs
  let pending = [...ids]
  for (;;) {
    const still: string[] = []
    for (const id of pending) {
      const v = await taskView(c, id)
      views.set(id, v)
      if (v !== null && !FINAL.has(v.status)) still.push(id)
    }
    pending = still
    if (pending.length === 0 || Date.now() > deadline) break
    await sleep(500)
  }
  // Final states do not change; the last look at each is its history up to now.
  for (const id of ids) if (!pending.includes(id)) views.set(id, await taskView(c, id))
  say(pending.length === 0 ? 'every acknowledged task is final' : `${pending.length} task(s) not final after ${timeoutMs} ms`)
  return views
}

async function taskView(c: ChaosCluster, id: string): Promise<TaskView | null> {
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await c.request('GET', `/api/tasks/${id}`)
      if (res.status === 404) return null
      if (res.status === 200) return (res.body.task ?? res.body) as TaskView
      throw new Error(`HTTP ${res.status}`)
    } catch (err) {
      if (attempt >= 10) throw new Error(`GET /api/tasks/${id}: ${(err as Error).message}`)
      await sleep(300)
    }
  }
}
