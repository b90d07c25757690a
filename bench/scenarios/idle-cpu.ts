// "idle-cpu": the master's CPU with W workers active and idle, heartbeating (unary SendHeartbeat)
// at the worker's default 5 s, as the median of several windows; next to a bare @grpc/grpc-js
// server taking the same heartbeats from the same kind of fleet in the same run. Target (the
// issue's): under 1% of a core at 500 workers.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Fleet } from '../fleet/fleet.js'
import { cpuMeter, MasterUnderTest, rssBytes } from '../fleet/master.js'
import { fmt, fmtSummary, judged, summarize, type Scenario, type ScenarioContext, type ScenarioResult, type Size, type Summary } from '../lib/suite.js'

interface Profile {
  workers: number
  heartbeatMs: number
  windows: number
  windowMs: number
}

const PROFILES: Record<Size, Profile> = {
  tiny: { workers: 10, heartbeatMs: 500, windows: 2, windowMs: 500 },
  quick: { workers: 500, heartbeatMs: 5000, windows: 5, windowMs: 2000 },
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

async function masterIdle(p: Profile): Promise<{ cpu: number[]; rssBytes: number | null }> {
  const master = await MasterUnderTest.start(['--reconnect-interval', '0', '--shutdown-grace', '1s'])
  let fleet: Fleet | null = null
  try {
    fleet = await Fleet.start({ workers: p.workers, heartbeatMs: p.heartbeatMs, idPrefix: 'idle' })
    await master.register(fleet.workers)
    await fleet.join(fleet.ids, master.grpcAddress)
    await master.waitFor((s) => s.active === p.workers, `${p.workers} active`, 60_000)
    return { cpu: await windows(master.pid, p), rssBytes: rssBytes(master.pid) }
  } finally {
    await fleet?.stop()
    await master.stop()
  }
}

async function bareIdle(p: Profile): Promise<{ cpu: number[]; rssBytes: number | null }> {
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
    return { cpu: await windows(child.pid!, p), rssBytes: rssBytes(child.pid!) }
  } finally {
    await fleet?.stop()
    child.kill('SIGKILL')
    await exited
  }
}

export const idleCpu: Scenario = {
  name: 'idle-cpu',
  description: 'Master CPU with 500 idle workers heartbeating every 5 s (median of several windows), vs a bare grpc-js server',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const p = PROFILES[ctx.size]
    const master = await masterIdle(p)
    ctx.progress(`idle-cpu master: ${master.cpu.map((x) => fmt(x, 2)).join(' ')} %`)
    const bare = await bareIdle(p)
    ctx.progress(`idle-cpu bare: ${bare.cpu.map((x) => fmt(x, 2)).join(' ')} %`)
    const m: Summary = summarize(master.cpu)
    const b: Summary = summarize(bare.cpu)
    const met = Number.isFinite(m.median) ? m.median < TARGET_PCT : null
    const ratio = m.median / b.median
    return {
      tables: [{
        title: `idle-cpu: ${p.workers} active workers, unary heartbeats every ${p.heartbeatMs / 1000} s (${p.windows} windows of ${p.windowMs / 1000} s; median (min–max), % of one core)`,
        columns: ['server', 'CPU', 'RSS', 'ratio to bare'],
        rows: [
          ['cloudai master', judged(fmtSummary(m, ' %', 2), met, `< ${TARGET_PCT} %`), `${fmt((master.rssBytes ?? NaN) / 2 ** 20)} MiB`, fmt(ratio, 1)],
          ['bare grpc-js server (counts heartbeats)', fmtSummary(b, ' %', 2), `${fmt((bare.rssBytes ?? NaN) / 2 ** 20)} MiB`, '1.0'],
        ],
      }],
      notes: [
        `${(p.workers * 1000) / p.heartbeatMs} heartbeats/s in both; CPU is user + system time of the server process, all threads, from /proc/<pid>/stat. Windows start one heartbeat interval after all workers are up.`,
      ],
      targets: [{ name: `master idle CPU at ${p.workers} workers`, target: `< ${TARGET_PCT} %`, value: Number.isFinite(m.median) ? m.median : null, met }],
      raw: { profile: p, master, bare },
    }
  },
}
