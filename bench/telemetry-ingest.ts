// Main-thread cost of telemetry, measured in-process with the hub's real threads:
//   node dist/bench/telemetry-ingest.js [--workers 500] [--beats 20000]
// - per heartbeat: heartbeats are handed to ingest() one per timer turn, `--gap` ms apart (as
//   grpc-js delivers them from many streams; 500 workers at 5 s are one every 10 ms), and the main
//   thread's busy time (event-loop utilization) is compared with the same loop without ingest; the
//   difference is what ingest and anything it schedules (a wake of the thread) cost the main thread.
//   Also the call alone, back to back.
// - per lane opened: each hub.open() timed alone, 10 a millisecond (mean and median).
import { performance } from 'node:perf_hooks'
import pino from 'pino'
import { Counters } from '../src/master/counters.js'
import { Registry } from '../src/master/registry.js'
import { autoTelemetryThreads, TelemetryHub } from '../src/master/telemetry/hub.js'

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}

const workers = arg('workers', 500)
const beats = arg('beats', 2000)
const gapMs = arg('gap', 2)
const registry = new Registry()
const hub = new TelemetryHub(registry, { placement: autoTelemetryThreads(), counters: new Counters(), log: pino({ level: 'warn' }), historyMs: 3_600_000, stepMs: 5000, summaryMs: 1000 })
hub.start()
const ids = Array.from({ length: workers }, (_, i) => `w${i}`)
// Opens paced as RegisterWorker calls arrive in a burst (10 a millisecond), each call timed alone.
await new Promise((resolve) => setTimeout(resolve, 300))
const openTimes: number[] = []
for (const [i, id] of ids.entries()) {
  const t0 = performance.now()
  hub.open(id)
  openTimes.push((performance.now() - t0) * 1000)
  if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 1))
}
const openUs = openTimes.reduce((a, b) => a + b, 0) / workers
openTimes.sort((a, b) => a - b)
const openP50Us = openTimes[Math.floor(workers / 2)]!

const usage = { cpu: 10, memory: 20, storage: 30, gpu: 0 }
const turn = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, gapMs))
async function loop(withIngest: boolean): Promise<number> {
  const start = performance.eventLoopUtilization()
  for (let k = 0; k < beats; k++) {
    if (withIngest) {
      usage.cpu = k % 100
      hub.ingest(ids[k % workers]!, usage, [])
    }
    await turn()
  }
  return performance.eventLoopUtilization(start).active
}
// Warm up both paths, then alternate to spread the machine's noise over both.
await loop(false)
await loop(true)
let base = 0
let withIngest = 0
for (let r = 0; r < 3; r++) {
  base += await loop(false)
  withIngest += await loop(true)
}
const perBeatUs = ((withIngest - base) * 1000) / (3 * beats)
// The call itself, back to back in one turn (what it schedules for later is not in this figure).
const calls = 200_000
const c0 = performance.now()
for (let k = 0; k < calls; k++) hub.ingest(ids[k % workers]!, usage, [])
const callUs = ((performance.now() - c0) * 1000) / calls
console.log(JSON.stringify({ workers, beats, threads: hub.threadCount, openLaneUs: +openUs.toFixed(2), openLaneP50Us: +openP50Us.toFixed(2), ingestPerHeartbeatUs: +perBeatUs.toFixed(2), ingestCallUs: +callUs.toFixed(3), loopBusyUsPerTurn: +((base * 1000) / (3 * beats)).toFixed(2) }))
await hub.close()
