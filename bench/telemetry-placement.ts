// Telemetry placement at scale: a thread per worker against N shared threads, at the same number
// of workers, in the same run. Measures what decides the default: start-up time (all lanes
// processing), memory, and heartbeat processing delay under load. Prints a markdown table.
//
//   npm run bench:telemetry -- [--workers 500] [--seconds 10] [--rate 2]
//
// Each placement runs in a fresh child process so that memory readings do not mix.
import { fork } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from '../src/master/registry.js'
import { autoTelemetryThreads, TelemetryHub, type TelemetryPlacement } from '../src/master/telemetry/hub.js'
import { CounterReader, Counters, HISTOGRAMS } from '../src/master/counters.js'
import { pino } from 'pino'

/** One placement's figures; the suite's telemetry-placement scenario reads them from `--child`. */
export interface Result {
  placement: string
  workers: number
  threads: number
  startupMs: number
  rssMb: number
  heapMb: number
  heartbeats: number
  dropped: number
  p50Us: string
  p99Us: string
  maxBucketUs: string
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`)
  return v
}

/** The bucket bound holding the q-quantile: the histogram is fixed-bucket, so this is an upper bound. */
function quantile(cumulative: number[], bounds: readonly number[], q: number): string {
  const total = cumulative.at(-1)!
  const rank = Math.ceil(total * q)
  const i = cumulative.findIndex((c) => c >= rank)
  return i < bounds.length ? `≤ ${bounds[i]}` : `> ${bounds.at(-1)}`
}

async function runOne(placement: TelemetryPlacement, workers: number, seconds: number, rate: number): Promise<Result> {
  const registry = new Registry()
  const counters = new Counters()
  const reader = new CounterReader(counters)
  const hub = new TelemetryHub(registry, { placement, counters, log: pino({ level: 'warn' }), historyMs: 3_600_000, stepMs: 5000, summaryMs: 1000 })
  const baseRss = process.memoryUsage().rss
  const t0 = performance.now()
  hub.start()
  const ids = Array.from({ length: workers }, (_, i) => `w${i}`)
  for (const id of ids) {
    registry.register(id, '127.0.0.1:1', Date.now())
    registry.connect(id, { specs: { cpu: 4, memory: 8, storage: 100, gpu: 0 }, reportedAddress: null }, Date.now())
  }
  const usage = { cpu: 10, memory: 20, storage: 30, gpu: 0 }
  // Start-up: until every lane has processed its first heartbeat.
  for (const id of ids) hub.ingest(id, usage, [])
  while (reader.get('HEARTBEATS_PROCESSED') < workers) await sleep(5)
  const startupMs = performance.now() - t0
  const startDelay = reader.histogram('heartbeatDelayUs')

  // Load: every worker sends `rate` heartbeats a second, spread evenly.
  const intervalMs = 1000 / (rate * workers)
  const end = performance.now() + seconds * 1000
  let next = performance.now()
  let k = 0
  while (performance.now() < end) {
    next += intervalMs
    usage.cpu = (k * 7) % 100
    hub.ingest(ids[k % workers]!, usage, [])
    k++
    const wait = next - performance.now()
    if (wait > 1) await sleep(wait)
  }
  while (reader.get('HEARTBEATS_PROCESSED') + reader.get('HEARTBEATS_DROPPED') < workers + k) await sleep(5)
  const mem = process.memoryUsage()
  const h = reader.histogram('heartbeatDelayUs')
  const cumulative = h.cumulative.map((c, i) => c - startDelay.cumulative[i]!)
  const result: Result = {
    placement: String(placement),
    workers,
    threads: hub.threadCount,
    startupMs: Math.round(startupMs),
    rssMb: Math.round((mem.rss - baseRss) / 2 ** 20),
    heapMb: Math.round(mem.heapUsed / 2 ** 20),
    heartbeats: k,
    dropped: reader.get('HEARTBEATS_DROPPED'),
    p50Us: quantile(cumulative, HISTOGRAMS.heartbeatDelayUs, 0.5),
    p99Us: quantile(cumulative, HISTOGRAMS.heartbeatDelayUs, 0.99),
    maxBucketUs: quantile(cumulative, HISTOGRAMS.heartbeatDelayUs, 1),
  }
  await hub.close()
  return result
}

if (process.argv[2] === '--child') {
  const placement = process.argv[3] === 'per-worker' ? 'per-worker' : Number(process.argv[3])
  const result = await runOne(placement, arg('workers', 500), arg('seconds', 10), arg('rate', 2))
  process.send!(result)
} else {
  const workers = arg('workers', 500)
  const seconds = arg('seconds', 10)
  const rate = arg('rate', 2)
  const auto = autoTelemetryThreads()
  const rows: Result[] = []
  for (const placement of [String(auto), 'per-worker']) {
    const child = fork(fileURLToPath(import.meta.url), ['--child', placement, '--workers', String(workers), '--seconds', String(seconds), '--rate', String(rate)])
    rows.push(await new Promise<Result>((resolve, reject) => {
      child.once('message', (m) => resolve(m as Result))
      child.once('exit', (code) => code !== 0 && reject(new Error(`placement ${placement} exited with ${code}`)))
    }))
  }
  console.log(`\nTelemetry placement: ${workers} workers, ${rate} heartbeats/s each for ${seconds} s (${rate * workers}/s), node ${process.version}, ${availableParallelism()} cores\n`)
  console.log('| placement | threads | start-up (all lanes live) | extra RSS | main heap | heartbeats | dropped | delay p50 (µs) | delay p99 (µs) | delay max (µs) |')
  console.log('|---|---|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    console.log(`| ${r.placement === String(auto) ? `${r.placement} (auto)` : r.placement} | ${r.threads} | ${r.startupMs} ms | ${r.rssMb} MiB | ${r.heapMb} MiB | ${r.heartbeats} | ${r.dropped} | ${r.p50Us} | ${r.p99Us} | ${r.maxBucketUs} |`)
  }
}
