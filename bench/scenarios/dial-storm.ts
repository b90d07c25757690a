// Scenario 2, "dial-storm": the real master with a large registry of inactive workers, and one
// reconnection pass that dials them all at once: some come back (simulated workers, answering
// MasterRegister by calling RegisterWorker), some refuse (nothing listening), some are tarpits
// (accept, never answer: the dial runs into its timeout). The same pass runs with the dials on the
// Piscina pool (`--dialer pool`, the default) and on the master's main thread (`--dialer inline`),
// in the same run. What matters is what the pass costs the main thread: its event-loop delay (the
// master measures it over the pass, /metrics) and the latency of GET /api/workers, polled by an
// operator's script through the pass; and that every worker that came back is active by its end.
//
// "The pass" is the storm: from the first dial the master hands over to the last one settled, as
// the master itself reports it (cloudai_reconnect_last_pass_*: the monitor's pass of every
// inactive worker). A returning worker counts as back when the registry (GET /api/workers after
// the pass) shows it active with a connected_at inside the pass: whatever its dial's answer said,
// late or cancelled, a worker that turned active is what an operator sees.
//
// The pass measured is the master's second: its first runs at start-up, on cold threads and
// unoptimised code, while the workers that will come back are still down (they turn MasterRegister
// down). They come back between the two passes, as workers do between two passes of a running master.
//
// CLOUDAI_BENCH_CPU_PROF=<dir> runs each master under --cpu-prof, its profiles written to <dir>.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Fleet, refusingAddresses } from '../fleet/fleet.js'
import { MasterUnderTest } from '../fleet/master.js'
import { fmt, fmtSummary, judged, percentile, summarize, type Scenario, type ScenarioResult, type Size, type Summary } from '../lib/suite.js'

interface Profile {
  back: number
  refusing: number
  tarpits: number
  dialMs: number
  /** Time between the end of the first pass and the start of the second: the fleet comes back in it. */
  gapMs: number
}

const PROFILES: Record<Size, Profile> = {
  // tiny runs inside npm test beside other suites: a dial to a live worker must not time out on a busy machine.
  tiny: { back: 5, refusing: 25, tarpits: 20, dialMs: 3000, gapMs: 2000 },
  // quick: a 1.5 s dial timeout keeps the profile under 5 minutes; the target scales with it.
  quick: { back: 200, refusing: 1000, tarpits: 800, dialMs: 1500, gapMs: 500 },
  full: { back: 500, refusing: 2500, tarpits: 2000, dialMs: 3000, gapMs: 2000 },
}

/**
 * GET /api/workers at most this often: an operator's script, not a load generator. Each request
 * renders the whole list on the main thread; much more often and the event-loop delay measured
 * would be the rendering's, not the pass's.
 */
const API_EVERY_MS = 250
/** Simulated workers per fleet process: the come-back burst is spread over several processes. */
const PER_CHILD = 100

/** The targets, for the pool: the point of the pool is a main thread that keeps answering. */
const LOOP_DELAY_P99_TARGET_MS = 20
const LOOP_DELAY_MAX_TARGET_MS = 50
const API_P99_TARGET_MS = 50
const PASS_SLACK_MS = 1000
/** connected_at is in ms and the pass start in /metrics seconds: a worker at the edge is not lost to rounding. */
const EDGE_MS = 5

type Kind = 'pool' | 'inline'
const KINDS: Kind[] = ['pool', 'inline']

const PASS_METRICS = [
  'cloudai_reconnect_passes_total',
  'cloudai_reconnect_last_pass_start_time_seconds',
  'cloudai_reconnect_last_pass_duration_seconds',
  'cloudai_reconnect_last_pass_dials',
  'cloudai_reconnect_last_pass_event_loop_delay_p99_seconds',
  'cloudai_reconnect_last_pass_event_loop_delay_max_seconds',
  'cloudai_reconnect_attempts_total',
  'cloudai_reconnect_successes_total',
  'cloudai_reconnect_failures_total{outcome="refused"}',
  'cloudai_reconnect_failures_total{outcome="timeout"}',
  'cloudai_reconnect_failures_total{outcome="rejected"}',
  'cloudai_reconnect_failures_total{outcome="error"}',
  'cloudai_workers_active',
] as const

interface Outcomes {
  success: number
  refused: number
  timeout: number
  rejected: number
  error: number
  attempts: number
}

function outcomesOf(m: Record<string, number>): Outcomes {
  return {
    success: m.cloudai_reconnect_successes_total ?? 0,
    refused: m['cloudai_reconnect_failures_total{outcome="refused"}'] ?? 0,
    timeout: m['cloudai_reconnect_failures_total{outcome="timeout"}'] ?? 0,
    rejected: m['cloudai_reconnect_failures_total{outcome="rejected"}'] ?? 0,
    error: m['cloudai_reconnect_failures_total{outcome="error"}'] ?? 0,
    attempts: m.cloudai_reconnect_attempts_total ?? 0,
  }
}

interface PassFigures {
  kind: Kind
  dials: number
  passMs: number
  /** Null: the master did not sample the pass (it never had more than 256 dials in flight). */
  loopDelayP99Ms: number | null
  loopDelayMaxMs: number | null
  /** GET /api/workers answered while the pass ran (each request overlapping it). */
  api: { requests: number; p50Ms: number | null; p99Ms: number | null; maxMs: number | null }
  /** The master's main-thread CPU from the end of the first pass to the end of the second (the gap, the storm, the come-back, the API polls). */
  mainCpuMs: number | null
  /** Returning workers the registry shows active after the pass, having connected during it. */
  backDuringPass: number
  /** Every worker the registry counts active after the pass (GET /api/workers). */
  activeAfter: number
  outcomes: Outcomes
  /** The start-up pass before it (cold, every dial failing), for reference. */
  firstPass: { passMs: number; loopDelayP99Ms: number | null; loopDelayMaxMs: number | null; outcomes: Outcomes }
}

/** The latest pass as the master measured it (/metrics cloudai_reconnect_last_pass_*). */
function lastPassOf(m: Record<string, number>): { passMs: number; loopDelayP99Ms: number | null; loopDelayMaxMs: number | null } {
  // No sample: a pass the master did not sample (none measured), not a delay of 0.
  const ms = (v: number | undefined): number | null => (v === undefined ? null : v * 1000)
  return {
    passMs: m.cloudai_reconnect_last_pass_duration_seconds! * 1000,
    loopDelayP99Ms: ms(m.cloudai_reconnect_last_pass_event_loop_delay_p99_seconds),
    loopDelayMaxMs: ms(m.cloudai_reconnect_last_pass_event_loop_delay_max_seconds),
  }
}

function minus(a: Outcomes, b: Outcomes): Outcomes {
  return { success: a.success - b.success, refused: a.refused - b.refused, timeout: a.timeout - b.timeout, rejected: a.rejected - b.rejected, error: a.error - b.error, attempts: a.attempts - b.attempts }
}

/** GET /api/workers every API_EVERY_MS (or back to back when slower), until stopped. */
function pollWorkers(master: MasterUnderTest): { stop(): Promise<{ start: number; end: number }[]> } {
  const samples: { start: number; end: number }[] = []
  let running = true
  // Held, not thrown, until stop(): a failed request must not become an unhandled rejection.
  let failure: Error | null = null
  const loop = (async () => {
    while (running) {
      const start = performance.timeOrigin + performance.now()
      const { status } = await master.workerListLatency()
      if (status !== 200) throw new Error(`GET /api/workers answered ${status} during the pass`)
      const end = performance.timeOrigin + performance.now()
      samples.push({ start, end })
      if (end - start < API_EVERY_MS) await sleep(API_EVERY_MS - (end - start))
    }
  })().catch((err: Error) => {
    failure = err
  })
  return {
    async stop() {
      running = false
      await loop
      if (failure) throw failure
      return samples
    },
  }
}

/**
 * Registers every address with a master that is then stopped: the store in `dataDir` holds them
 * all, and each master started on it finds them inactive and dials them in its first pass.
 */
async function seed(dataDir: string, workers: { id: string; address: string }[], dialMs: number): Promise<void> {
  const master = await MasterUnderTest.start(['--reconnect-interval', '1h', '--dial-timeout', `${dialMs}ms`, '--shutdown-grace', '1s', ...UNTHROTTLED], { dataDir })
  try {
    await master.register(workers)
  } finally {
    await master.stop()
  }
}

/** Polls /metrics until `passes` reconnection passes have ended; returns the last reading. */
async function passesEnded(master: MasterUnderTest, passes: number, what: string, timeoutMs: number, notBefore = 0): Promise<Record<string, number>> {
  const deadline = performance.now() + timeoutMs
  // No scrape before the pass can have ended: each one renders every metric on the master's main
  // thread (prom-client reads /proc/self/fd for process_open_fds), and would be measured as the pass's.
  const wait = notBefore - Date.now()
  if (wait > 0) await sleep(wait)
  for (;;) {
    const m = await master.metrics(PASS_METRICS)
    if ((m.cloudai_reconnect_passes_total ?? 0) >= passes) return m
    if (performance.now() > deadline) throw new Error(`${what} did not end within ${timeoutMs} ms (last: ${JSON.stringify(m)})`)
    // Not faster: each scrape is work on the master's main thread, during the pass measured.
    await sleep(500)
  }
}

interface WorkerListEntry {
  worker_id: string
  is_active: boolean
  connected_at: string | null
}

/** The registry after the pass: returning workers active that connected within [from, to], and all active. */
async function registryAfter(master: MasterUnderTest, back: Set<string>, from: number, to: number): Promise<{ backDuringPass: number; active: number }> {
  const { status, body } = await master.request<{ workers: WorkerListEntry[] }>('/api/workers')
  if (status !== 200) throw new Error(`GET /api/workers answered ${status} after the pass`)
  let backDuringPass = 0
  let active = 0
  for (const w of body.workers) {
    if (!w.is_active) continue
    active++
    const at = w.connected_at === null ? NaN : Date.parse(w.connected_at)
    if (back.has(w.worker_id) && at >= from - EDGE_MS && at <= to + EDGE_MS) backDuringPass++
  }
  return { backDuringPass, active }
}

/**
 * CPU seconds of a process's main thread (/proc/<pid>/task/<pid>/stat): what the dials, the
 * RegisterWorker burst and the API cost the thread that must keep answering. Unlike the delays,
 * it hardly moves with what else loads the machine. Null off Linux.
 */
function mainThreadCpuSeconds(pid: number): number | null {
  try {
    const fields = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return null
  }
}

const UNTHROTTLED = ['--reconnect-rate', '100000', '--reconnect-max-inflight', '50000']

function nodeArgs(): string[] {
  const dir = process.env.CLOUDAI_BENCH_CPU_PROF
  return dir ? ['--cpu-prof', '--cpu-prof-dir', dir] : []
}

async function onePass(kind: Kind, dataDir: string, fleet: Fleet, p: Profile, total: number): Promise<PassFigures> {
  // Down for the first pass, without closing their ports (see Fleet.pause).
  await fleet.pause(fleet.ids, true)
  // The first pass starts with the master; the next one gapMs after it ends (the interval counts
  // from the start of a pass). The fleet comes back in between.
  // The storm is measured unthrottled: every dial of the pass at once is the worst the pool must
  // take (an operator who raises the budget). The default budget spreads a pass over seconds; what
  // dead workers cost under it is cloudai-table's row (d).
  // No fast window: the returning workers were active under the run before, so this master's load
  // hears of them a moment ago, dials them at once and, with a window, would re-dial them on the
  // fast schedule until they are back, before the second pass: the pass measured here is the one
  // that finds them, as for workers lost longer ago.
  const master = await MasterUnderTest.start(
    ['--dialer', kind, '--reconnect-interval', `${p.dialMs + 1000 + p.gapMs}ms`, '--dial-timeout', `${p.dialMs}ms`, '--heartbeat-timeout', '1m', '--reconnect-fast-window', '0', '--shutdown-grace', '1s', ...UNTHROTTLED],
    { dataDir, nodeArgs: nodeArgs() },
  )
  try {
    const m1 = await passesEnded(master, 1, `${kind}: the master's first reconnection pass`, p.dialMs + 60_000)
    const cpu0 = mainThreadCpuSeconds(master.pid)
    await fleet.pause(fleet.ids, false)
    let m = await master.metrics(PASS_METRICS)
    if ((m.cloudai_reconnect_passes_total ?? 0) !== 1) throw new Error(`${kind}: the second pass started before the fleet was back online (raise gapMs)`)
    const poller = pollWorkers(master)
    let requests: { start: number; end: number }[] = []
    try {
      // The second pass starts an interval after the first started, and lasts at least a dial timeout.
      const intervalMs = p.dialMs + 1000 + p.gapMs
      const secondEndsAfter = m1.cloudai_reconnect_last_pass_start_time_seconds! * 1000 + intervalMs + p.dialMs
      m = await passesEnded(master, 2, `${kind}: the master's second reconnection pass`, intervalMs + 60_000, secondEndsAfter)
    } finally {
      requests = await poller.stop()
    }
    const cpu1 = mainThreadCpuSeconds(master.pid)
    const startedAt = m.cloudai_reconnect_last_pass_start_time_seconds! * 1000
    const endedAt = startedAt + m.cloudai_reconnect_last_pass_duration_seconds! * 1000
    const during = requests.filter((r) => r.end >= startedAt && r.start <= endedAt).map((r) => r.end - r.start).sort((a, b) => a - b)
    const dials = m.cloudai_reconnect_last_pass_dials ?? 0
    const first = outcomesOf(m1)
    const registry = await registryAfter(master, new Set(fleet.ids), startedAt, endedAt)
    if (dials !== total) throw new Error(`${kind}: the master's second pass dialled ${dials} workers, not the ${total} registered`)
    return {
      kind,
      dials,
      ...lastPassOf(m),
      api: { requests: during.length, p50Ms: percentile(during, 50), p99Ms: percentile(during, 99), maxMs: during.at(-1) ?? null },
      mainCpuMs: cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) * 1000,
      backDuringPass: registry.backDuringPass,
      activeAfter: registry.active,
      // The counters are totals since start: the second pass's are the difference.
      outcomes: minus(outcomesOf(m), first),
      firstPass: { ...lastPassOf(m1), outcomes: first },
    }
  } finally {
    await master.stop()
  }
}

export const dialStorm: Scenario = {
  name: 'dial-storm',
  description: 'The real master, one reconnection pass over a large inactive registry (some come back, most refuse or tarpit): the dial pool vs dials on its main thread',
  async run(ctx): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const total = p.back + p.refusing + p.tarpits
    const dataDir = mkdtempSync(join(tmpdir(), 'cloudai-bench-storm-'))
    let fleet: Fleet | null = null
    let tarpitFleet: Fleet | null = null
    const passes: PassFigures[] = []
    try {
      fleet = await Fleet.start({ workers: p.back, heartbeatMs: 60_000, perChild: PER_CHILD, idPrefix: 'back' })
      // Tarpits in a process of their own: holding thousands of dead connections must not slow the
      // simulated workers' answers.
      tarpitFleet = await Fleet.start({ workers: 0, heartbeatMs: 60_000 })
      const tarpits = await tarpitFleet.tarpits(p.tarpits)
      const refusing = await refusingAddresses(p.refusing)
      // Interleaved, as a real fleet's registry would have them. The workers that come back
      // register under their own ids.
      const dead = [...refusing, ...tarpits].map((address, i) => ({ id: `dead-${String(i).padStart(5, '0')}`, address }))
      await seed(dataDir, [...fleet.workers, ...dead].sort(() => Math.random() - 0.5), p.dialMs)
      for (let r = 0; r < ctx.runs; r++) {
        for (const kind of KINDS) {
          const f = await onePass(kind, dataDir, fleet, p, total)
          passes.push(f)
          ctx.progress(`dial-storm ${kind} run ${r + 1}: pass ${fmt(f.passMs)} ms, loop delay p99 ${fmt(f.loopDelayP99Ms, 1)} ms max ${fmt(f.loopDelayMaxMs, 1)} ms, GET /api/workers p99 ${fmt(f.api.p99Ms)} ms, ${f.backDuringPass} of ${p.back} back by the registry (${f.outcomes.success} dials answered success)`)
        }
      }
    } finally {
      await Promise.all([fleet?.stop(), tarpitFleet?.stop()])
      rmSync(dataDir, { recursive: true, force: true })
    }
    // A pass that never had more than 256 dials in flight is not sampled (the master has no sample
    // for it): no delay measured (tiny's passes are that small).
    const p99Of = (f: PassFigures): number | null => f.loopDelayP99Ms
    const maxOf = (f: PassFigures): number | null => f.loopDelayMaxMs
    const of = (kind: Kind, pick: (f: PassFigures) => number | null): Summary => summarize(passes.filter((x) => x.kind === kind).map((x) => pick(x) ?? NaN))
    const median = (s: Summary): number | null => (Number.isFinite(s.median) ? s.median : null)
    const below = (v: number | null, limit: number): boolean | null => (v === null ? null : v < limit)
    const pool = {
      p99: of('pool', p99Of),
      max: of('pool', maxOf),
      api: of('pool', (f) => f.api.p99Ms),
      pass: of('pool', (f) => f.passMs),
      // The worst run: every returning worker must be back in every run.
      back: summarize(passes.filter((x) => x.kind === 'pool').map((x) => x.backDuringPass)),
    }
    const met = {
      p99: below(median(pool.p99), LOOP_DELAY_P99_TARGET_MS),
      max: below(median(pool.max), LOOP_DELAY_MAX_TARGET_MS),
      api: below(median(pool.api), API_P99_TARGET_MS),
      pass: median(pool.pass) === null ? null : median(pool.pass)! <= p.dialMs + PASS_SLACK_MS,
      back: pool.back.values.length === 0 ? null : pool.back.min >= p.back,
    }
    // inline / pool per run (passes alternate pool, inline): above 1 means the pool did better.
    const ratioOf = (pick: (f: PassFigures) => number | null): Summary =>
      summarize(Array.from({ length: ctx.runs }, (_, r) => (pick(passes[r * 2 + 1]!) ?? NaN) / Math.max(0.001, pick(passes[r * 2]!) ?? NaN)))
    const ratio = { p99: ratioOf(p99Of), max: ratioOf(maxOf), api: ratioOf((f) => f.api.p99Ms), cpu: ratioOf((f) => f.mainCpuMs) }
    const beats = (s: Summary): boolean | null => (Number.isFinite(s.median) ? s.median > 1 : null)
    const targets: ScenarioResult['targets'] = [
      { name: 'pool event-loop delay p99', target: `< ${LOOP_DELAY_P99_TARGET_MS} ms`, value: median(pool.p99), met: met.p99 },
      { name: 'pool event-loop delay max', target: `< ${LOOP_DELAY_MAX_TARGET_MS} ms`, value: median(pool.max), met: met.max },
      { name: 'pool GET /api/workers p99', target: `< ${API_P99_TARGET_MS} ms`, value: median(pool.api), met: met.api },
      { name: 'pool pass duration', target: `≤ ${p.dialMs + PASS_SLACK_MS} ms`, value: median(pool.pass), met: met.pass },
      { name: 'pool returning workers active by the end of the pass (worst run)', target: `${p.back} of ${p.back}`, value: pool.back.values.length ? pool.back.min : null, met: met.back },
      { name: 'inline / pool event-loop delay p99', target: '> 1×', value: median(ratio.p99), met: beats(ratio.p99) },
      { name: 'inline / pool event-loop delay max', target: '> 1×', value: median(ratio.max), met: beats(ratio.max) },
      { name: 'inline / pool GET /api/workers p99', target: '> 1×', value: median(ratio.api), met: beats(ratio.api) },
    ]
    const row = (kind: Kind): string[] => {
      const last = passes.filter((x) => x.kind === kind).at(-1)!
      const p99 = fmtSummary(of(kind, p99Of), ' ms', 1)
      const max = fmtSummary(of(kind, maxOf), ' ms', 1)
      const api = fmtSummary(of(kind, (f) => f.api.p99Ms), ' ms')
      const pass = fmtSummary(of(kind, (f) => f.passMs), ' ms')
      const back = `${fmtSummary(of(kind, (f) => f.backDuringPass))} of ${p.back}`
      return [
        kind === 'pool' ? '`--dialer pool` (Piscina threads, the default)' : '`--dialer inline` (main thread)',
        kind === 'pool' ? judged(p99, met.p99, `< ${LOOP_DELAY_P99_TARGET_MS} ms`) : p99,
        kind === 'pool' ? judged(max, met.max, `< ${LOOP_DELAY_MAX_TARGET_MS} ms`) : max,
        kind === 'pool' ? judged(pass, met.pass, `≤ ${p.dialMs + PASS_SLACK_MS} ms`) : pass,
        kind === 'pool' ? judged(api, met.api, `< ${API_P99_TARGET_MS} ms`) : api,
        fmtSummary(of(kind, (f) => f.api.requests)),
        fmtSummary(of(kind, (f) => f.mainCpuMs), ' ms'),
        kind === 'pool' ? judged(back, met.back, `${p.back} of ${p.back} in every run`) : back,
        `${last.activeAfter}`,
        `${last.outcomes.success} / ${last.outcomes.refused} / ${last.outcomes.timeout} / ${last.outcomes.error + last.outcomes.rejected}`,
      ]
    }
    const ratioCell = (s: Summary): string => judged(`${fmt(s.median, 1)}× (${fmt(s.min, 1)}–${fmt(s.max, 1)})`, beats(s), '> 1×')
    return {
      tables: [{
        title: `dial-storm: one reconnection pass over ${total} inactive workers (${p.back} come back, ${p.refusing} refuse, ${p.tarpits} tarpits), dial timeout ${p.dialMs} ms (${ctx.runs} run${ctx.runs > 1 ? 's' : ''}; median (min–max))`,
        columns: ['dials', 'event-loop delay p99', 'event-loop delay max', 'pass duration', 'GET /api/workers p99 during the pass', 'requests during the pass', 'main-thread CPU (gap + pass)', 'returning workers active by the end of the pass (registry)', 'workers active after (registry, last run)', 'dial outcomes: success / refused / timeout / other (last run)'],
        rows: [row('pool'), row('inline'), ['inline / pool (same run; > 1×: the pool does better)', ratioCell(ratio.p99), ratioCell(ratio.max), '', ratioCell(ratio.api), '', `${fmt(ratio.cpu.median, 1)}× (${fmt(ratio.cpu.min, 1)}–${fmt(ratio.cpu.max, 1)})`, '', '', '']],
      }],
      notes: [
        `Each run is a fresh \`cloudai master\` on a store holding the ${total} workers; the pass measured is its second (the first runs at start-up, while the ${p.back} workers are still down and turn MasterRegister down; they come back before the second). First passes, for reference: pool ${fmtSummary(of('pool', (f) => f.firstPass.passMs), ' ms')}, event-loop delay max ${fmtSummary(of('pool', (f) => f.firstPass.loopDelayMaxMs ?? NaN), ' ms', 1)}; inline ${fmtSummary(of('inline', (f) => f.firstPass.passMs), ' ms')}, max ${fmtSummary(of('inline', (f) => f.firstPass.loopDelayMaxMs ?? NaN), ' ms', 1)}.`,
        `The pass is the storm, as the master reports it: from its first dial to the last one settled (cloudai_reconnect_last_pass_*). A returning worker is back when GET /api/workers after the pass shows it active with a connected_at inside the pass, whatever its dial's answer (late, or cancelled once it was active); workers active after is the registry's count of all of them.`,
        `Expected dial outcomes: ${p.back} success, ${p.refusing} refused, ${p.tarpits} timeout. Outcomes, the pass duration and its event-loop delay are the master's own figures (/metrics: shared counters, and cloudai_reconnect_last_pass_*, measured with perf_hooks.monitorEventLoopDelay at 1 ms resolution): a single long stall shows in the max, not in the p99.`,
        `Main-thread CPU is the master's main thread's own CPU time (/proc/<pid>/task/<pid>/stat, 10 ms ticks) from the end of its first pass to the end of the second: the gap of ${p.gapMs} ms, the storm, the returning workers' RegisterWorker calls and the API polls. Other load on the machine stretches the delays and latencies; it hardly moves this.`,
        `GET /api/workers (all ${total} workers, one request at a time, at most one per ${API_EVERY_MS} ms) is polled by the bench through the pass; its latency includes rendering the whole list and reading it to the last byte, not the bench's own parse of it (as in the scaling scenario).`,
      ],
      targets,
      raw: { profile: p, passes, inlineOverPool: ratio },
    }
  },
}
