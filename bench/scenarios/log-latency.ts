// Scenario "log-latency": how long a line of a task's output takes from the task to the operator's
// terminal, and whether every line gets there once across restarts. A real master and a real
// worker (child processes, as a user runs them); a task prints numbered lines, each with the
// wall-clock time it was printed (`date +%s%N`), every 20 ms; the real CLI follows it
// (`cloudai logs <id> -f`), and this process stamps each line as it reads it from the CLI's stdout.
// Latency = read time - print time (one machine, one clock). Then, checked by sequence (the task's
// line i is the worker's line i of its attempt): the same follow across a worker restart (SIGTERM,
// started again on its data dir: the task is stopped and runs again, as attempt 2) and across a
// master restart (SIGTERM, a new master on the same gRPC port and data dir; the CLI reaches it
// through a proxy that this process points at the new master's HTTP port). A line lost or seen
// twice, or the CLI exiting with anything but the task's exit code, is reported.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, freePort, requestJson } from '../fleet/master.js'
import { fmt, percentile, type Scenario, type ScenarioContext, type ScenarioResult, type Size } from '../lib/suite.js'

const LINES: Record<Size, number> = { tiny: 100, quick: 500, full: 1000 }
/** Issue 18's target: worker-to-CLI line latency p99. */
const P99_TARGET_MS = 250
const EXIT_CODE = 7
const WORKER_ID = 'log-bench'
const MASTER_FLAGS = ['--reconnect-interval', '300ms', '--heartbeat-timeout', '3s', '--shutdown-grace', '2s', '--log-level', 'warn']

interface Run {
  lines: number
  received: number
  inOrder: boolean
  exitCode: number | null
  latenciesMs: number[]
}

/** A master on the given gRPC port (so that the worker finds a restarted one) and a free HTTP port. */
class LogMaster {
  private constructor(readonly child: ChildProcess, readonly httpPort: number) {}

  get api(): string {
    return `http://127.0.0.1:${this.httpPort}`
  }

  /**
   * Up to five tries: the HTTP port is free when picked but another process on the machine (the
   * test suite runs files side by side) may bind it before the master does; the gRPC port, which
   * must stay the same across a restart, may also be taken for a moment by a client's ephemeral
   * port. Either is the master's "port ... is in use" at start; anything else fails at once.
   */
  static async start(grpcPort: number, dataDir: string): Promise<LogMaster> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await LogMaster.startOnce(grpcPort, dataDir)
      } catch (err) {
        if (attempt >= 5 || !/port (\d+ )?is in use|EADDRINUSE/.test(String((err as Error).message))) throw err
        await new Promise((resolve) => setTimeout(resolve, 200 * attempt))
      }
    }
  }

  private static async startOnce(grpcPort: number, dataDir: string): Promise<LogMaster> {
    const httpPort = await freePort()
    const child = spawn(process.execPath, [CLI, 'master', '--grpc-host', '127.0.0.1', '--grpc-port', String(grpcPort), '--http-host', '127.0.0.1', '--http-port', String(httpPort), '--advertise', `127.0.0.1:${grpcPort}`, '--data-dir', dataDir, ...MASTER_FLAGS], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)))
    // 'close', not the exit code: its last words on stderr (the port in use) may come after 'exit'.
    let closed = false
    child.once('close', () => (closed = true))
    const m = new LogMaster(child, httpPort)
    try {
      await until(async () => {
        if (closed) throw new Error(`master exited with ${child.exitCode ?? child.signalCode} at start: ${stderr}`)
        return (await m.request('/api/status').catch(() => null))?.status === 200
      }, 'the master answering', 30_000)
    } catch (err) {
      await m.stop()
      throw err
    }
    return m
  }

  request<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
    return requestJson<T>(this.api, path, init)
  }

  async workerActive(): Promise<boolean> {
    const { status, body } = await this.request<{ is_active?: boolean }>(`/api/workers/${WORKER_ID}`)
    return status === 200 && body.is_active === true
  }

  async submit(lines: number): Promise<string> {
    const command = `i=0; while [ $i -lt ${lines} ]; do i=$((i+1)); echo "$i $(date +%s%N)"; sleep 0.02; done; exit ${EXIT_CODE}`
    const { status, body } = await this.request<{ task_id: string }>('/api/tasks', { method: 'POST', body: { command, max_attempts: 3 } })
    if (status !== 201) throw new Error(`POST /api/tasks answered ${status}`)
    return body.task_id
  }

  stop(): Promise<void> {
    return stopChild(this.child)
  }
}

function startWorker(workerPort: number, grpcPort: number, dataDir: string): ChildProcess {
  return spawn(process.execPath, [CLI, 'worker', '--id', WORKER_ID, '--host', '127.0.0.1', '--port', String(workerPort), '--master', `127.0.0.1:${grpcPort}`, '--data-dir', dataDir, '--heartbeat-interval', '250ms', '--join-max-backoff', '500ms', '--log-level', 'warn'], { stdio: 'ignore' })
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`log-latency: timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** A TCP proxy with a fixed port in front of whichever master is current (the CLI's --api across a master restart). */
class Front {
  private readonly sockets = new Set<Socket>()
  private constructor(private readonly server: Server, public upstream: number) {}

  static async start(upstream: number): Promise<Front> {
    const server = createServer()
    const front = new Front(server, upstream)
    server.on('connection', (client) => {
      const up = connect(front.upstream, '127.0.0.1')
      front.sockets.add(client).add(up)
      const drop = (): void => {
        client.destroy()
        up.destroy()
        front.sockets.delete(client)
        front.sockets.delete(up)
      }
      client.on('error', drop).on('close', drop)
      up.on('error', drop).on('close', drop)
      client.pipe(up).pipe(client)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return front
  }

  get api(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** A follow that had not ended by its deadline: the task, as the master has it, is in the message. */
const followDeadlineMs = (lines: number): number => 120_000 + lines * 100

/**
 * `cloudai logs <id> -f` as a child: each stdout line to `onLine` with the time it was read;
 * `done` resolves with its exit code and stderr. `stop` kills it (a run that cannot go on, or
 * its deadline), so that a follow that never ends fails the run instead of hanging it.
 */
function follow(api: string, taskId: string, onLine: (text: string, readAt: number) => void): { done: Promise<{ exitCode: number | null; stderr: string }>; stop: () => void } {
  const cli = spawn(process.execPath, [CLI, 'logs', taskId, '-f', '--api', api], { stdio: ['ignore', 'pipe', 'pipe'] })
  let buf = ''
  let stderr = ''
  cli.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const now = Date.now()
    buf += d
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      onLine(line, now)
    }
  })
  cli.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const done = new Promise<{ exitCode: number | null; stderr: string }>((resolve) => cli.once('exit', (code) => resolve({ exitCode: code, stderr })))
  return { done, stop: () => void cli.kill('SIGKILL') }
}

/** Waits for the follow to end; past its deadline, stops it and throws with what the master says of the task. */
async function followEnd(f: ReturnType<typeof follow>, master: () => LogMaster, taskId: string, lines: number): Promise<{ exitCode: number | null; stderr: string }> {
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    f.stop()
  }, followDeadlineMs(lines))
  const done = await f.done
  clearTimeout(timer)
  if (!timedOut) return done
  const task = await master().request(`/api/tasks/${taskId}`).catch((err: Error) => ({ status: 0, body: err.message }))
  throw new Error(`log-latency: \`cloudai logs ${taskId} -f\` had not ended ${followDeadlineMs(lines)} ms after it started; the master answers for the task ${task.status}: ${JSON.stringify(task.body)}; the CLI's stderr: ${done.stderr.slice(-2000)}`)
}

async function latencyRun(master: LogMaster, lines: number): Promise<Run> {
  const taskId = await master.submit(lines)
  const latencies: number[] = []
  let received = 0
  /** When the first line reached us: lines printed before it waited for the CLI to start, not in the pipeline. */
  let firstAt: number | null = null
  let expected = 1
  let inOrder = true
  const { exitCode } = await followEnd(follow(master.api, taskId, (line, now) => {
    const [seq, ns] = line.split(' ')
    if (Number(seq) !== expected++) inOrder = false
    received++
    firstAt ??= now
    const printedAt = Number(BigInt(ns ?? '0') / 1_000_000n)
    if (printedAt >= firstAt) latencies.push(now - printedAt)
  }), () => master, taskId, lines)
  return { lines, received, inOrder, exitCode, latenciesMs: latencies }
}

/**
 * Per attempt of the task on this worker, oldest first, the lines its worker numbered (its saved
 * logs.json: `nextSeq - 1`): what the CLI must have printed, whichever attempt a restart cut short.
 */
function numberedByWorker(workerDir: string, taskId: string): number[] {
  const prefix = `${taskId}-`
  const attempts = readdirSync(join(workerDir, 'tasks')).filter((n) => n.startsWith(prefix)).map((n) => Number(n.slice(prefix.length))).filter(Number.isInteger).sort((a, b) => a - b)
  return attempts.map((a) => {
    try {
      return (JSON.parse(readFileSync(join(workerDir, 'tasks', `${prefix}${a}`, 'logs.json'), 'utf8')) as { nextSeq: number }).nextSeq - 1
    } catch {
      return 0 // none saved (the attempt never started)
    }
  })
}

/** One follow across a restart, checked by sequence. */
interface RestartRun {
  restart: 'worker' | 'master'
  /** Lines the task printed in its last attempt (all of them: it ran to its end). */
  lines: number
  /** Lines of every attempt the CLI printed. */
  received: number
  /** Per attempt, numbers from 1 to the highest one seen that never came. */
  lost: number
  /** Lines printed more than once (same attempt, same number). */
  duplicated: number
  outOfOrder: number
  attempts: number
  /** "connection to the master lost" notices of the CLI. */
  reconnections: number
  exitCode: number | null
  /** From the restart's start to the first line once the restarted process is up (ms). */
  resumeMs: number | null
}

/**
 * Follows a task with the CLI through `front`; once a third of its lines came, `restart` runs.
 * The task's lines restart at 1 when it runs again (a new attempt): a drop in the number is a new attempt.
 */
async function restartRun(kind: RestartRun['restart'], master: () => LogMaster, front: Front, lines: number, workerDir: string, restart: () => Promise<void>): Promise<RestartRun> {
  const taskId = await master().submit(lines)
  const attempts: number[][] = [[]]
  let restartAt: number | null = null
  let resumeMs: number | null = null
  let restarted: Promise<void> | null = null
  let restartOver = false
  const f = follow(front.api, taskId, (line, now) => {
    const n = Number(line.split(' ')[0])
    let cur = attempts.at(-1)!
    if (n === 1 && cur.length > 0) attempts.push((cur = []))
    cur.push(n)
    if (restartAt !== null && resumeMs === null && restartOver) resumeMs = now - restartAt
    if (restartAt === null && cur.length >= Math.floor(lines / 3)) {
      restartAt = now
      // Awaited below, once the CLI is done (a failure is the run's); a restart that failed
      // leaves the CLI nothing to reach, so it is stopped.
      restarted = restart().finally(() => (restartOver = true))
      restarted.catch(() => f.stop())
    }
  })
  let done: Awaited<ReturnType<typeof followEnd>>
  try {
    done = await followEnd(f, master, taskId, lines)
  } catch (err) {
    await (restarted as Promise<void> | null) // the restart's own failure, when it is the cause
    throw err
  }
  await restarted
  let lost = 0
  let duplicated = 0
  let outOfOrder = 0
  // The worker's own numbers, matched to the attempts the CLI showed from the last one back; an
  // attempt the worker numbered lines in and the CLI never showed is lost whole.
  const numbered = numberedByWorker(workerDir, taskId).filter((n) => n > 0)
  const unseen = Math.max(0, numbered.length - attempts.length)
  for (let i = 0; i < unseen; i++) lost += numbered[i]!
  attempts.forEach((seen, i) => {
    const top = Math.max(numbered[i + numbered.length - attempts.length] ?? 0, i === attempts.length - 1 ? lines : 0, ...seen)
    const count = new Map<number, number>()
    for (const n of seen) count.set(n, (count.get(n) ?? 0) + 1)
    for (let n = 1; n <= top; n++) if (!count.has(n)) lost++
    for (const c of count.values()) if (c > 1) duplicated += c - 1
    for (let k = 1; k < seen.length; k++) if (seen[k]! <= seen[k - 1]!) outOfOrder++
  })
  return {
    restart: kind, lines, received: attempts.reduce((n, a) => n + a.length, 0), lost, duplicated, outOfOrder, attempts: attempts.length,
    reconnections: (done.stderr.match(/connection to the master lost/g) ?? []).length, exitCode: done.exitCode, resumeMs,
  }
}

export const logLatency: Scenario = {
  name: 'log-latency',
  description: 'a task line from the worker to `cloudai logs -f` (real master, worker and CLI): p50/p99 latency; none lost or repeated, also across a worker restart and a master restart',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const masterDir = mkdtempSync(join(tmpdir(), 'cloudai-bench-master-'))
    const workerDir = mkdtempSync(join(tmpdir(), 'cloudai-bench-worker-'))
    const grpcPort = await freePort()
    const workerPort = await freePort()
    let master = await LogMaster.start(grpcPort, masterDir)
    let worker: ChildProcess | null = null
    let front: Front | null = null
    try {
      const reg = await master.request('/api/workers', { method: 'POST', body: { worker_id: WORKER_ID, worker_ip: `127.0.0.1:${workerPort}` } })
      if (reg.status !== 201) throw new Error(`POST /api/workers answered ${reg.status}`)
      worker = startWorker(workerPort, grpcPort, workerDir)
      await until(() => master.workerActive(), 'the worker active', 30_000)
      const runs: Run[] = []
      for (let i = 0; i < ctx.runs; i++) {
        ctx.progress(`log-latency: run ${i + 1}/${ctx.runs}, ${LINES[ctx.size]} lines`)
        runs.push(await latencyRun(master, LINES[ctx.size]))
      }

      front = await Front.start(master.httpPort)
      const restarts: RestartRun[] = []
      ctx.progress('log-latency: a follow across a worker restart')
      restarts.push(await restartRun('worker', () => master, front, LINES[ctx.size], workerDir, async () => {
        await stopChild(worker!)
        worker = startWorker(workerPort, grpcPort, workerDir)
      }))
      await until(() => master.workerActive(), 'the worker active again', 30_000)
      ctx.progress('log-latency: a follow across a master restart')
      const f = front
      restarts.push(await restartRun('master', () => master, f, LINES[ctx.size], workerDir, async () => {
        await master.stop()
        master = await LogMaster.start(grpcPort, masterDir)
        f.upstream = master.httpPort
      }))

      const all = runs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b)
      const p50 = percentile(all, 50)
      const p99 = percentile(all, 99)
      const lost = runs.reduce((n, r) => n + r.lines - r.received, 0)
      const ordered = runs.every((r) => r.inOrder && r.received === r.lines)
      const exits = runs.every((r) => r.exitCode === EXIT_CODE)
      const clean = (r: RestartRun): boolean => r.lost === 0 && r.duplicated === 0 && r.outOfOrder === 0 && r.exitCode === EXIT_CODE
      const byKind = (k: RestartRun['restart']): RestartRun => restarts.find((r) => r.restart === k)!
      return {
        tables: [
          {
            title: 'log-latency: a task\'s line, worker to `cloudai logs -f` (ms)',
            columns: ['lines', 'p50', 'p99', `p99 target ≤ ${P99_TARGET_MS}`, 'max', 'lost', 'all once, in order', 'CLI exit = task exit'],
            rows: [[String(all.length), fmt(p50), fmt(p99), p99 !== null && p99 <= P99_TARGET_MS ? 'met' : 'MISSED', fmt(all.at(-1)), String(lost), ordered ? 'yes' : 'NO', exits ? 'yes' : 'NO']],
          },
          {
            title: 'log-latency: `cloudai logs -f` across a restart, checked by sequence',
            columns: ['restart', 'lines (last attempt)', 'printed by the CLI', 'attempts', 'lost', 'duplicated', 'out of order', 'CLI reconnections', 'first line once restarted (ms from the restart\'s start)', 'CLI exit = task exit'],
            rows: restarts.map((r) => [r.restart, String(r.lines), String(r.received), String(r.attempts), String(r.lost), String(r.duplicated), String(r.outOfOrder), String(r.reconnections), fmt(r.resumeMs), r.exitCode === EXIT_CODE ? 'yes' : `NO (${r.exitCode})`]),
          },
        ],
        notes: [
          'Lines printed before the first one reached the CLI (while the CLI process started and connected) are counted for loss and order, not for latency.',
          'Includes the fork of `date` in the task and the CLI\'s stdout pipe; the machine is shared, so absolute figures are noisy.',
          'Worker restart: SIGTERM once a third of the lines came, then the worker starts again on its data dir; its shutdown stops the task, which runs again there (attempt 2, its lines from 1 again). Lost counts, per attempt, the line numbers the worker gave (its saved logs.json) that the CLI never printed.',
          'Master restart: SIGTERM once a third of the lines came, then a new master on the same gRPC port and data dir (another HTTP port, behind a proxy the CLI talks to); the task runs on through it. The first-line figure includes the master\'s stop and start and the CLI\'s backoff (250 ms doubling).',
        ],
        targets: [
          { name: 'log line latency p99 (ms)', target: `≤ ${P99_TARGET_MS}`, value: p99, met: p99 === null ? null : p99 <= P99_TARGET_MS },
          { name: 'lines lost or out of order', target: '0', value: lost, met: ordered },
          { name: 'lines lost or duplicated across a worker restart', target: '0', value: byKind('worker').lost + byKind('worker').duplicated, met: clean(byKind('worker')) },
          { name: 'lines lost or duplicated across a master restart', target: '0', value: byKind('master').lost + byKind('master').duplicated, met: clean(byKind('master')) },
        ],
        raw: { runs: runs.map((r) => ({ ...r, latenciesMs: undefined, p99: percentile([...r.latenciesMs].sort((a, b) => a - b), 99) })), restarts },
      }
    } finally {
      await front?.close()
      if (worker) await stopChild(worker)
      await master.stop()
      rmSync(workerDir, { recursive: true, force: true })
      rmSync(masterDir, { recursive: true, force: true })
    }
  },
}
