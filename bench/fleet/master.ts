// The master under test: the real `cloudai master` process, spawned as a user runs it, on ports the
// OS chose, in a temp data dir. Its CPU and RSS come from /proc/<pid>; its counts from the HTTP API.
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

/** The package root; this file runs compiled from dist/bench/fleet/. */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = join(ROOT, 'bin', 'cloudai.js')

/** A port the OS says is free right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

class PortTakenError extends Error {}

/**
 * CPU time (user + system, all threads) of a process, in seconds; Linux only (null elsewhere).
 * From each thread's schedstat (nanoseconds on a CPU) where the kernel keeps it: /proc/<pid>/stat
 * counts in 10 ms ticks, which over a window of a few seconds at a few percent of a core is an
 * error of 10 to 20 %. A thread that ended within the window drops out of the sum; the processes
 * measured here keep theirs.
 */
export function cpuSeconds(pid: number): number | null {
  try {
    let ns = 0
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      } catch {
        // The thread ended between the listing and the read.
      }
    }
    if (Number.isFinite(ns) && ns > 0) return ns / 1e9
  } catch {
    // No /proc/<pid>/task: fall back to the ticks below.
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name (0-based 11, 12).
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return null
  }
}

/** Resident set size in bytes (null when /proc is not there). */
export function rssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : null
  } catch {
    return null
  }
}

/** CPU use of a process over a phase: call `stop()` at its end; percent of one core. */
export function cpuMeter(pid: number): { stop(): number | null } {
  const c0 = cpuSeconds(pid)
  const t0 = performance.now()
  return {
    stop() {
      const c1 = cpuSeconds(pid)
      const wall = (performance.now() - t0) / 1000
      if (c0 === null || c1 === null || wall <= 0) return null
      return ((c1 - c0) / wall) * 100
    },
  }
}

/** One JSON request to a master's API (`api`: http://host:port), its status and parsed body. */
export async function requestJson<T>(api: string, path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(api + path, {
    method: init.method ?? 'GET',
    ...(init.body !== undefined ? { body: JSON.stringify(init.body), headers: { 'content-type': 'application/json' } } : {}),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T }
}

export interface StatusCounts {
  workers: number
  active: number
  inactive: number
}

export interface MasterStartOptions {
  /** Flags for node itself (e.g. --cpu-prof, which NODE_OPTIONS does not take). */
  nodeArgs?: string[]
  /** Start on this store (the caller prepares and removes it); otherwise a fresh temp dir. */
  dataDir?: string
  /** The master's logs at info level, appended to this file (otherwise warn, not kept). */
  logFile?: string
}

export class MasterUnderTest {
  stderr = ''
  private constructor(
    readonly child: ChildProcess,
    readonly grpcPort: number,
    readonly httpPort: number,
    private readonly dataDir: string,
    /** The data dir is ours to remove at stop (not one the caller prepared and reuses). */
    private readonly ownsDataDir: boolean,
  ) {}

  get pid(): number {
    return this.child.pid!
  }

  get api(): string {
    return `http://127.0.0.1:${this.httpPort}`
  }

  /** The address workers call back on. */
  get grpcAddress(): string {
    return `127.0.0.1:${this.grpcPort}`
  }

  /**
   * Starts a master with `--log-level warn`. At that level the start-up lines (steps 6 and 7) that
   * carry the chosen ports are not printed, so the ports are chosen here (free right now) and the
   * API is polled until it answers. With `dataDir`, the master starts on that store (and the
   * caller removes it); otherwise on a fresh temp dir removed at stop.
   */
  static async start(args: string[], opts: MasterStartOptions = {}): Promise<MasterUnderTest> {
    // A port free when chosen can be taken before the master binds it (a fleet starting beside it
    // binds hundreds): the master then exits at start saying so, and gets other ports.
    for (let attempt = 1; ; attempt++) {
      try {
        return await MasterUnderTest.startOnce(args, opts)
      } catch (err) {
        if (attempt >= 5 || !(err instanceof PortTakenError)) throw err
      }
    }
  }

  private static async startOnce(args: string[], opts: MasterStartOptions): Promise<MasterUnderTest> {
    const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'cloudai-bench-'))
    const grpcPort = await freePort()
    const httpPort = await freePort()
    const logFd = opts.logFile ? openSync(opts.logFile, 'a') : null
    const child = spawn(process.execPath, [
      // e.g. --cpu-prof, which NODE_OPTIONS does not take.
      ...(opts.nodeArgs ?? []), CLI, 'master', '--grpc-host', '127.0.0.1', '--grpc-port', String(grpcPort), '--http-host', '127.0.0.1', '--http-port', String(httpPort),
      '--advertise', `127.0.0.1:${grpcPort}`, '--data-dir', dataDir, '--log-level', opts.logFile ? 'info' : 'warn', ...args,
    ], { cwd: ROOT, stdio: ['ignore', logFd ?? 'ignore', 'pipe'] })
    // The child holds its own copy of the descriptor.
    if (logFd !== null) closeSync(logFd)
    const m = new MasterUnderTest(child, grpcPort, httpPort, dataDir, opts.dataDir === undefined)
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      m.stderr = (m.stderr + d).slice(-4000)
    })
    const deadline = Date.now() + 20_000
    for (;;) {
      if (child.exitCode !== null) {
        if (opts.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true })
        const message = `master exited with ${child.exitCode} at start: ${m.stderr}`
        throw /port (\d+ )?is in use|EADDRINUSE/.test(m.stderr) ? new PortTakenError(message) : new Error(message)
      }
      try {
        await m.status()
        return m
      } catch {
        if (Date.now() > deadline) {
          await m.stop()
          throw new Error(`master did not answer on ${m.api} within 20 s: ${m.stderr}`)
        }
        await sleep(50)
      }
    }
  }

  request<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
    return requestJson<T>(this.api, path, init)
  }

  /**
   * GET /api/workers, its body read to the last byte and not parsed: what a request costs the
   * master (and the wire), without the bench's own JSON.parse of a list of thousands of workers
   * counted in its latency (8 to 33 ms for the 2.6 MB list of 5,000, on a 2-core AMD EPYC).
   */
  async workerListLatency(): Promise<{ status: number; ms: number }> {
    const t0 = performance.now()
    const res = await fetch(`${this.api}/api/workers`, { signal: AbortSignal.timeout(10_000) })
    await res.arrayBuffer()
    return { status: res.status, ms: performance.now() - t0 }
  }

  /** Unlabelled samples of `names` from GET /metrics (the shared-memory counters, not logs). */
  async metrics(names: readonly string[]): Promise<Record<string, number>> {
    const res = await fetch(`${this.api}/metrics`, { signal: AbortSignal.timeout(10_000) })
    const out: Record<string, number> = {}
    for (const line of (await res.text()).split('\n')) {
      const [name, value] = line.split(' ')
      if (name && value !== undefined && names.includes(name)) out[name] = Number(value)
    }
    return out
  }

  async status(): Promise<StatusCounts> {
    const { status, body } = await this.request<StatusCounts>('/api/status')
    if (status !== 200) throw new Error(`GET /api/status answered ${status}`)
    return body
  }

  /** Registers workers through POST /api/workers, a few requests at a time. */
  async register(workers: { id: string; address: string }[], concurrency = 16): Promise<void> {
    let next = 0
    const one = async (): Promise<void> => {
      while (next < workers.length) {
        const w = workers[next++]!
        const { status, body } = await this.request('/api/workers', { method: 'POST', body: { worker_id: w.id, worker_ip: w.address } })
        if (status !== 201 && status !== 200) throw new Error(`POST /api/workers ${w.id} answered ${status}: ${JSON.stringify(body)}`)
      }
    }
    await Promise.all(Array.from({ length: concurrency }, one))
  }

  /** Polls /api/status until `pred` holds; returns the time it took (ms from the call). */
  async waitFor(pred: (s: StatusCounts) => boolean, what: string, timeoutMs: number, pollMs = 20): Promise<number> {
    const t0 = performance.now()
    for (;;) {
      const s = await this.status()
      if (pred(s)) return performance.now() - t0
      if (performance.now() - t0 > timeoutMs) throw new Error(`master did not reach "${what}" within ${timeoutMs} ms (last: ${JSON.stringify(s)})`)
      if (this.child.exitCode !== null) throw new Error(`master exited with ${this.child.exitCode}: ${this.stderr}`)
      await sleep(pollMs)
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r))
      this.child.kill('SIGTERM')
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 8000)
      await exited
      clearTimeout(timer)
    }
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true })
  }
}
