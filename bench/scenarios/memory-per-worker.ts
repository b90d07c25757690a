// Scenario 5, "memory-per-worker": the real master's RSS with W simulated workers registered,
// active and heartbeating, against the same master with none (same run): (RSS(W) - RSS(0)) / W.
import { setTimeout as sleep } from 'node:timers/promises'
import { Fleet } from '../fleet/fleet.js'
import { MasterUnderTest, rssBytes } from '../fleet/master.js'
import { fmt, fmtSummary, summarize, type Scenario, type ScenarioResult, type Size } from '../lib/suite.js'

const PROFILES: Record<Size, { workers: number; heartbeatMs: number; settleMs: number }> = {
  tiny: { workers: 5, heartbeatMs: 500, settleMs: 1000 },
  quick: { workers: 200, heartbeatMs: 1000, settleMs: 2000 },
  full: { workers: 1000, heartbeatMs: 5000, settleMs: 12_000 },
}

interface RunFigures {
  baseRssBytes: number | null
  loadedRssBytes: number | null
  perWorkerKiB: number | null
}

export const memoryPerWorker: Scenario = {
  name: 'memory-per-worker',
  description: 'Master RSS per registered, active, heartbeating worker (RSS with W workers minus RSS with none, over W)',
  async run(ctx): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const runs: RunFigures[] = []
    for (let r = 0; r < ctx.runs; r++) {
      const master = await MasterUnderTest.start(['--heartbeat-timeout', '5m', '--reconnect-interval', '30s', '--shutdown-grace', '1s'])
      let fleet: Fleet | null = null
      try {
        // Baseline: the same master, started and settled, with no worker.
        await sleep(p.settleMs)
        const base = rssBytes(master.pid)
        fleet = await Fleet.start({ workers: p.workers, heartbeatMs: p.heartbeatMs, idPrefix: 'mem' })
        await master.register(fleet.workers)
        await fleet.join(fleet.ids, master.grpcAddress)
        await master.waitFor((s) => s.active === p.workers, `${p.workers} active`, 30_000, 50)
        // A few heartbeats each, so that lanes, history and connections are all in use.
        await sleep(p.settleMs)
        const loaded = rssBytes(master.pid)
        const perWorkerKiB = base !== null && loaded !== null ? (loaded - base) / 1024 / p.workers : null
        runs.push({ baseRssBytes: base, loadedRssBytes: loaded, perWorkerKiB })
        ctx.progress(`memory-per-worker run ${r + 1}: ${fmt(perWorkerKiB)} KiB per worker`)
      } finally {
        await fleet?.stop()
        await master.stop()
      }
    }
    const per = summarize(runs.map((x) => x.perWorkerKiB ?? NaN))
    return {
      tables: [{
        title: `memory-per-worker: ${p.workers} workers, heartbeats every ${p.heartbeatMs} ms (${ctx.runs} run${ctx.runs > 1 ? 's' : ''}; median (min–max))`,
        columns: ['master RSS, no worker', `master RSS, ${p.workers} workers`, 'per worker'],
        rows: [[
          fmtSummary(summarize(runs.map((x) => (x.baseRssBytes ?? NaN) / 2 ** 20)), ' MiB'),
          fmtSummary(summarize(runs.map((x) => (x.loadedRssBytes ?? NaN) / 2 ** 20)), ' MiB'),
          fmtSummary(per, ' KiB'),
        ]],
      }],
      notes: ['RSS from /proc/<pid>/status (VmRSS) of the real master process; each run is a fresh master. RSS includes whatever the garbage collector has not returned yet, so this is an upper bound.'],
      targets: [],
      raw: { profile: p, runs },
    }
  },
}
