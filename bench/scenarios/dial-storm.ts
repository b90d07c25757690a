// Scenario 2, "dial-storm": one reconnection pass over a large inactive fleet where most addresses
// are bad: some workers come back (simulated, answering MasterRegister by calling RegisterWorker),
// some refuse (nothing listening), some are tarpits (accept, never answer: the dial runs into its
// timeout). The master's ReconnectMonitor runs here, in the bench process, with the pool dialer
// (Piscina threads, what the master uses) and with inline dials (on the main thread), in the same
// run; the figure that matters is the main thread's event-loop delay while the pass runs.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { pino } from 'pino'
import { InlineDialer, PoolDialer, type Dialer } from '../../src/master/dialer.js'
import { ReconnectMonitor } from '../../src/master/reconnect.js'
import { Registry } from '../../src/master/registry.js'
import { CounterReader, Counters } from '../../src/shared/counters.js'
import { Fleet, refusingAddresses } from '../fleet/fleet.js'
import { fmt, fmtSummary, summarize, type Scenario, type ScenarioResult, type Size } from '../lib/suite.js'

interface Profile {
  back: number
  refusing: number
  tarpits: number
  dialMs: number
}

const PROFILES: Record<Size, Profile> = {
  // tiny runs inside npm test beside other suites: a dial to a live worker must not time out on a busy machine.
  tiny: { back: 5, refusing: 25, tarpits: 20, dialMs: 3000 },
  quick: { back: 200, refusing: 1000, tarpits: 800, dialMs: 3000 },
  full: { back: 500, refusing: 2500, tarpits: 2000, dialMs: 3000 },
}

type Kind = 'pool' | 'inline'

interface PassFigures {
  kind: Kind
  passMs: number
  loopDelayP50Ms: number
  loopDelayP99Ms: number
  loopDelayMaxMs: number
  outcomes: { success: number; refused: number; timeout: number; rejected: number; error: number; cancelled: number; attempts: number }
}

async function bareMaster(): Promise<{ address: string; child: ChildProcess }> {
  const child = fork(fileURLToPath(new URL('../fleet/bare-server.js', import.meta.url)))
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port))
    child.once('exit', (code) => reject(new Error(`bare server exited with ${code}`)))
  })
  return { address: `127.0.0.1:${port}`, child }
}

async function onePass(kind: Kind, dialer: Dialer, addresses: string[], masterAddress: string, dialMs: number): Promise<PassFigures> {
  const registry = new Registry()
  const now = Date.now()
  addresses.forEach((a, i) => registry.register(`storm-${i}`, a, now))
  const counters = new Counters()
  dialer.counters = counters.buffer
  const reader = new CounterReader(counters)
  const monitor = new ReconnectMonitor(registry, dialer, { intervalMs: 3_600_000, dialTimeoutMs: dialMs, masterId: 'bench', masterAddress: () => masterAddress, log: pino({ level: 'silent' }) })
  const eld = monitorEventLoopDelay({ resolution: 1 })
  eld.enable()
  const t0 = performance.now()
  await monitor.runPass()
  const passMs = performance.now() - t0
  eld.disable()
  await monitor.close()
  const c = reader.all()
  return {
    kind,
    passMs,
    loopDelayP50Ms: eld.percentile(50) / 1e6,
    loopDelayP99Ms: eld.percentile(99) / 1e6,
    loopDelayMaxMs: eld.max / 1e6,
    outcomes: { success: c.DIAL_SUCCESS, refused: c.DIAL_REFUSED, timeout: c.DIAL_TIMEOUT, rejected: c.DIAL_REJECTED, error: c.DIAL_ERROR, cancelled: c.DIAL_CANCELLED, attempts: c.DIAL_ATTEMPTS },
  }
}

export const dialStorm: Scenario = {
  name: 'dial-storm',
  description: 'One reconnection pass over inactive workers that mostly refuse or tarpit: main-thread event-loop delay with the dial pool vs inline dials',
  async run(ctx): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const master = await bareMaster()
    let fleet: Fleet | null = null
    const passes: PassFigures[] = []
    try {
      fleet = await Fleet.start({ workers: p.back, heartbeatMs: 60_000, perChild: 250, idPrefix: 'back' })
      const tarpits = await fleet.tarpits(p.tarpits)
      const refusing = await refusingAddresses(p.refusing)
      // Interleaved, as a real fleet's registry would have them.
      const all = [...fleet.workers.map((w) => w.address), ...refusing, ...tarpits].sort(() => Math.random() - 0.5)
      const dialers: Record<Kind, Dialer> = { pool: new PoolDialer(), inline: new InlineDialer() }
      try {
        for (let r = 0; r < ctx.runs; r++) {
          for (const kind of ['pool', 'inline'] as Kind[]) {
            const f = await onePass(kind, dialers[kind], all, master.address, p.dialMs)
            passes.push(f)
            ctx.progress(`dial-storm ${kind} run ${r + 1}: pass ${fmt(f.passMs)} ms, loop delay p99 ${fmt(f.loopDelayP99Ms, 1)} ms, ${f.outcomes.success} back`)
          }
        }
      } finally {
        await Promise.all(Object.values(dialers).map((d) => d.close()))
      }
    } finally {
      await fleet?.stop()
      master.child.kill('SIGKILL')
    }
    const row = (kind: Kind): string[] => {
      const mine = passes.filter((x) => x.kind === kind)
      const last = mine.at(-1)!
      return [
        kind === 'pool' ? 'pool (Piscina threads, the master\'s)' : 'inline (main thread)',
        fmtSummary(summarize(mine.map((x) => x.loopDelayP99Ms)), ' ms', 1),
        fmtSummary(summarize(mine.map((x) => x.loopDelayMaxMs)), ' ms', 1),
        fmtSummary(summarize(mine.map((x) => x.passMs)), ' ms'),
        `${last.outcomes.success} / ${last.outcomes.refused} / ${last.outcomes.timeout} / ${last.outcomes.error + last.outcomes.rejected}`,
      ]
    }
    const ratioOf = (pick: (f: PassFigures) => number): ReturnType<typeof summarize> =>
      summarize(Array.from({ length: ctx.runs }, (_, r) => pick(passes[r * 2 + 1]!) / Math.max(0.001, pick(passes[r * 2]!))))
    const ratio = ratioOf((f) => f.loopDelayP99Ms)
    const ratioMax = ratioOf((f) => f.loopDelayMaxMs)
    return {
      tables: [{
        title: `dial-storm: ${p.back + p.refusing + p.tarpits} inactive (${p.back} come back, ${p.refusing} refuse, ${p.tarpits} tarpits), dial timeout ${p.dialMs} ms (${ctx.runs} run${ctx.runs > 1 ? 's' : ''}; median (min–max))`,
        columns: ['dials', 'event-loop delay p99', 'event-loop delay max', 'pass duration', 'success / refused / timeout / other (last run)'],
        rows: [row('pool'), row('inline'), ['inline / pool (same run)', `${fmt(ratio.median, 1)}× (${fmt(ratio.min, 1)}–${fmt(ratio.max, 1)})`, `${fmt(ratioMax.median, 1)}× (${fmt(ratioMax.min, 1)}–${fmt(ratioMax.max, 1)})`, '', '']],
      }],
      notes: [
        `Expected outcomes per pass: ${p.back} success, ${p.refusing} refused, ${p.tarpits} timeout. Outcomes are the dial threads' own shared counters (CounterReader).`,
        'The event-loop delay is perf_hooks.monitorEventLoopDelay (1 ms resolution) over the pass: a single long stall shows in the max, not in the p99.',
        'The monitor runs in the bench process; the come-back workers call RegisterWorker on a bare grpc-js server standing in for the master, so the registry does not change between passes.',
      ],
      targets: [],
      raw: { profile: p, passes, inlineOverPoolP99: ratio, inlineOverPoolMax: ratioMax },
    }
  },
}
