// "scaling": what the master costs per worker as the fleet grows, beside a bare grpc-js server
// (bare-server.ts) taking the very same heartbeats: every simulated worker streams each heartbeat
// to the master and a copy to the bare server, each on a connection of its own, in the same turn.
// One master, one bare server and one fleet grow through the sizes (100, 500, 1,000, 5,000 and
// 10,000 workers at full); at each size, once every worker has beaten on both:
//
//   CPU per heartbeat   (CPU time of the process, all threads) / (heartbeats it counted), both,
//                       over the same windows; their ratio is the master's overhead
//   RSS per worker      (RSS at N - RSS with no worker) / N, both, and the difference
//   RSS per added worker (RSS at N - RSS at the size before) / (the workers added), both: what one
//                       more worker costs, without the bounded costs the first workers bring on
//                       (young generations of the main, dial and telemetry isolates grown to their
//                       cap, thread malloc arenas, the slab's first chunk), which the average above
//                       spreads over N and so overstates at small N
//   GET /api/workers    p50/p99, on the master, after the CPU windows (its own CPU stays out of them)
//   workers active      as the registry counts them (GET /api/status) beside the fleet's own count
//
// At the reference size (500) the fleet also switches to unary SendHeartbeat for a set of windows
// (what CloudAI's workers send): the idle CPU of both transports, as % of a core.
import { setTimeout as sleep } from 'node:timers/promises'
import { BareServer } from '../fleet/bare.js'
import { Fleet } from '../fleet/fleet.js'
import type { HeartbeatTransport } from '../fleet/protocol.js'
import { cpuSeconds, MasterUnderTest, rssBytes } from '../fleet/master.js'
import { fmt, judged, percentile, startBoth, summarize, type Scenario, type ScenarioContext, type ScenarioResult, type Size } from '../lib/suite.js'

export interface ScalingProfile {
  sizes: number[]
  /** The size the ratio targets are judged against, and where unary heartbeats are measured too. */
  reference: number
  heartbeatMs: number
  windows: number
  windowMs: number
  /** GET /api/workers requests per size, one after the other. */
  apiSamples: number
  /** Before the no-worker reading. */
  settleMs: number
  /** Flags for node itself, for the master and the bare server (e.g. --cpu-prof, --heapsnapshot-signal). */
  nodeArgs?: string[]
}

const PROFILES: Record<Size, ScalingProfile> = {
  tiny: { sizes: [5, 20], reference: 5, heartbeatMs: 500, windows: 2, windowMs: 500, apiSamples: 10, settleMs: 300 },
  // Windows shorter than the heartbeat interval: heartbeats are spread over it, and each window's are counted.
  quick: { sizes: [100, 500, 1000, 2000], reference: 500, heartbeatMs: 5000, windows: 2, windowMs: 3000, apiSamples: 40, settleMs: 1000 },
  full: { sizes: [100, 500, 1000, 5000, 10_000], reference: 500, heartbeatMs: 5000, windows: 3, windowMs: 10_000, apiSamples: 200, settleMs: 3000 },
}

const RATIO_AT_REFERENCE = 1.5
/** The ratio at any larger size, over the ratio at the reference size. */
const FLATNESS = 1.3
const KIB_PER_WORKER = 60
const API_P99_MS = 50
/** The API target is judged from this size up (and at the largest size of a smaller profile). */
const API_JUDGED_FROM = 5000
const IDLE_CPU_PCT = 1

// Our workers' default heartbeat transport. Fewer, larger fleet children cost the machine less CPU.
const PER_CHILD = 1000
// POST /api/workers in flight at once, and workers joined at a time: a simulated worker stops
// trying to join after 30 s, so 10,000 go in slices.
const REGISTER_CONCURRENCY = 64
const JOIN_SLICE = 500

// Workers active throughout: the monitor has nothing to dial. The heartbeat timeout is the default.
const MASTER_ARGS = ['--reconnect-interval', '0', '--shutdown-grace', '1s']

interface Window {
  /** Wall clock (ms since the epoch) at the window's start. */
  startedAt: number
  master: { cpuS: number; heartbeats: number }
  bare: { cpuS: number; heartbeats: number }
  wallS: number
}

interface TransportFigures {
  windows: Window[]
  /** Median over the windows, µs of CPU per heartbeat counted. */
  masterUsPerHeartbeat: number | null
  bareUsPerHeartbeat: number | null
  ratio: number | null
  /** Median over the windows, % of one core. */
  masterCpuPct: number | null
  bareCpuPct: number | null
}

export interface SizeFigures {
  workers: number
  stream: TransportFigures
  /** At the reference size only. */
  unary: TransportFigures | null
  masterRssBytes: number | null
  bareRssBytes: number | null
  masterKiBPerWorker: number | null
  bareKiBPerWorker: number | null
  /** (RSS at N - RSS at the size before) / workers added; at the first size, the same as per worker. */
  masterKiBPerAddedWorker: number | null
  bareKiBPerAddedWorker: number | null
  api: { samples: number; p50Ms: number | null; p99Ms: number | null; maxMs: number | null }
  /** GET /api/status, after the windows. */
  registry: { workers: number; active: number; inactive: number }
  /** What the fleet says: workers joined, and heartbeats (or copies) that failed so far. */
  fleet: { joined: number; heartbeatsFailed: number; mirrorFailed: number; registers: number }
}

export interface ScalingFigures {
  profile: ScalingProfile
  none: { masterRssBytes: number | null; bareRssBytes: number | null }
  sizes: SizeFigures[]
  masterMetrics: Record<string, number>
}

const HEARTBEATS = 'cloudai_heartbeats_received_total'
const METRICS = [HEARTBEATS, 'cloudai_heartbeats_refused_total', 'cloudai_heartbeat_streams_opened_total', 'cloudai_heartbeat_streams_broken_total', 'cloudai_workers_active']

const median = (xs: number[]): number | null => {
  const m = summarize(xs.filter(Number.isFinite)).median
  return Number.isFinite(m) ? m : null
}

async function masterHeartbeats(master: MasterUnderTest): Promise<number> {
  return (await master.metrics([HEARTBEATS]))[HEARTBEATS] ?? NaN
}

/** CPU of both over the same windows, with the heartbeats each counted meanwhile. */
async function windows(master: MasterUnderTest, bare: BareServer, p: ScalingProfile): Promise<TransportFigures> {
  const out: Window[] = []
  for (let i = 0; i < p.windows; i++) {
    const [mh0, bh0] = await Promise.all([masterHeartbeats(master), bare.count()])
    const mc0 = cpuSeconds(master.pid)
    const bc0 = cpuSeconds(bare.pid)
    const t0 = performance.now()
    const startedAt = Date.now()
    await sleep(p.windowMs)
    const mc1 = cpuSeconds(master.pid)
    const bc1 = cpuSeconds(bare.pid)
    const wallS = (performance.now() - t0) / 1000
    const [mh1, bh1] = await Promise.all([masterHeartbeats(master), bare.count()])
    out.push({
      startedAt,
      master: { cpuS: mc0 === null || mc1 === null ? NaN : mc1 - mc0, heartbeats: mh1 - mh0 },
      bare: { cpuS: bc0 === null || bc1 === null ? NaN : bc1 - bc0, heartbeats: bh1 - bh0 },
      wallS,
    })
  }
  const us = (w: Window['master']): number => (w.heartbeats > 0 ? (w.cpuS * 1e6) / w.heartbeats : NaN)
  const m = median(out.map((w) => us(w.master)))
  const b = median(out.map((w) => us(w.bare)))
  return {
    windows: out,
    masterUsPerHeartbeat: m,
    bareUsPerHeartbeat: b,
    ratio: m !== null && b !== null && b > 0 ? m / b : null,
    masterCpuPct: median(out.map((w) => (w.master.cpuS / w.wallS) * 100)),
    bareCpuPct: median(out.map((w) => (w.bare.cpuS / w.wallS) * 100)),
  }
}

async function apiLatency(master: MasterUnderTest, n: number): Promise<SizeFigures['api']> {
  const ms: number[] = []
  for (let i = 0; i < n; i++) {
    const res = await master.workerListLatency()
    if (res.status !== 200) throw new Error(`GET /api/workers answered ${res.status}`)
    ms.push(res.ms)
  }
  ms.sort((a, b) => a - b)
  return { samples: ms.length, p50Ms: percentile(ms, 50), p99Ms: percentile(ms, 99), maxMs: ms.at(-1) ?? null }
}

const perWorkerKiB = (at: number | null, none: number | null, n: number): number | null => (at === null || none === null ? null : (at - none) / 1024 / n)

/** The measurement itself, for the scenario and for profiling runs (a profile of one's own). */
export async function measureScaling(p: ScalingProfile, progress: (m: string) => void = () => {}): Promise<ScalingFigures> {
  const largest = Math.max(...p.sizes)
  const nodeArgs = p.nodeArgs ?? []
  const [master, fleet] = await startBoth(
    MasterUnderTest.start(MASTER_ARGS, { nodeArgs }),
    Fleet.start({ workers: largest, heartbeatMs: p.heartbeatMs, transport: 'stream', perChild: PER_CHILD, idPrefix: 'scale' }),
  )
  let bare: BareServer | null = null
  try {
    bare = await BareServer.start({ nodeArgs })
    await sleep(p.settleMs)
    const none = { masterRssBytes: rssBytes(master.pid), bareRssBytes: rssBytes(bare.pid) }
    const sizes: SizeFigures[] = []
    let joined = 0
    let before = { workers: 0, ...none }
    for (const n of [...p.sizes].sort((a, b) => a - b)) {
      for (; joined < n; joined = Math.min(n, joined + JOIN_SLICE)) {
        const slice = fleet.workers.slice(joined, Math.min(n, joined + JOIN_SLICE))
        await master.register(slice, REGISTER_CONCURRENCY)
        await fleet.join(slice.map((w) => w.id), master.grpcAddress)
        await fleet.mirror(slice.map((w) => w.id), bare.address)
      }
      await master.waitFor((s) => s.active === n, `${n} active`, 60_000 + n * 10, 100)
      // Every worker has beaten on both (its first beat falls anywhere in the first interval).
      await sleep(p.heartbeatMs + 500)
      const stream = await windows(master, bare, p)
      const masterRss = rssBytes(master.pid)
      const bareRss = rssBytes(bare.pid)
      let unary: TransportFigures | null = null
      if (n === p.reference) {
        await fleet.transport('unary')
        await sleep(p.heartbeatMs + 500)
        unary = await windows(master, bare, p)
        await fleet.transport('stream')
        await sleep(p.heartbeatMs + 500)
      }
      const api = await apiLatency(master, p.apiSamples)
      const s = await master.status()
      const f = await fleet.stats()
      const figures: SizeFigures = {
        workers: n,
        stream,
        unary,
        masterRssBytes: masterRss,
        bareRssBytes: bareRss,
        masterKiBPerWorker: perWorkerKiB(masterRss, none.masterRssBytes, n),
        bareKiBPerWorker: perWorkerKiB(bareRss, none.bareRssBytes, n),
        masterKiBPerAddedWorker: perWorkerKiB(masterRss, before.masterRssBytes, n - before.workers),
        bareKiBPerAddedWorker: perWorkerKiB(bareRss, before.bareRssBytes, n - before.workers),
        api,
        registry: { workers: s.workers, active: s.active, inactive: s.inactive },
        fleet: { joined: n, heartbeatsFailed: f.heartbeatsFailed, mirrorFailed: f.mirrorFailed, registers: f.registers },
      }
      sizes.push(figures)
      before = { workers: n, masterRssBytes: masterRss, bareRssBytes: bareRss }
      progress(`scaling ${n}: ${fmt(stream.masterUsPerHeartbeat)} µs/heartbeat master, ${fmt(stream.bareUsPerHeartbeat)} µs bare (×${fmt(stream.ratio, 2)}), ${fmt(figures.masterKiBPerWorker, 1)} / ${fmt(figures.bareKiBPerWorker, 1)} KiB per worker (${fmt(figures.masterKiBPerAddedWorker, 1)} / ${fmt(figures.bareKiBPerAddedWorker, 1)} per added worker), GET /api/workers p99 ${fmt(api.p99Ms, 1)} ms, ${s.active} active`)
    }
    return { profile: p, none, sizes, masterMetrics: await master.metrics(METRICS) }
  } finally {
    await fleet.stop()
    await bare?.stop()
    await master.stop()
  }
}

function judgeAll(r: ScalingFigures): ScenarioResult['targets'] {
  const p = r.profile
  const targets: ScenarioResult['targets'] = []
  const ref = r.sizes.find((s) => s.workers === p.reference)
  const refRatio = ref?.stream.ratio ?? null
  targets.push({ name: `CPU per heartbeat master/bare at ${p.reference} workers`, target: `≤ ${RATIO_AT_REFERENCE}×`, value: refRatio, met: refRatio === null ? null : refRatio <= RATIO_AT_REFERENCE })
  for (const s of r.sizes.filter((x) => x.workers > p.reference && x.workers >= Math.min(1000, Math.max(...p.sizes)))) {
    const flat = s.stream.ratio !== null && refRatio !== null ? s.stream.ratio / refRatio : null
    targets.push({ name: `ratio at ${s.workers} over ratio at ${p.reference}`, target: `≤ ${FLATNESS}`, value: flat, met: flat === null ? null : flat <= FLATNESS })
  }
  const largest = r.sizes.at(-1)
  if (largest) {
    const kib = largest.masterKiBPerWorker
    targets.push({ name: `master RSS per active worker at ${largest.workers}`, target: `≤ ${KIB_PER_WORKER} KiB`, value: kib, met: kib === null ? null : kib <= KIB_PER_WORKER })
    const added = largest.masterKiBPerAddedWorker
    targets.push({ name: `master RSS per added worker at ${largest.workers}`, target: `≤ ${KIB_PER_WORKER} KiB`, value: added, met: added === null ? null : added <= KIB_PER_WORKER })
  }
  const apiSizes = r.sizes.filter((s) => s.workers >= API_JUDGED_FROM)
  for (const s of apiSizes.length ? apiSizes : largest ? [largest] : []) {
    targets.push({ name: `GET /api/workers p99 at ${s.workers}`, target: `< ${API_P99_MS} ms`, value: s.api.p99Ms, met: s.api.p99Ms === null ? null : s.api.p99Ms < API_P99_MS })
  }
  if (ref) {
    for (const t of ['unary', 'stream'] as HeartbeatTransport[]) {
      const pct = ref[t]?.masterCpuPct ?? null
      targets.push({ name: `master idle CPU at ${p.reference} workers, ${t} heartbeats`, target: `< ${IDLE_CPU_PCT} %`, value: pct, met: pct === null ? null : pct < IDLE_CPU_PCT })
    }
  }
  return targets
}

export const scaling: Scenario = {
  name: 'scaling',
  description: 'CPU per heartbeat, RSS per worker and GET /api/workers at 100 to 10,000 streamed workers, master beside a bare grpc-js server taking the same heartbeats',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const r = await measureScaling(p, ctx.progress)
    const targets = judgeAll(r)
    const met = (name: string): boolean | null => targets.find((t) => t.name === name)?.met ?? null
    const ref = r.sizes.find((s) => s.workers === p.reference)
    const refRatio = ref?.stream.ratio ?? null
    const rows = r.sizes.map((s) => {
      const ratioCell = s.workers === p.reference
        ? judged(`${fmt(s.stream.ratio, 2)}×`, met(`CPU per heartbeat master/bare at ${p.reference} workers`), `≤ ${RATIO_AT_REFERENCE}×`)
        : targets.some((t) => t.name === `ratio at ${s.workers} over ratio at ${p.reference}`)
          ? judged(`${fmt(s.stream.ratio, 2)}× (${fmt(s.stream.ratio !== null && refRatio !== null ? s.stream.ratio / refRatio : null, 2)} of ${p.reference}'s)`, met(`ratio at ${s.workers} over ratio at ${p.reference}`), `≤ ${FLATNESS} × ratio at ${p.reference}`)
          : `${fmt(s.stream.ratio, 2)}×`
      const kibName = `master RSS per active worker at ${s.workers}`
      const kib = `${fmt(s.masterKiBPerWorker, 1)} / ${fmt(s.bareKiBPerWorker, 1)} / ${fmt(s.masterKiBPerWorker !== null && s.bareKiBPerWorker !== null ? s.masterKiBPerWorker - s.bareKiBPerWorker : null, 1)}`
      const addedName = `master RSS per added worker at ${s.workers}`
      const added = `${fmt(s.masterKiBPerAddedWorker, 1)} / ${fmt(s.bareKiBPerAddedWorker, 1)}`
      const apiName = `GET /api/workers p99 at ${s.workers}`
      const api = `${fmt(s.api.p50Ms, 1)} / ${fmt(s.api.p99Ms, 1)} ms`
      return [
        String(s.workers),
        `${fmt(s.stream.masterUsPerHeartbeat)} / ${fmt(s.stream.bareUsPerHeartbeat)}`,
        ratioCell,
        `${fmt(s.stream.masterCpuPct, 2)} / ${fmt(s.stream.bareCpuPct, 2)} %`,
        targets.some((t) => t.name === kibName) ? judged(kib, met(kibName), `master ≤ ${KIB_PER_WORKER} KiB`) : kib,
        targets.some((t) => t.name === addedName) ? judged(added, met(addedName), `master ≤ ${KIB_PER_WORKER} KiB`) : added,
        targets.some((t) => t.name === apiName) ? judged(api, met(apiName), `p99 < ${API_P99_MS} ms`) : api,
        `${s.registry.active} / ${s.fleet.joined}${s.fleet.heartbeatsFailed + s.fleet.mirrorFailed > 0 ? ` (${s.fleet.heartbeatsFailed} heartbeats, ${s.fleet.mirrorFailed} copies failed)` : ''}`,
      ]
    })
    const tables = [{
      title: `scaling: streamed workers, a heartbeat every ${p.heartbeatMs / 1000} s each, master and bare grpc-js server taking the same heartbeats (${p.windows} windows of ${p.windowMs / 1000} s per size; medians)`,
      columns: ['workers', 'CPU per heartbeat, µs (master / bare)', 'ratio master / bare', 'CPU, % of a core (master / bare)', 'RSS per worker, KiB (master / bare / difference)', 'RSS per added worker, KiB (master / bare)', 'GET /api/workers p50 / p99', 'active: registry / fleet'],
      rows,
    }]
    if (ref?.unary) {
      const idleRow = (t: HeartbeatTransport): string[] => {
        const f = ref[t]!
        const name = `master idle CPU at ${p.reference} workers, ${t} heartbeats`
        return [t === 'unary' ? 'unary SendHeartbeat' : 'StreamHeartbeats', judged(`${fmt(f.masterCpuPct, 2)} %`, met(name), `< ${IDLE_CPU_PCT} %`), `${fmt(f.bareCpuPct, 2)} %`, `${fmt(f.ratio, 2)}×`, `${fmt(f.masterUsPerHeartbeat)} / ${fmt(f.bareUsPerHeartbeat)}`]
      }
      tables.push({
        title: `scaling: idle CPU at ${p.reference} workers, unary and streamed heartbeats (${p.windows} windows of ${p.windowMs / 1000} s each; medians)`,
        columns: ['heartbeats', 'cloudai master', 'bare grpc-js server', 'ratio master / bare', 'CPU per heartbeat, µs (master / bare)'],
        rows: [idleRow('unary'), idleRow('stream')],
      })
    }
    return {
      tables,
      notes: [
        'Each simulated worker sends every heartbeat twice in the same turn: to the master, and a copy to the bare server (a grpc-js server of the same service that only counts), each on a connection of its own; both servers run as child processes on the same cores, measured over the same windows. CPU is the time the process\'s threads spent on a CPU (/proc/<pid>/task/<tid>/schedstat, nanoseconds), over the heartbeats that process counted in the window (the master\'s shared counter, the bare server\'s own count).',
        `RSS per worker: (RSS at N - RSS with no worker) / N, one master and one bare server growing through the sizes; the master's figure holds everything an active worker costs it (registry record, connection, stream, telemetry lane), and also the bounded costs its first workers bring on (the young generations of its main, dial and telemetry isolates grown to their cap by the registration and dial burst, thread malloc arenas, the slab's first chunk), spread over N. RSS per added worker: (RSS at N - RSS at the size before) / the workers added, what one more worker costs once those are paid. GET /api/workers: ${p.apiSamples} requests one after the other on the master after the CPU windows, under the heartbeats.`,
        `Targets: the ratio at ${p.reference} ≤ ${RATIO_AT_REFERENCE}×, the ratio at larger sizes within ${FLATNESS}× of it (a flat cost per heartbeat), ≤ ${KIB_PER_WORKER} KiB per active worker and per added worker (both judged at the largest size), GET /api/workers p99 < ${API_P99_MS} ms from ${API_JUDGED_FROM} workers (at the largest size of a smaller profile), and the idle CPU at ${p.reference} workers < ${IDLE_CPU_PCT} % of a core (the issue's first figure).`,
      ],
      targets,
      raw: r,
    }
  },
}
