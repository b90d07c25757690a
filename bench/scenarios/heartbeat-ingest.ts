// Scenario 3, "heartbeat-ingest": the highest heartbeat rate the master sustains, unary
// (SendHeartbeat) and streamed (StreamHeartbeats), against a bare @grpc/grpc-js server that accepts
// the same messages and only counts them, in the same run. The headline is master / bare.
//
// Rates climb by doubling; a step runs open-loop (sends on schedule whether or not answers came) for
// a fixed time. Unary: sustained when every call succeeded, all answered, and the p99 latency (send
// to ack, measured here) is under 50 ms. Streamed: the master writes nothing back, so latency is
// bounded by the drain time: sustained when the server's received count (the master's shared
// counter `cloudai_heartbeats_received_total`, the bare server's own count) reaches everything sent
// within 50 ms of the last send, with no stream error.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { LoadGenerator } from '../fleet/load.js'
import { MasterUnderTest } from '../fleet/master.js'
import { fmt, fmtSummary, judged, percentile, summarize, type Scenario, type ScenarioResult, type Size } from '../lib/suite.js'

const P99_LIMIT_MS = 50
const RATIO_TARGET = 0.9

interface Profile {
  workers: number
  stepMs: number
  /** First judged rate per transport: streams sustain far more than unary calls, quick skips their low steps. */
  startRate: Record<Transport, number>
  maxRate: number
  /** Load-generator processes (the workers dealt among them). */
  generators: number
}

const PROFILES: Record<Size, Profile> = {
  tiny: { workers: 4, stepMs: 300, startRate: { unary: 200, stream: 200 }, maxRate: 800, generators: 2 },
  quick: { workers: 20, stepMs: 300, startRate: { unary: 1000, stream: 4000 }, maxRate: 64_000, generators: 2 },
  // Steps of 2 s from the quick profile's first rates (the steps below them pass on any machine),
  // 3 runs: the full profile keeps to its time.
  full: { workers: 50, stepMs: 2000, startRate: { unary: 1000, stream: 4000 }, maxRate: 128_000, generators: 3 },
}

/** Halvings of the gap between the highest rate that passed and the lowest that failed. */
const REFINE_STEPS = 3

/** Halvings below the first rate, when it fails, before a climb gives up (0 sustained). */
const MAX_HALVINGS_DOWN = 4

/** Runs per transport: at full, 3 of the profile's 5 (each run climbs both servers). */
const MAX_RUNS = 3

type Transport = 'unary' | 'stream'

interface Step {
  rate: number
  sent: number
  answered: number
  errors: number
  p99Ms: number | null
  drainMs: number | null
  ok: boolean
}

interface Target {
  name: string
  address: string
  count(): Promise<number>
  stop(): Promise<void>
}

async function bareTarget(): Promise<Target> {
  const child: ChildProcess = fork(fileURLToPath(new URL('../fleet/bare-server.js', import.meta.url)))
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port))
    child.once('exit', (code) => reject(new Error(`bare server exited with ${code}`)))
  })
  return {
    name: 'bare grpc-js',
    address: `127.0.0.1:${port}`,
    count: () => new Promise((resolve) => {
      child.once('message', (m) => resolve((m as { count: number }).count))
      child.send({ type: 'count' })
    }),
    async stop() {
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGKILL')
      await exited
    },
  }
}

async function masterTarget(): Promise<{ target: Target; master: MasterUnderTest }> {
  const master = await MasterUnderTest.start(['--heartbeat-timeout', '5m', '--shutdown-grace', '1s'])
  const target: Target = {
    name: 'cloudai master',
    address: master.grpcAddress,
    async count() {
      const text = await fetch(`${master.api}/metrics`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.text())
      const m = /^cloudai_heartbeats_received_total (\S+)$/m.exec(text)
      return m ? Number(m[1]) : NaN
    },
    stop: () => master.stop(),
  }
  return { target, master }
}

function p99(latencies: number[]): number | null {
  return percentile(latencies.sort((a, b) => a - b), 99)
}

async function climb(target: Target, transport: Transport, p: Profile, ids: string[], warmup: Step[] = []): Promise<Step[]> {
  const steps: Step[] = []
  const load = await LoadGenerator.start({ processes: p.generators, address: target.address, ids, transport })
  try {
    const runStep = async (rate: number): Promise<Step> => {
      const before = await target.count()
      const r = await load.step(rate, p.stepMs)
      const tEnd = performance.now()
      let drainMs: number | null = null
      let answered = r.answered
      if (transport === 'stream') {
        const deadline = tEnd + 5000
        for (;;) {
          const got = (await target.count()) - before
          if (got >= r.sent) {
            drainMs = performance.now() - tEnd
            break
          }
          if (performance.now() > deadline) break
          await sleep(5)
        }
        answered = drainMs === null ? 0 : r.sent
      }
      const q = p99(r.latencies)
      const ok = transport === 'unary'
        ? r.errors === 0 && answered === r.sent && q !== null && q < P99_LIMIT_MS
        : r.errors === 0 && drainMs !== null && drainMs < P99_LIMIT_MS
      return { rate, sent: r.sent, answered, errors: r.errors, p99Ms: q, drainMs, ok }
    }
    // Warm-up, not judged: connections up, code optimised, the master's lanes live.
    warmup.push(await runStep(Math.round(p.startRate[transport] / 2)))
    await sleep(200)
    // Doubling until a rate fails (halving when the first one does, until one passes), then
    // REFINE_STEPS halvings of the gap between the highest rate that passed and the lowest that
    // failed: a doubling alone leaves a figure up to half below the true limit, and two servers a
    // step apart 0.5 or 0.67 apart in ratio.
    let rate = p.startRate[transport]
    let passed = 0
    let failed = Infinity
    let refinements = 0
    for (;;) {
      let step = await runStep(rate)
      steps.push(step)
      if (!step.ok) {
        // One stall (a GC pause here or there) fails a short step: a rate fails when it fails twice.
        await sleep(500)
        step = await runStep(rate)
        steps.push(step)
      }
      if (step.ok) passed = Math.max(passed, rate)
      else {
        failed = Math.min(failed, rate)
        // Let the failed step's backlog drain before the next one.
        await sleep(500)
      }
      if (failed === Infinity) {
        if (rate * 2 > p.maxRate) break
        rate *= 2
        continue
      }
      // Nothing passed yet (a slow or loaded machine fails the first rate): halve until a rate
      // passes, then refine between the two. Reporting 0 there would make the ratio meaningless.
      if (passed === 0) {
        if (rate / 2 < p.startRate[transport] / 2 ** MAX_HALVINGS_DOWN) break
        rate = Math.round(rate / 2)
        continue
      }
      if (refinements >= REFINE_STEPS) break
      refinements++
      rate = Math.round((passed + failed) / 2)
    }
  } finally {
    await load.stop()
  }
  return steps
}

/** Highest sustained rate: the last step that passed (0 when none did). */
function sustained(steps: Step[]): number {
  let best = 0
  for (const s of steps) if (s.ok) best = Math.max(best, s.rate)
  return best
}

export const heartbeatIngest: Scenario = {
  name: 'heartbeat-ingest',
  description: 'Highest sustained heartbeat rate (p99 < 50 ms), unary and streamed, vs a bare grpc-js server in the same run',
  async run(ctx): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const ids = Array.from({ length: p.workers }, (_, i) => `ingest-${i}`)
    const runs: { transport: Transport; run: number; master: Step[]; bare: Step[]; masterWarmup: Step[]; bareWarmup: Step[]; masterRate: number; bareRate: number; ratio: number }[] = []
    for (const transport of ['unary', 'stream'] as Transport[]) {
      for (let r = 0; r < Math.min(ctx.runs, MAX_RUNS); r++) {
        const masterWarmup: Step[] = []
        const bareWarmup: Step[] = []
        const { target, master } = await masterTarget()
        let masterSteps: Step[]
        try {
          await master.register(ids.map((id, i) => ({ id, address: `127.0.0.1:${20000 + i}` })))
          masterSteps = await climb(target, transport, p, ids, masterWarmup)
        } finally {
          await target.stop()
        }
        const bare = await bareTarget()
        let bareSteps: Step[]
        try {
          bareSteps = await climb(bare, transport, p, ids, bareWarmup)
        } finally {
          await bare.stop()
        }
        const masterRate = sustained(masterSteps)
        const bareRate = sustained(bareSteps)
        const ratio = bareRate > 0 ? masterRate / bareRate : NaN
        runs.push({ transport, run: r + 1, master: masterSteps, bare: bareSteps, masterWarmup, bareWarmup, masterRate, bareRate, ratio })
        ctx.progress(`heartbeat-ingest ${transport} run ${r + 1}: master ${masterRate}/s, bare ${bareRate}/s`)
      }
    }
    const targets: ScenarioResult['targets'] = []
    const rows = (['unary', 'stream'] as Transport[]).map((transport) => {
      const mine = runs.filter((x) => x.transport === transport)
      const ratio = summarize(mine.map((x) => x.ratio))
      const met = Number.isFinite(ratio.median) ? ratio.median >= RATIO_TARGET : null
      targets.push({ name: `${transport} master/bare`, target: `≥ ${RATIO_TARGET}`, value: Number.isFinite(ratio.median) ? ratio.median : null, met })
      const capped = (steps: (x: (typeof mine)[number]) => Step[]): string => (mine.some((x) => steps(x).some((s) => s.ok && s.rate === p.maxRate)) ? ' (hit the top step)' : '')
      return [
        transport === 'unary' ? 'unary SendHeartbeat (p99 send→ack)' : 'StreamHeartbeats (drain after last send)',
        `${fmtSummary(summarize(mine.map((x) => x.masterRate)), '/s')}${capped((x) => x.master)}`,
        `${fmtSummary(summarize(mine.map((x) => x.bareRate)), '/s')}${capped((x) => x.bare)}`,
        judged(`${fmt(ratio.median, 2)} (${fmt(ratio.min, 2)}–${fmt(ratio.max, 2)})`, met, `≥ ${RATIO_TARGET}`),
      ]
    })
    return {
      tables: [{
        title: `heartbeat-ingest: ${p.workers} workers, rate doubling from ${p.startRate.unary}/s (unary), ${p.startRate.stream}/s (streamed), halving below a first rate that fails, then ${REFINE_STEPS} halvings of the gap to the first rate that failed, ${p.stepMs} ms per step (${Math.min(ctx.runs, MAX_RUNS)} run${Math.min(ctx.runs, MAX_RUNS) > 1 ? 's' : ''}; median (min–max))`,
        columns: ['transport', 'cloudai master sustained', 'bare grpc-js sustained', 'ratio master / bare'],
        rows,
      }],
      notes: [
        `Sustained: the highest step with no error, every heartbeat answered (unary) or counted by the server, and p99 latency under ${P99_LIMIT_MS} ms (unary: measured per call; streamed: the time from the last send until the server had counted them all). Rates double until a rate fails twice in a row (one retry absorbs a single stall; when the first rate fails, they halve until one passes, at most ${MAX_HALVINGS_DOWN} times), then the gap between the highest rate that passed and the lowest that failed is halved ${REFINE_STEPS} times: a figure is at most 1/${2 ** REFINE_STEPS} of the last doubling below the true limit. A server that passed the top step (${p.maxRate}/s) is marked: its limit is higher, and a ratio against it is a bound.`,
        'Streamed drain is polled from the master\'s GET /metrics (each poll costs a few ms) and from the bare server over IPC, which favours the bare server slightly.',
        `Each climb starts with an unjudged warm-up step at half the first rate (connections, JIT, the master's lanes).`,
        `The load comes from ${p.generators} generator processes (the workers dealt among them, each with its own connection), not from the bench process, so that one event loop sending and timing calls is not the limit; they share this machine's cores with the server under test, the same for both servers.`,
      ],
      targets,
      raw: { profile: p, runs },
    }
  },
}
