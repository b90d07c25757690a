// "idle-cpu": the master's CPU with W workers active and idle, heartbeating at the worker's default
// 5 s, as the median of several windows; first with unary SendHeartbeat (what CloudAI's workers
// send), then, with the same fleet, on one StreamHeartbeats call per worker (what ours send by
// default). Next to a bare @grpc/grpc-js server taking the same heartbeats from the same kind of
// fleet in the same run. Target (the issue's): under 1% of a core at 500 workers.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Fleet } from '../fleet/fleet.js'
import type { HeartbeatTransport } from '../fleet/protocol.js'
import { cpuMeter, MasterUnderTest, rssBytes } from '../fleet/master.js'
import { fmt, fmtSummary, judged, startBoth, summarize, type Scenario, type ScenarioContext, type ScenarioResult, type Size, type Summary } from '../lib/suite.js'

interface Profile {
  workers: number
  heartbeatMs: number
  windows: number
  windowMs: number
}

const PROFILES: Record<Size, Profile> = {
  tiny: { workers: 10, heartbeatMs: 500, windows: 2, windowMs: 500 },
  quick: { workers: 500, heartbeatMs: 5000, windows: 3, windowMs: 1000 },
  full: { workers: 500, heartbeatMs: 5000, windows: 9, windowMs: 10_000 },
}

const TARGET_PCT = 1

/** Several CPU windows of `pid`, once a full heartbeat interval has passed (every worker has beaten). */
async function windows(pid: number, p: Profile): Promise<number[]> {
  await sleep(p.heartbeatMs + 500)
  const out: number[] = []
  for (let i = 0; i < p.windows; i++) {
    const m = cpuMeter(pid)
    await sleep(p.windowMs)
    out.push(m.stop() ?? NaN)
  }
  return out
}

const TRANSPORTS: readonly HeartbeatTransport[] = ['unary', 'stream']

type Idle = Record<HeartbeatTransport, { cpu: number[]; rssBytes: number | null }>

/** The windows of each transport in turn, from the same fleet (it starts on unary). */
async function bothTransports(pid: number, fleet: Fleet, p: Profile): Promise<Idle> {
  const idle = {} as Idle
  for (const t of TRANSPORTS) {
    await fleet.transport(t)
    idle[t] = { cpu: await windows(pid, p), rssBytes: rssBytes(pid) }
  }
  return idle
}

const METRICS = ['cloudai_heartbeats_received_total', 'cloudai_heartbeats_refused_total', 'cloudai_heartbeat_streams_opened_total', 'cloudai_heartbeat_streams_broken_total']

async function masterIdle(p: Profile): Promise<Idle & { masterMetrics: Record<string, number> }> {
  const [master, fleet] = await startBoth(
    MasterUnderTest.start(['--reconnect-interval', '0', '--shutdown-grace', '1s']),
    Fleet.start({ workers: p.workers, heartbeatMs: p.heartbeatMs, idPrefix: 'idle' }),
  )
  try {
    await master.register(fleet.workers)
    await fleet.join(fleet.ids, master.grpcAddress)
    await master.waitFor((s) => s.active === p.workers, `${p.workers} active`, 60_000)
    const idle = await bothTransports(master.pid, fleet, p)
    // A heartbeat the master refused would have made the worker register again: all must still be active.
    await master.waitFor((s) => s.active === p.workers, `${p.workers} still active on streams`, 10_000)
    return { ...idle, masterMetrics: await master.metrics(METRICS) }
  } finally {
    await fleet.stop()
    await master.stop()
  }
}

async function bareIdle(p: Profile): Promise<Idle> {
  const child = fork(fileURLToPath(new URL('../fleet/bare-server.js', import.meta.url)))
  const exited = new Promise((r) => child.once('exit', r))
  let fleet: Fleet | null = null
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m) => resolve((m as { port: number }).port))
      child.once('exit', (code) => reject(new Error(`bare server exited with ${code}`)))
    })
    fleet = await Fleet.start({ workers: p.workers, heartbeatMs: p.heartbeatMs, idPrefix: 'idle' })
    await fleet.join(fleet.ids, `127.0.0.1:${port}`)
    return await bothTransports(child.pid!, fleet, p)
  } finally {
    await fleet?.stop()
    child.kill('SIGKILL')
    await exited
  }
}

export const idleCpu: Scenario = {
  name: 'idle-cpu',
  description: 'Master CPU with 500 idle workers heartbeating every 5 s, unary and streamed (median of several windows), vs a bare grpc-js server',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const master = await masterIdle(p)
    for (const t of TRANSPORTS) ctx.progress(`idle-cpu master ${t}: ${master[t].cpu.map((x) => fmt(x, 2)).join(' ')} %`)
    const bare = await bareIdle(p)
    for (const t of TRANSPORTS) ctx.progress(`idle-cpu bare ${t}: ${bare[t].cpu.map((x) => fmt(x, 2)).join(' ')} %`)
    const rows: string[][] = []
    const targets: ScenarioResult['targets'] = []
    for (const t of TRANSPORTS) {
      const m: Summary = summarize(master[t].cpu)
      const b: Summary = summarize(bare[t].cpu)
      const value = Number.isFinite(m.median) ? m.median : null
      const met = value === null ? null : value < TARGET_PCT
      rows.push(
        [t, 'cloudai master', judged(fmtSummary(m, ' %', 2), met, `< ${TARGET_PCT} %`), `${fmt((master[t].rssBytes ?? NaN) / 2 ** 20)} MiB`, fmt(m.median / b.median, 1)],
        [t, 'bare grpc-js server (counts heartbeats)', fmtSummary(b, ' %', 2), `${fmt((bare[t].rssBytes ?? NaN) / 2 ** 20)} MiB`, '1.0'],
      )
      targets.push({ name: `master idle CPU at ${p.workers} workers, ${t} heartbeats`, target: `< ${TARGET_PCT} %`, value, met })
    }
    return {
      tables: [{
        title: `idle-cpu: ${p.workers} active workers, a heartbeat every ${p.heartbeatMs / 1000} s each (${p.windows} windows of ${p.windowMs / 1000} s per transport; median (min–max), % of one core)`,
        columns: ['heartbeats', 'server', 'CPU', 'RSS', 'ratio to bare'],
        rows,
      }],
      notes: [
        `${(p.workers * 1000) / p.heartbeatMs} heartbeats/s in both; CPU is user + system time of the server process, all threads, from /proc/<pid>/stat. Windows start one heartbeat interval after all workers are up, and again one interval after the fleet switched from unary SendHeartbeat calls to one StreamHeartbeats call per worker.`,
      ],
      targets,
      raw: { profile: p, master, bare },
    }
  },
}
