// Scenario 1, "cloudai-table": the CloudAI reconnection table. W workers registered and active, K of
// them go offline, the master sees them inactive, they come back; how long until the master has all
// of them active again, and what the master spends meanwhile (CPU from /proc/<pid>/stat, RSS).
// Two modes: (a) the master's reconnection monitor finds them (CloudAI settings: a dial every
// interval, bounded by the dial timeout); (b) the workers join on their own when they come back.
import { setTimeout as sleep } from 'node:timers/promises'
import { Fleet } from '../fleet/fleet.js'
import { cpuMeter, MasterUnderTest, rssBytes } from '../fleet/master.js'
import { fmt, fmtSummary, judged, startBoth, summarize, type Scenario, type ScenarioContext, type ScenarioResult, type Size } from '../lib/suite.js'

interface Profile {
  sizes: [number, number][]
  intervalMs: number
  dialMs: number
  heartbeatMs: number
  heartbeatTimeoutMs: number
  idleWindowMs: number
  intervalLabel: string
}

const PROFILES: Record<Size, Profile> = {
  tiny: { sizes: [[6, 2]], intervalMs: 1000, dialMs: 1000, heartbeatMs: 300, heartbeatTimeoutMs: 1500, idleWindowMs: 1000, intervalLabel: '1s (tiny: shortened)' },
  // A 30 s interval with three runs per row does not fit the quick profile's 5 minutes; the short
  // heartbeat timeout (4 beats) keeps going inactive to about 1.5 s a run.
  quick: { sizes: [[10, 2], [100, 20]], intervalMs: 3000, dialMs: 3000, heartbeatMs: 300, heartbeatTimeoutMs: 1200, idleWindowMs: 1000, intervalLabel: '3s (quick: shortened from 30s)' },
  // Full: CloudAI's settings throughout (30 s interval, 3 s dial, 5 s heartbeats, 15 s timeout).
  full: { sizes: [[10, 2], [50, 10], [100, 20], [500, 50]], intervalMs: 30_000, dialMs: 3000, heartbeatMs: 5000, heartbeatTimeoutMs: 15_000, idleWindowMs: 10_000, intervalLabel: '30s (CloudAI)' },
}

type Mode = 'monitor' | 'join'

const CPU_WINDOW_MS = 1000

interface RunFigures {
  /** Offline until the master counted them inactive. */
  inactiveMs: number
  /** Back online until the master counted every worker active. */
  backMs: number
  cpuPct: number | null
  rssBytes: number | null
}

interface RowFigures {
  mode: Mode
  workers: number
  inactive: number
  masterArgs: string[]
  idleCpuPct: number | null
  idleRssBytes: number | null
  runs: RunFigures[]
  fleet: unknown
  masterMetrics: Record<string, number>
}

const METRICS = ['cloudai_reconnect_attempts_total', 'cloudai_reconnect_successes_total', 'cloudai_worker_reconnects_total', 'cloudai_heartbeats_received_total', 'cloudai_heartbeats_refused_total', 'cloudai_heartbeats_processed_total', 'cloudai_telemetry_dropped_samples_total']


async function oneRow(p: Profile, mode: Mode, workers: number, inactive: number, ctx: ScenarioContext): Promise<RowFigures> {
  const masterArgs = [
    '--reconnect-interval', mode === 'monitor' ? `${p.intervalMs}ms` : '0', '--dial-timeout', `${p.dialMs}ms`,
    '--heartbeat-timeout', `${p.heartbeatTimeoutMs}ms`, '--shutdown-grace', '1s',
  ]
  const [master, fleet] = await startBoth(MasterUnderTest.start(masterArgs), Fleet.start({ workers, heartbeatMs: p.heartbeatMs, perChild: 250 }))
  try {
    await master.register(fleet.workers)
    await fleet.join(fleet.ids, master.grpcAddress)
    await master.waitFor((s) => s.active === workers, `${workers} active`, 30_000)
    // Idle: every worker active and heartbeating, nothing else going on.
    await sleep(500)
    const idle = cpuMeter(master.pid)
    await sleep(p.idleWindowMs)
    const idleCpuPct = idle.stop()
    const idleRss = rssBytes(master.pid)
    const runs: RunFigures[] = []
    for (let r = 0; r < ctx.runs; r++) {
      // A different slice each run.
      const start = (r * inactive) % workers
      const ids = Array.from({ length: inactive }, (_, i) => fleet.ids[(start + i) % workers]!)
      const tOff = performance.now()
      await fleet.offline(ids)
      await master.waitFor((s) => s.inactive >= inactive, `${inactive} inactive`, p.heartbeatTimeoutMs + 20_000)
      const inactiveMs = performance.now() - tOff
      const t0 = performance.now()
      const meter = cpuMeter(master.pid)
      await fleet.online(ids, mode === 'join')
      await master.waitFor((s) => s.active === workers, `all ${workers} active again`, p.intervalMs + p.dialMs + 30_000, 10)
      const backMs = performance.now() - t0
      // /proc counts CPU in 10 ms ticks: a window shorter than a second says little, so the CPU
      // figure covers at least the first second after the return.
      const rest = CPU_WINDOW_MS - (performance.now() - t0)
      if (rest > 0) await sleep(rest)
      runs.push({ inactiveMs, backMs, cpuPct: meter.stop(), rssBytes: rssBytes(master.pid) })
      ctx.progress(`cloudai-table ${mode} ${workers}/${inactive} run ${r + 1}: back in ${fmt(backMs)} ms`)
    }
    return { mode, workers, inactive, masterArgs, idleCpuPct, idleRssBytes: idleRss, runs, fleet: await fleet.stats(), masterMetrics: await master.metrics(METRICS) }
  } finally {
    await fleet.stop()
    await master.stop()
  }
}

export const cloudaiTable: Scenario = {
  name: 'cloudai-table',
  description: 'CloudAI reconnection table: W workers, K go offline and come back; time until all active, master CPU and RSS; monitor vs worker-initiated join',
  async run(ctx): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const rows: RowFigures[] = []
    for (const mode of ['monitor', 'join'] as Mode[]) {
      for (const [w, k] of p.sizes) rows.push(await oneRow(p, mode, w, k, ctx))
    }
    const targets: ScenarioResult['targets'] = []
    const tableRows = rows.map((row) => {
      const back = summarize(row.runs.map((r) => r.backMs))
      const cpu = summarize(row.runs.map((r) => r.cpuPct ?? NaN))
      const limitMs = row.mode === 'monitor' ? p.intervalMs + p.dialMs : 1000
      const targetText = row.mode === 'monitor' ? `max ≤ interval + dial = ${limitMs} ms` : 'max ≤ 1000 ms'
      const met = back.max <= limitMs
      targets.push({ name: `${row.mode} ${row.workers}/${row.inactive} back`, target: targetText, value: back.max, met })
      let idleCell = `${fmt(row.idleCpuPct, 2)} %`
      if (row.workers >= 500) {
        const idleMet = row.idleCpuPct === null ? null : row.idleCpuPct < 1
        targets.push({ name: `${row.mode} ${row.workers} idle CPU`, target: '< 1 %', value: row.idleCpuPct, met: idleMet })
        idleCell = judged(idleCell, idleMet, '< 1 %')
      }
      return [
        row.mode === 'monitor' ? `(a) monitor, interval ${p.intervalLabel}, dial ${p.dialMs / 1000}s` : '(b) worker-initiated join',
        `${row.workers}/${row.inactive}`,
        fmt(summarize(row.runs.map((r) => r.inactiveMs)).median),
        judged(`${fmtSummary(back, ' ms')}`, met, targetText),
        `${fmtSummary(cpu, ' %', 1)}`,
        idleCell,
        `${fmt((row.runs.at(-1)?.rssBytes ?? row.idleRssBytes ?? NaN) / 2 ** 20)} MiB`,
      ]
    })
    return {
      tables: [{
        title: `cloudai-table (${ctx.runs} run${ctx.runs > 1 ? 's' : ''} per row; median (min–max))`,
        columns: ['mode', 'workers/inactive', 'offline → seen inactive (ms)', 'back → all active', 'master CPU from the return until all active (at least 1 s)', `master CPU idle (${p.heartbeatMs / 1000}s heartbeats)`, 'master RSS'],
        rows: tableRows,
      }],
      notes: [
        `Master: the real \`cloudai master\` process, --heartbeat-timeout ${p.heartbeatTimeoutMs}ms (quick and tiny shorten it from 15s so that going inactive takes seconds), simulated workers heartbeat every ${p.heartbeatMs} ms with unary SendHeartbeat.`,
        'Mode (b) runs the master with --reconnect-interval 0, so every return is the worker\'s own RegisterWorker.',
        'CPU is percent of one core (user + system, all threads) from /proc/<pid>/stat over the phase; "all active" is polled from GET /api/status every 10 ms.',
      ],
      targets,
      raw: { profile: p, rows },
    }
  },
}
