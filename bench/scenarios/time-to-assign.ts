// Scenario 6, "time-to-assign": N tasks are queued through the real HTTP API (POST /api/tasks)
// while the W workers are registered but down (inactive); then they come up and join (RegisterWorker). How long until the
// master has assigned every task, and until every one has completed (the workers run the command
// with /bin/sh and report with ReportTaskCompletion). The same-run baseline deals the same N
// AssignTask calls to the same kind of fleet from a bare grpc-js dispatcher (no master): the
// headline is master / bare.
import { BareDispatcher } from '../fleet/bare-dispatcher.js'
import { Fleet } from '../fleet/fleet.js'
import { cpuMeter, MasterUnderTest } from '../fleet/master.js'
import { setTimeout as sleep } from 'node:timers/promises'
import { fmt, fmtSummary, startBoth, summarize, type Scenario, type ScenarioContext, type ScenarioResult, type Size } from '../lib/suite.js'

interface Profile {
  tasks: number
  workers: number
  heartbeatMs: number
}

const PROFILES: Record<Size, Profile> = {
  tiny: { tasks: 20, workers: 3, heartbeatMs: 1000 },
  quick: { tasks: 1000, workers: 50, heartbeatMs: 5000 },
  full: { tasks: 1000, workers: 50, heartbeatMs: 5000 },
}

const COMMAND = 'true'
/** Time to assign, master over bare dispatcher (median of the runs): issue 17's target. */
const ASSIGN_TARGET = 1.2
const DEADLINE_MS = 120_000

type TaskCounts = Record<'queued' | 'assigned' | 'running' | 'completed' | 'failed' | 'cancelled', number>

interface MasterRun {
  submitMs: number
  assignedMs: number
  completedMs: number
  counts: TaskCounts
  masterCpuPct: number | null
  fleet: unknown
}

interface BareRun {
  assignedMs: number
  completedMs: number
  refused: number
  failed: number
}

async function taskCounts(master: MasterUnderTest): Promise<TaskCounts> {
  const { status, body } = await master.request<{ tasks: TaskCounts }>('/api/status')
  if (status !== 200) throw new Error(`GET /api/status answered ${status}`)
  return body.tasks
}

async function submit(master: MasterUnderTest, n: number, concurrency = 16): Promise<void> {
  let next = 0
  const one = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      const { status, body } = await master.request('/api/tasks', { method: 'POST', body: { command: COMMAND, name: `assign-${i}` } })
      if (status !== 201) throw new Error(`POST /api/tasks answered ${status}: ${JSON.stringify(body)}`)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, one))
}

async function masterRun(p: Profile): Promise<MasterRun> {
  // No reconnection monitor: the workers come online by joining, so the clock starts at the join.
  const [master, fleet] = await startBoth(
    MasterUnderTest.start(['--reconnect-interval', '0', '--shutdown-grace', '1s']),
    Fleet.start({ workers: p.workers, heartbeatMs: p.heartbeatMs, idPrefix: 'assign' }),
  )
  try {
    // Registered while their processes are down: the master knows them, inactive (it would
    // dial a listening worker at once and get it to join).
    await fleet.offline(fleet.ids)
    await master.register(fleet.workers)
    const s0 = performance.now()
    await submit(master, p.tasks)
    const submitMs = performance.now() - s0
    const queued = await taskCounts(master)
    if (queued.queued !== p.tasks) throw new Error(`expected ${p.tasks} queued tasks before the workers join, the master has ${JSON.stringify(queued)}`)
    const meter = cpuMeter(master.pid)
    const t0 = performance.now()
    // The workers' own RegisterWorker calls are what the clock waits for, through the master.
    await fleet.online(fleet.ids, true, master.grpcAddress)
    let assignedMs = NaN
    let counts: TaskCounts
    for (;;) {
      counts = await taskCounts(master)
      const now = performance.now() - t0
      // Assigned and acknowledged (the master moves a task to running on the AssignTask answer), as
      // the baseline counts it.
      if (Number.isNaN(assignedMs) && counts.queued === 0 && counts.assigned === 0) assignedMs = now
      if (counts.completed + counts.failed + counts.cancelled >= p.tasks) break
      if (now > DEADLINE_MS) throw new Error(`tasks not all finished within ${DEADLINE_MS} ms: ${JSON.stringify(counts)}`)
      if (master.child.exitCode !== null) throw new Error(`master exited with ${master.child.exitCode}: ${master.stderr}`)
      await sleep(10)
    }
    const completedMs = performance.now() - t0
    const masterCpuPct = meter.stop()
    return { submitMs, assignedMs, completedMs, counts, masterCpuPct, fleet: await fleet.stats() }
  } finally {
    await fleet.stop()
    await master.stop()
  }
}

async function bareRun(p: Profile): Promise<BareRun> {
  const fleet = await Fleet.start({ workers: p.workers, heartbeatMs: p.heartbeatMs, idPrefix: 'assign' })
  const bare = new BareDispatcher(fleet.ids, p.tasks, COMMAND)
  try {
    await bare.listen()
    // Down, then up and joining, exactly as in the master's run.
    await fleet.offline(fleet.ids)
    const outcome = bare.start()
    await fleet.online(fleet.ids, true, bare.address)
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`bare dispatch not finished within ${DEADLINE_MS} ms`)), DEADLINE_MS)))
    try {
      return await Promise.race([outcome, deadline])
    } finally {
      clearTimeout(timer)
    }
  } finally {
    await fleet.stop()
    await bare.close()
  }
}

export const timeToAssign: Scenario = {
  name: 'time-to-assign',
  description: 'N tasks queued through the API, W workers join: time until all assigned and all completed, vs a bare grpc-js dispatcher',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const runs: { master: MasterRun; bare: BareRun }[] = []
    for (let r = 0; r < ctx.runs; r++) {
      const master = await masterRun(p)
      const bare = await bareRun(p)
      runs.push({ master, bare })
      ctx.progress(`time-to-assign run ${r + 1}: master assigned ${fmt(master.assignedMs)} ms, completed ${fmt(master.completedMs)} ms; bare ${fmt(bare.assignedMs)} / ${fmt(bare.completedMs)} ms`)
    }
    const assigned = summarize(runs.map((x) => x.master.assignedMs))
    const completed = summarize(runs.map((x) => x.master.completedMs))
    const bareAssigned = summarize(runs.map((x) => x.bare.assignedMs))
    const bareCompleted = summarize(runs.map((x) => x.bare.completedMs))
    const assignRatio = summarize(runs.map((x) => x.master.assignedMs / x.bare.assignedMs))
    const completeRatio = summarize(runs.map((x) => x.master.completedMs / x.bare.completedMs))
    const failed = runs.reduce((n, x) => n + x.master.counts.failed + x.master.counts.cancelled, 0)
    return {
      tables: [{
        title: `time-to-assign: ${p.tasks} queued tasks (\`${COMMAND}\`), ${p.workers} workers join (${ctx.runs} run${ctx.runs > 1 ? 's' : ''}; median (min–max))`,
        columns: ['phase', 'cloudai master', 'bare grpc-js dispatcher', 'ratio master / bare (lower is better)'],
        rows: [
          ['join → all assigned', fmtSummary(assigned, ' ms'), fmtSummary(bareAssigned, ' ms'), fmtSummary(assignRatio, '', 1)],
          ['join → all completed', fmtSummary(completed, ' ms'), fmtSummary(bareCompleted, ' ms'), fmtSummary(completeRatio, '', 1)],
        ],
      }],
      notes: [
        `Tasks are submitted with POST /api/tasks (command only, so no resource request limits placement) while the workers are registered (POST /api/workers) but down, so inactive; submitting them took ${fmtSummary(summarize(runs.map((x) => x.master.submitMs)), ' ms')}. The clock starts when the workers are told to come up and join (RegisterWorker).`,
        '"All assigned": GET /api/status (polled every 10 ms) shows no task queued or assigned, i.e. every AssignTask answered (the master marks a task running on the answer), which is what the baseline counts; "all completed": every task completed, failed or cancelled. The master persists every transition (SQLite) before applying it.',
        `The bare dispatcher deals task i to worker i mod ${p.workers} as soon as that worker registers, and counts ReportTaskCompletion calls; the simulated workers are the same in both (each command run with /bin/sh -c, as the real worker does).`,
        `Tasks that did not complete (failed or cancelled) in the master runs: ${failed}; master CPU from the join until all completed: ${fmtSummary(summarize(runs.map((x) => x.master.masterCpuPct ?? NaN)), ' %')} of one core.`,
      ],
      targets: [
        // Issue 17, target 4: within 1.2x of the bare dispatcher in the same run.
        { name: 'master/bare all assigned', target: `≤ ${ASSIGN_TARGET}`, value: Number.isFinite(assignRatio.median) ? assignRatio.median : null, met: Number.isFinite(assignRatio.median) ? assignRatio.median <= ASSIGN_TARGET : null },
        { name: 'master/bare all completed', target: 'reported', value: Number.isFinite(completeRatio.median) ? completeRatio.median : null, met: null },
      ],
      raw: { profile: p, command: COMMAND, runs },
    }
  },
}
