// Scenario 4, "telemetry-placement": bench/telemetry-placement.ts in the suite. Each placement runs in
// a fresh child process of that bench (its `--child` mode), so memory readings do not mix; the
// headline numbers are per-worker's figures as ratios to auto's in the same run.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { autoTelemetryThreads } from '../../src/master/telemetry/hub.js'
import type { Result as PlacementResult } from '../telemetry-placement.js'
import { fmt, fmtSummary, summarize, type Scenario, type ScenarioResult, type Size } from '../lib/suite.js'

type ChildResult = PlacementResult

const PROFILES: Record<Size, { workers: number; seconds: number; rate: number }> = {
  tiny: { workers: 20, seconds: 1, rate: 2 },
  quick: { workers: 100, seconds: 2, rate: 2 },
  full: { workers: 500, seconds: 10, rate: 2 },
}

function runChild(placement: string, p: { workers: number; seconds: number; rate: number }): Promise<ChildResult> {
  const script = fileURLToPath(new URL('../telemetry-placement.js', import.meta.url))
  const child = fork(script, ['--child', placement, '--workers', String(p.workers), '--seconds', String(p.seconds), '--rate', String(p.rate)])
  return new Promise<ChildResult>((resolve, reject) => {
    let result: ChildResult | null = null
    child.once('message', (m) => (result = m as ChildResult))
    child.once('exit', (code) => (result ? resolve(result) : reject(new Error(`telemetry placement ${placement} exited with ${code} and no result`))))
  })
}

export const telemetryPlacement: Scenario = {
  name: 'telemetry-placement',
  description: 'Telemetry lanes on a thread per worker vs shared threads (auto): start-up, memory, processing delay',
  async run(ctx): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const auto = String(autoTelemetryThreads())
    const runs: { auto: ChildResult; perWorker: ChildResult }[] = []
    for (let r = 0; r < ctx.runs; r++) {
      const a = await runChild(auto, p)
      const pw = await runChild('per-worker', p)
      runs.push({ auto: a, perWorker: pw })
      ctx.progress(`telemetry-placement run ${r + 1}: start-up ${a.startupMs} ms vs ${pw.startupMs} ms`)
    }
    const row = (label: string, pick: (x: { auto: ChildResult; perWorker: ChildResult }) => ChildResult): string[] => {
      const rs = runs.map(pick)
      const last = rs.at(-1)!
      return [label, String(last.threads), fmtSummary(summarize(rs.map((x) => x.startupMs)), ' ms'), fmtSummary(summarize(rs.map((x) => x.rssMb)), ' MiB'),
        fmtSummary(summarize(rs.map((x) => x.heapMb)), ' MiB'), String(last.heartbeats), String(rs.reduce((s, x) => s + x.dropped, 0)), last.p50Us, last.p99Us, last.maxBucketUs]
    }
    const startRatio = summarize(runs.map((x) => x.perWorker.startupMs / Math.max(1, x.auto.startupMs)))
    const rssRatio = summarize(runs.map((x) => x.perWorker.rssMb / Math.max(1, x.auto.rssMb)))
    return {
      tables: [
        {
          title: `telemetry-placement: ${p.workers} workers, ${p.rate} heartbeats/s each for ${p.seconds} s (${ctx.runs} run${ctx.runs > 1 ? 's' : ''}; median (min–max))`,
          columns: ['placement', 'threads', 'start-up (all lanes live)', 'extra RSS', 'main heap', 'heartbeats (last run)', 'dropped (all runs)', 'delay p50 (µs)', 'delay p99 (µs)', 'delay max (µs)'],
          rows: [row(`${auto} (auto)`, (x) => x.auto), row('per-worker', (x) => x.perWorker)],
        },
        {
          title: 'telemetry-placement: per-worker as a ratio to auto (same run)',
          columns: ['figure', 'ratio', 'target'],
          rows: [['start-up', `${fmt(startRatio.median, 1)}× (${fmt(startRatio.min, 1)}–${fmt(startRatio.max, 1)})`, 'none (informs the default)'], ['extra RSS', `${fmt(rssRatio.median, 1)}× (${fmt(rssRatio.min, 1)}–${fmt(rssRatio.max, 1)})`, 'none (informs the default)']],
        },
      ],
      notes: ['Delays are the upper bounds of the fixed histogram buckets (shared counters) the p50, p99 and largest delays fell in; they are from the last run.'],
      targets: [],
      raw: { profile: p, runs, ratios: { startup: startRatio, rss: rssRatio } },
    }
  },
}
