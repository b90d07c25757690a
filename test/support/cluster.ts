import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import { tryLock } from '../../src/shared/data-dir-lock.js'
import { checkAnswersOf } from './contract.js'
import type { NetnsEnd } from './netns.js'

// Real processes for integration tests: the CLI exactly as a user runs it, JSON log lines read
// from stdout, ports chosen by the OS, temp dirs removed afterwards.

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = join(ROOT, 'bin', 'cloudai.js')

/** What a child process inherits of this one's environment; the rest (any CLOUDAI_* set in the shell) stays out. */
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'] as const

/** A child's environment: the allow-list above and what the test itself sets. */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const k of INHERITED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]
  return { ...env, ...extra }
}

let scratch: string | null = null

/** The working directory of child processes: a temp dir of this test file's, removed when it exits. */
export function childCwd(): string {
  if (scratch === null) {
    const dir = mkdtempSync(join(tmpdir(), 'cloudai-cwd-'))
    scratch = dir
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  }
  return scratch
}

export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

export class Proc {
  readonly child: ChildProcess
  readonly lines: LogLine[] = []
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stderr = ''
  private waiters: { pred: (l: LogLine) => boolean; from: number; resolve: (l: LogLine) => void }[] = []

  /**
   * `opts.netns`: run it inside that network namespace (`ip netns exec <name>`, which execs the CLI
   * in place: the child's pid is the CLI's own). Only namespaces of test/support/netns.ts, which
   * also checks that `ip` is on the PATH children get. `opts.nodeArgs`: flags for node itself, before the CLI.
   */
  constructor(readonly name: string, args: string[], env: NodeJS.ProcessEnv = {}, opts: { netns?: string; nodeArgs?: string[] } = {}) {
    const argv = [process.execPath, ...(opts.nodeArgs ?? []), CLI, ...args]
    const [cmd, ...rest] = opts.netns === undefined ? argv : ['ip', 'netns', 'exec', opts.netns, ...argv]
    this.child = spawn(cmd!, rest, { cwd: childCwd(), env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
    let buf = ''
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const raw = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        let line: LogLine
        try {
          line = JSON.parse(raw) as LogLine
        } catch {
          line = { level: 30, msg: raw, raw: true }
        }
        this.lines.push(line)
        if (process.env.CLOUDAI_TEST_ECHO) process.stderr.write(`[${this.name}] ${raw}\n`)
        const idx = this.lines.length - 1
        this.waiters = this.waiters.filter((w) => {
          if (idx >= w.from && w.pred(line)) {
            w.resolve(line)
            return false
          }
          return true
        })
      }
    })
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk
    })
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })))
  }

  /** Index to wait from, so a wait only matches lines logged after this point. */
  mark(): number {
    return this.lines.length
  }

  waitForLog(pred: (l: LogLine) => boolean, what: string, opts: { from?: number; timeoutMs?: number } = {}): Promise<LogLine> {
    const from = opts.from ?? 0
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i]!)) return Promise.resolve(this.lines[i]!)
    const timeoutMs = opts.timeoutMs ?? 20_000
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done)
        reject(new Error(`${this.name}: no log line "${what}" within ${timeoutMs}ms; last lines:\n${this.lines.slice(-15).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${this.stderr.slice(-2000)}`))
      }, timeoutMs)
      const done = (l: LogLine): void => {
        clearTimeout(timer)
        resolve(l)
      }
      this.waiters.push({ pred, from, resolve: done })
      this.exited.then(({ code, signal }) => {
        if (this.waiters.some((w) => w.resolve === done)) {
          clearTimeout(timer)
          this.waiters = this.waiters.filter((w) => w.resolve !== done)
          reject(new Error(`${this.name} exited (code ${code}, signal ${signal}) before logging "${what}"; stderr: ${this.stderr.slice(-2000)}`))
        }
      }, reject)
    })
  }

  has(pred: (l: LogLine) => boolean, from = 0): boolean {
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i]!)) return true
    return false
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal)
    return this.exited
  }
}

export const msgIs = (text: string) => (l: LogLine): boolean => l.msg === text
export const msgHas = (text: string) => (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.includes(text)

export function tempDir(t: TestContext, prefix = 'cloudai-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  // Hooks run in the order they were added: a process started after this dir was made may still be
  // writing into it (a worker's outbox) when it is removed, which fails with ENOTEMPTY. Whatever it
  // wrote meanwhile goes when this test process exits, after every hook has stopped its processes.
  t.after(() => {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 })
    } catch {
      process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
    }
  })
  return dir
}

/** Ports below the kernel's ephemeral range (ip_local_port_range, 32768-60999 here), in blocks. */
export const PORT_BLOCKS = { first: 10_000, size: 100, count: 100 } as const
const PORT_BLOCK_DIR = join(tmpdir(), 'cloudai-test-port-blocks')

/** This test process's block: its first port, the next one to hand out, and the locked file that makes it ours. */
let portBlock: { first: number; next: number; fd: number } | null = null

/**
 * Claims a block of ports for this test process (each test file runs in a process of its own),
 * under an OS lock on a file per block: no other test file can pick a port of it while this one
 * runs, and the kernel lets go of the lock when the process ends, kill -9 included, so no block
 * stays taken by a run that crashed. The lock is the data directory's own (data-dir-lock.ts:
 * F_OFD_SETLK), whose open-file-description locks also conflict within a process.
 */
function claimPortBlock(): { first: number; next: number; fd: number } {
  mkdirSync(PORT_BLOCK_DIR, { recursive: true })
  for (let i = 0; i < PORT_BLOCKS.count; i++) {
    // The lock files stay: removing one would let a process holding the old file and one creating a new one both own the block.
    const fd = openSync(join(PORT_BLOCK_DIR, `block-${i}`), 'a')
    if (tryLock(fd)) {
      const first = PORT_BLOCKS.first + i * PORT_BLOCKS.size
      return { first, next: first, fd }
    }
    closeSync(fd)
  }
  throw new Error(`all ${PORT_BLOCKS.count} test port blocks are taken (${PORT_BLOCK_DIR})`)
}

/**
 * A port free right now, for a worker that must be registered before it starts. Picked below the
 * kernel's ephemeral range: a port from bind(0) could be handed to another process's bind(0) or
 * outgoing connection before the worker binds it (tests run several files at a time, and masters
 * dial), and the worker would fail with EADDRINUSE. Below the range only another explicit pick can
 * take it, and each test file picks from a block of its own (claimPortBlock), so that is only
 * something outside the suite. (20000 and up is where the bench registers addresses of its load
 * generators, which a master may dial.)
 */
export async function reservePort(): Promise<number> {
  portBlock ??= claimPortBlock()
  const block = portBlock
  while (block.next < block.first + PORT_BLOCKS.size) {
    const port = block.next++
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer()
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error(`this test file used up its block of ports ${block.first}-${block.first + PORT_BLOCKS.size - 1}`)
}

export interface MasterHandle {
  proc: Proc
  grpcPort: number
  httpPort: number
  api: string
}

// A leader that cannot renew its lease for --lease-timeout stops acting (issue 19): a minute, so
// that the store outages tests make (up to 30 s) do not depose the one master they run; the
// failover tests give their masters short leases of their own (a flag given twice is its last value).
// A 3 s dial timeout: the dial that finds a worker must not time out on a machine busy with the
// other test files (at 1 s one did, the worker joined anyway, and a test waiting for the dial's own
// success line waited in vain). No test here waits for a dial to time out: the addresses that must
// fail refuse at once (127.0.0.2 and up, a closed port, a cut link).
export const FAST_MASTER_FLAGS = ['--reconnect-interval', '300ms', '--dial-timeout', '3s', '--heartbeat-timeout', '1500ms', '--shutdown-grace', '2s', '--lease-renew', '1s', '--lease-timeout', '1m']

/**
 * A master on OS-chosen ports, on 127.0.0.1; with `netns` (a namespace of test/support/netns.ts),
 * inside it on its address: gRPC, and so what it advertises, and the HTTP API. `api` is then that
 * address, which only a process inside one of the pair's namespaces can reach: call it with
 * nsFetch, never from this process (here it would go to this machine's default route).
 */
export async function startMaster(t: TestContext, opts: { dataDir: string; grpcPort?: number; args?: string[]; name?: string; env?: NodeJS.ProcessEnv; netns?: NetnsEnd; nodeArgs?: string[] }): Promise<MasterHandle> {
  const host = opts.netns?.ip ?? '127.0.0.1'
  const proc = new Proc(opts.name ?? 'master', [
    'master', '--grpc-host', host, '--grpc-port', String(opts.grpcPort ?? 0), '--http-host', host, '--http-port', '0',
    '--data-dir', opts.dataDir, '--log-level', 'debug', ...(opts.args ?? FAST_MASTER_FLAGS),
  ], opts.env, { netns: opts.netns?.name, nodeArgs: opts.nodeArgs })
  t.after(() => proc.kill('SIGKILL'))
  const grpcLine = await proc.waitForLog((l) => l.step === 6, 'gRPC server listening')
  const httpLine = await proc.waitForLog((l) => l.step === 7, 'HTTP API listening')
  const httpPort = httpLine.httpPort as number
  // Every answer a test gets from a real master it started is checked against the OpenAPI document.
  checkAnswersOf(`http://${host}:${httpPort}`)
  return { proc, grpcPort: grpcLine.grpcPort as number, httpPort, api: `http://${host}:${httpPort}` }
}

/**
 * A worker on 127.0.0.1:`port`; with `netns`, inside that namespace on its address (which it
 * advertises). `token`: the worker's token, handed over the way the README advises
 * (CLOUDAI_WORKER_TOKEN), so that it is not in argv. Without one the worker runs tokenless
 * (loopback only, as the quick start).
 */
export async function startWorker(t: TestContext, id: string, port: number, opts: { master?: string; args?: string[]; dataDir?: string; killGrace?: string; token?: string; env?: NodeJS.ProcessEnv; name?: string; netns?: NetnsEnd } = {}): Promise<Proc> {
  const proc = new Proc(opts.name ?? id, [
    'worker', '--id', id, '--host', opts.netns?.ip ?? '127.0.0.1', '--port', String(port), '--heartbeat-interval', '250ms', '--join-max-backoff', '500ms', '--log-level', 'debug',
    '--data-dir', opts.dataDir ?? tempDir(t, `cloudai-${id}-`), '--kill-grace', opts.killGrace ?? '1s',
    ...(opts.master ? ['--master', opts.master] : []), ...(opts.args ?? []),
  ], { ...(opts.token ? { CLOUDAI_WORKER_TOKEN: opts.token } : {}), ...opts.env }, { netns: opts.netns?.name })
  t.after(() => proc.kill('SIGKILL'))
  await proc.waitForLog(msgHas('listening on'), 'worker listening')
  return proc
}

export async function api<T = any>(base: string, path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(base + path, {
    method: init.method ?? 'GET',
    ...(init.body !== undefined ? { body: JSON.stringify(init.body), headers: { 'content-type': 'application/json' } } : {}),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T }
}

/** POST /api/workers; asserts it created the worker and returns its token (shown only in this answer). */
export async function registerWorker(base: string, id: string, address: string): Promise<string> {
  const res = await api<{ token?: string }>(base, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: address } })
  if (res.status !== 201 || typeof res.body.token !== 'string') throw new Error(`registering ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.token
}

/** Runs the CLI to completion (operator commands). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: childCwd(), env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** Re-checks a condition that has no event of its own (a file appearing, a pid gone) until a deadline. */
export async function waitUntil<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** The master's log line for a task reaching a final state. */
export const taskFinished = (id: string) => (l: LogLine): boolean => l.taskId === id && /^Task \S+ (completed|failed|cancelled) on worker/.test(l.msg)
