import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { createWriteStream, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, type WriteStream } from 'node:fs'
import { join } from 'node:path'
import { finished } from 'node:stream'
import type { Readable } from 'node:stream'
import type { Logger } from '../shared/log.js'
import { CloudaiError } from '../shared/errors.js'
import { TaskLog } from './task-log.js'

// Runs task processes. Each runs in its own process group (so a cancel or a timeout takes its
// children with it), in a fresh working directory, with only the environment it is given; its
// output goes to a log file and the last `maxLogBytes` are kept for the report. Nothing here knows
// about gRPC, the master or Docker: a Docker task is just a `docker run ...` argv.

export interface ProcessSpec {
  taskId: string
  /** Which attempt of the task this is; part of the working directory's name. */
  attempt: number
  /** Program and arguments; `shellArgv(command)` for a plain task. */
  argv: readonly [string, ...string[]]
  /** The task's own variables, added to PATH, HOME and CLOUDAI_TASK_ID. */
  env: Record<string, string>
  /** 0 = no timeout. */
  timeoutMs: number
  /** Told about every signal sent to the process group (a container runtime forwards it). */
  onSignal?: (signal: NodeJS.Signals) => void
}

export type FinalStatus = 'completed' | 'failed' | 'cancelled'

export interface TaskOutcome {
  taskId: string
  attempt: number
  status: FinalStatus
  /** null when the process was ended by a signal. */
  exitCode: number | null
  signal: NodeJS.Signals | null
  /** "exit code 3", "timed out after 2000ms", "cancelled", "killed by SIGSEGV". */
  reason: string
  /** Unix milliseconds. */
  startedAt: number
  finishedAt: number
  durationMs: number
  /** The last `maxLogBytes` of stdout and stderr, interleaved as they arrived, valid UTF-8. */
  logsTail: string
  logFile: string
  /** The attempt's output as numbered lines, ended (also saved in its task directory). */
  log: TaskLog
}

export interface RunningProcess {
  taskId: string
  attempt: number
  pid: number
  startedAt: number
  workDir: string
  logFile: string
}

export interface ExecutorOptions {
  /** Task directories go to `<dataDir>/tasks/<task_id>-<attempt>/`. */
  dataDir: string
  log: Logger
  /** Time between SIGTERM and SIGKILL of a cancelled or timed-out task. */
  killGraceMs: number
  /** Output kept in memory for the report (default 1 MiB). */
  maxLogBytes?: number
}

export const DEFAULT_MAX_LOG_BYTES = 1024 * 1024

/** `/bin/sh -c <command>`: how a plain task runs. */
export function shellArgv(command: string): [string, ...string[]] {
  return ['/bin/sh', '-c', command]
}

/** The last `limit` bytes of a stream, holding no more than that (plus one chunk) in memory. */
export class TailBuffer {
  private chunks: Buffer[] = []
  private size = 0

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk)
    this.size += chunk.length
    while (this.size > this.limit && this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limit) {
      this.size -= this.chunks.shift()!.length
    }
    if (this.size > this.limit) {
      const first = this.chunks[0]!
      const cut = this.size - this.limit
      this.chunks[0] = first.subarray(cut)
      this.size = this.limit
    }
  }

  /** The tail as text; a character cut in half at the start is dropped rather than mangled. */
  toString(): string {
    const buf = Buffer.concat(this.chunks, this.size)
    let start = 0
    while (start < buf.length && start < 3 && (buf[start]! & 0xc0) === 0x80) start++
    return buf.subarray(start).toString('utf8')
  }
}

type StopReason = 'cancelled' | 'timeout'

interface Running {
  spec: ProcessSpec
  child: ChildProcess
  pid: number
  startedAt: number
  startedMono: number
  workDir: string
  logFile: string
  tail: TailBuffer
  log: TaskLog
  out: WriteStream
  outBroken: boolean
  stopReason: StopReason | null
  exit: { code: number | null; signal: NodeJS.Signals | null } | null
  cancelTimeout: (() => void) | null
  killTimer: NodeJS.Timeout | null
  stdioTimer: NodeJS.Timeout | null
  /** Resolves once the outcome has been emitted. */
  done: Promise<void>
  resolveDone: () => void
}

/**
 * Runs and tracks task processes by task id (one process per task id at a time). Emits `finished`
 * once per started process, after its log file is flushed and before `close()` resolves; the
 * task is listed by `list()` until that moment and not after it.
 */
export class Executor extends EventEmitter<{ finished: [TaskOutcome] }> {
  private readonly running = new Map<string, Running>()
  private closed = false
  private readonly maxLogBytes: number

  constructor(private readonly opts: ExecutorOptions) {
    super()
    this.maxLogBytes = opts.maxLogBytes ?? DEFAULT_MAX_LOG_BYTES
  }

  has(taskId: string): boolean {
    return this.running.has(taskId)
  }

  get size(): number {
    return this.running.size
  }

  get(taskId: string): RunningProcess | undefined {
    const r = this.running.get(taskId)
    return r && view(r)
  }

  /** The output of the running attempt of `taskId`, as numbered lines; undefined when none runs. */
  logOf(taskId: string): TaskLog | undefined {
    return this.running.get(taskId)?.log
  }

  list(): RunningProcess[] {
    return [...this.running.values()].map(view)
  }

  taskDir(taskId: string, attempt: number): string {
    return join(this.opts.dataDir, 'tasks', `${taskId}-${attempt}`)
  }

  /**
   * Starts the process; resolves once the OS has spawned it, rejects (and emits nothing) when it
   * could not be spawned. Everything up to the spawn is synchronous, so the task is listed (and
   * cancellable) from the moment this is called.
   */
  start(spec: ProcessSpec): Promise<RunningProcess> {
    if (this.closed) return Promise.reject(new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'the worker is shutting down'))
    if (this.running.has(spec.taskId)) return Promise.reject(new CloudaiError('CLOUDAI_TASK_REFUSED', `task ${spec.taskId} is already running here`))
    const { log } = this.opts
    const dir = this.taskDir(spec.taskId, spec.attempt)
    const workDir = join(dir, 'work')
    const logFile = join(dir, 'output.log')
    let out: WriteStream
    let child: ChildProcess
    try {
      // A fresh directory: a rerun of the same attempt does not see the files of the last run.
      rmSync(dir, { recursive: true, force: true })
      mkdirSync(workDir, { recursive: true })
      out = createWriteStream(logFile, { fd: openSync(logFile, 'w') })
    } catch (err) {
      return Promise.reject(new CloudaiError('CLOUDAI_INTERNAL', `cannot prepare the task directory ${dir}: ${(err as Error).message}`))
    }
    const [file, ...args] = spec.argv
    try {
      child = spawn(file, args, {
        cwd: workDir,
        env: {
          PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
          HOME: process.env.HOME ?? workDir,
          ...spec.env,
          CLOUDAI_TASK_ID: spec.taskId,
        },
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    } catch (err) {
      out.destroy()
      return Promise.reject(new CloudaiError('CLOUDAI_INTERNAL', `cannot start the task: ${(err as Error).message}`))
    }

    let resolveDone!: () => void
    const done = new Promise<void>((resolve) => (resolveDone = resolve))
    const r: Running = {
      spec, child, pid: child.pid ?? -1, startedAt: Date.now(), startedMono: performance.now(), workDir, logFile,
      tail: new TailBuffer(this.maxLogBytes), log: new TaskLog(spec.attempt, this.maxLogBytes), out, outBroken: false, stopReason: null, exit: null,
      cancelTimeout: null, killTimer: null, stdioTimer: null, done, resolveDone,
    }
    this.running.set(spec.taskId, r)
    this.pipeOutput(r)

    return new Promise<RunningProcess>((resolve, reject) => {
      let spawned = false
      child.once('spawn', () => {
        spawned = true
        r.pid = child.pid!
        this.writeMarker(r)
        if (spec.timeoutMs > 0) r.cancelTimeout = longTimeout(() => this.stop(r, 'timeout'), spec.timeoutMs)
        log.info({ taskId: spec.taskId, attempt: spec.attempt, pid: r.pid, workDir, timeoutMs: spec.timeoutMs }, `Task ${spec.taskId} started (attempt ${spec.attempt}, pid ${r.pid})`)
        resolve(view(r))
      })
      child.on('error', (err) => {
        if (spawned) {
          log.warn({ taskId: spec.taskId, err: err.message }, `Task ${spec.taskId}: process error: ${err.message}`)
          return
        }
        // Never ran: nothing to report, the caller answers the AssignTask with the reason.
        this.running.delete(spec.taskId)
        if (r.killTimer) clearTimeout(r.killTimer)
        out.end()
        resolveDone()
        reject(new CloudaiError('CLOUDAI_TASK_REFUSED', `cannot start ${file}: ${err.message}`))
      })
      child.once('exit', (code, signal) => {
        if (!spawned) return
        r.exit = { code, signal }
        this.onExit(r)
      })
      child.once('close', () => {
        if (spawned) this.finish(r)
      })
    })
  }

  /** SIGTERM to the task's whole process group, SIGKILL after the grace time. False if not running. */
  cancel(taskId: string): boolean {
    const r = this.running.get(taskId)
    if (!r) return false
    this.stop(r, 'cancelled')
    return true
  }

  private stop(r: Running, why: StopReason): void {
    // The first cause wins; once the process has exited its outcome is decided.
    if (r.exit || r.stopReason) return
    r.stopReason = why
    if (why === 'timeout') this.opts.log.info({ taskId: r.spec.taskId, timeoutMs: r.spec.timeoutMs }, `Task ${r.spec.taskId} timed out after ${r.spec.timeoutMs}ms; stopping it`)
    if (r.pid > 0) this.signal(r, 'SIGTERM')
    this.armKill(r)
  }

  private armKill(r: Running): void {
    if (r.killTimer) return
    r.killTimer = setTimeout(() => {
      r.killTimer = null
      this.signal(r, 'SIGKILL')
    }, this.opts.killGraceMs)
  }

  /** Signals the process group; false when no process of the group is left. */
  private signal(r: Running, signal: NodeJS.Signals): boolean {
    if (r.pid <= 0) return false
    // The hook is for the main process's sake (a container it runs); once it has exited, no one needs it.
    if (!r.exit) {
      try {
        r.spec.onSignal?.(signal)
      } catch (err) {
        this.opts.log.warn({ taskId: r.spec.taskId, err: (err as Error).message }, 'signal hook failed')
      }
    }
    try {
      process.kill(-r.pid, signal)
      return true
    } catch {
      return false
    }
  }

  /**
   * The main process is gone. Whatever it left in its group (background jobs) gets SIGTERM and,
   * after the grace time, SIGKILL; output is collected until every holder of the pipes is gone.
   */
  private onExit(r: Running): void {
    r.cancelTimeout?.()
    r.cancelTimeout = null
    if (this.signal(r, 'SIGTERM')) this.armKill(r)
    // A holder of the pipes that escaped the group (setsid) must not keep the task open forever.
    r.stdioTimer = setTimeout(() => {
      r.stdioTimer = null
      r.child.stdout?.destroy()
      r.child.stderr?.destroy()
    }, this.opts.killGraceMs + 1000)
  }

  private pipeOutput(r: Running): void {
    const streams = [r.child.stdout, r.child.stderr].filter((s): s is Readable => s !== null)
    const resume = (): void => {
      for (const s of streams) s.resume()
    }
    r.out.on('error', (err) => {
      if (r.outBroken) return
      r.outBroken = true
      this.opts.log.warn({ taskId: r.spec.taskId, logFile: r.logFile, err: err.message }, `Task ${r.spec.taskId}: cannot write its log file (${err.message}); keeping only the in-memory tail`)
      resume()
    })
    for (const s of streams) {
      const name = s === r.child.stdout ? 'stdout' : 'stderr'
      s.on('data', (chunk: Buffer) => {
        r.tail.push(chunk)
        r.log.push(name, chunk)
        if (r.outBroken) return
        // Backpressure: a task that writes faster than the disk takes waits instead of filling memory.
        if (!r.out.write(chunk)) {
          for (const p of streams) p.pause()
          r.out.once('drain', resume)
        }
      })
      s.on('error', () => {})
    }
  }

  private finish(r: Running): void {
    r.cancelTimeout?.()
    if (r.stdioTimer) clearTimeout(r.stdioTimer)
    // Every pipe is closed: anything of the group still there does not write to us; end it now.
    this.signal(r, 'SIGKILL')
    if (r.killTimer) clearTimeout(r.killTimer)
    r.killTimer = null
    rmSync(markerFile(r.workDir), { force: true })
    const emit = (): void => {
      const outcome = this.outcome(r)
      const { log } = this.opts
      // Every pipe is closed: the log's last line is in; readers learn the end with the outcome.
      r.log.finish({ status: outcome.status, exitCode: outcome.exitCode })
      try {
        r.log.save(join(r.workDir, '..'))
      } catch (err) {
        log.warn({ taskId: r.spec.taskId, err: (err as Error).message }, `Task ${r.spec.taskId}: cannot save its numbered log lines (${(err as Error).message}); they are served from memory only`)
      }
      this.running.delete(r.spec.taskId)
      log.info(
        { taskId: outcome.taskId, attempt: outcome.attempt, status: outcome.status, exitCode: outcome.exitCode, signal: outcome.signal, durationMs: outcome.durationMs },
        `Task ${outcome.taskId} ${outcome.status} (${outcome.reason}) after ${outcome.durationMs}ms`,
      )
      try {
        this.emit('finished', outcome)
      } finally {
        r.resolveDone()
      }
    }
    r.out.end()
    finished(r.out, () => emit())
  }

  private outcome(r: Running): TaskOutcome {
    const finishedAt = Date.now()
    const { code, signal } = r.exit ?? { code: null, signal: null }
    let status: FinalStatus
    let reason: string
    if (r.stopReason === 'cancelled') {
      status = 'cancelled'
      reason = 'cancelled'
    } else if (r.stopReason === 'timeout') {
      status = 'failed'
      reason = `timed out after ${r.spec.timeoutMs}ms`
    } else if (code === 0) {
      status = 'completed'
      reason = 'exit code 0'
    } else {
      status = 'failed'
      reason = code !== null ? `exit code ${code}` : `killed by ${signal ?? 'a signal'}`
    }
    return {
      taskId: r.spec.taskId,
      attempt: r.spec.attempt,
      status,
      exitCode: code,
      signal,
      reason,
      startedAt: r.startedAt,
      finishedAt,
      durationMs: Math.round(performance.now() - r.startedMono),
      logsTail: r.tail.toString(),
      logFile: r.logFile,
      log: r.log,
    }
  }

  /**
   * Kills the process groups that an earlier run of the worker on this data dir left running (it
   * was killed with -9 or crashed: its detached tasks outlived it). A group is killed only when its
   * leader is still the very process that was started (same pid and start time, read from /proc),
   * so a recycled pid is never signalled. Their tasks are not reported: the master requeues a task
   * that the worker's heartbeats stop listing. Returns the task ids whose processes were killed.
   */
  reapOrphans(): string[] {
    const root = join(this.opts.dataDir, 'tasks')
    let dirs: string[]
    try {
      dirs = readdirSync(root)
    } catch {
      return []
    }
    const killed: string[] = []
    for (const name of dirs) {
      const file = markerFile(join(root, name, 'work'))
      let marker: { taskId: string; pid: number; start: string | null }
      try {
        marker = JSON.parse(readFileSync(file, 'utf8')) as typeof marker
      } catch {
        continue
      }
      if (this.running.get(marker.taskId)?.pid === marker.pid) continue
      const now = procStat(marker.pid)
      if (marker.start !== null && now && now.start === marker.start && now.pgrp === marker.pid && now.state !== 'Z') {
        try {
          process.kill(-marker.pid, 'SIGKILL')
          killed.push(marker.taskId)
          this.opts.log.warn({ taskId: marker.taskId, pid: marker.pid }, `Killed task ${marker.taskId} (pid ${marker.pid}), left running by an earlier run of this worker`)
        } catch {
          // Gone meanwhile.
        }
      }
      rmSync(file, { force: true })
    }
    return killed
  }

  /** Who the task's process is, for `reapOrphans` after a crash (the pid alone could be recycled). */
  private writeMarker(r: Running): void {
    try {
      writeFileSync(markerFile(r.workDir), JSON.stringify({ taskId: r.spec.taskId, pid: r.pid, start: procStat(r.pid)?.start ?? null }))
    } catch (err) {
      this.opts.log.warn({ taskId: r.spec.taskId, err: (err as Error).message }, `Task ${r.spec.taskId}: cannot write its process marker; it would outlive a crash of the worker`)
    }
  }

  /**
   * Stops accepting tasks, cancels every running one (each ends as cancelled and is emitted as
   * usual) and resolves when all have ended, their process groups included.
   */
  async close(): Promise<void> {
    this.closed = true
    const all = [...this.running.values()]
    for (const r of all) this.stop(r, 'cancelled')
    await Promise.all(all.map((r) => r.done))
  }
}

/** Beside the work dir, not in it: the task must not see or remove it. */
function markerFile(workDir: string): string {
  return join(workDir, '..', 'process.json')
}

/** State, process group and start time (clock ticks since boot) of a process, from Linux's /proc. */
function procStat(pid: number): { state: string; pgrp: number; start: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state: f[0] ?? '', pgrp: Number(f[2]), start: f[19] ?? '' }
  } catch {
    return null
  }
}

function view(r: Running): RunningProcess {
  return { taskId: r.spec.taskId, attempt: r.spec.attempt, pid: r.pid, startedAt: r.startedAt, workDir: r.workDir, logFile: r.logFile }
}

/** setTimeout for any delay: Node fires delays above 2^31-1 ms at once, so long ones are chained. */
function longTimeout(fn: () => void, ms: number): () => void {
  const MAX = 2_147_483_647
  const deadline = performance.now() + ms
  let timer: NodeJS.Timeout
  const arm = (): void => {
    const left = deadline - performance.now()
    if (left <= 0) return fn()
    timer = setTimeout(arm, Math.min(Math.ceil(left), MAX))
  }
  timer = setTimeout(arm, Math.min(ms, MAX))
  return () => clearTimeout(timer)
}
