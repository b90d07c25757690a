import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ChaosCluster } from './cluster.js'
import type { Random } from './random.js'

// The steady stream of tasks: short ones, ones that sleep a few seconds, ones that exit non-zero,
// submitted one at a time through POST /api/tasks. Each command first appends a line to the runs
// file (`<task id> <marker> start <pid>`, the id from CLOUDAI_TASK_ID, which the worker sets), so
// the suite counts the runs that really started; the pid is the task's process group (the worker
// runs `/bin/sh -c` as a group leader), for the final clean-up. Lines are short appends
// (O_APPEND, under PIPE_BUF), so concurrent runs never interleave within a line.

export type TaskKind = 'short' | 'sleep' | 'fail'

/** The exit code of a `fail` task: a failure with it is the command's own. */
export const FAIL_EXIT = 7

export interface SubmittedTask {
  id: string
  kind: TaskKind
  submittedAt: number
  /** 201 (durable) or 202 (accepted while the store is down, not durable yet). */
  ack: 201 | 202
  /** The master start that acknowledged it (ChaosCluster.masterStarts). */
  masterStart: number
}

export interface RunLine {
  taskId: string
  pid: number
}

export class TaskStream {
  readonly acknowledged: SubmittedTask[] = []
  readonly refused: Record<string, number> = {}
  private running: Promise<void> | null = null
  private stopping = false
  private failure: unknown = null

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly rng: Random,
    private readonly runsFile: string,
    private readonly marker: string,
    private readonly intervalMs: number,
  ) {}

  command(kind: TaskKind, sleepS: number): string {
    const file = `'${this.runsFile.replace(/'/g, `'\\''`)}'`
    const start = `echo "$CLOUDAI_TASK_ID ${this.marker} start $$" >> ${file}`
    if (kind === 'short') return `${start}; echo short`
    if (kind === 'fail') return `${start}; echo failing >&2; exit ${FAIL_EXIT}`
    return `${start}; sleep ${sleepS}; echo "$CLOUDAI_TASK_ID ${this.marker} end $$" >> ${file}`
  }

  start(): void {
    // Kept and rethrown by stop(), so that a crash of the loop is the run's error, not an unhandled rejection.
    this.running = this.loop().catch((err: unknown) => {
      this.failure = err
    })
  }

  /** Stops submitting; rejects if the loop itself crashed. */
  async stop(): Promise<void> {
    this.stopping = true
    await this.running
    if (this.failure !== null) throw this.failure
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      const r = this.rng.next()
      const kind: TaskKind = r < 0.45 ? 'short' : r < 0.8 ? 'sleep' : 'fail'
      const sleepS = this.rng.int(1, 4)
      await this.submit(kind, sleepS)
      await sleep(this.intervalMs)
    }
  }

  private async submit(kind: TaskKind, sleepS: number): Promise<void> {
    if (!this.cluster.master) {
      this.count('master down')
      return
    }
    const submittedAt = Date.now()
    const masterStart = this.cluster.masterStarts
    try {
      const res = await this.cluster.request('POST', '/api/tasks', { command: this.command(kind, sleepS), name: `chaos-${kind}` })
      if ((res.status === 201 || res.status === 202) && typeof res.body?.task_id === 'string') {
        this.acknowledged.push({ id: res.body.task_id as string, kind, submittedAt, ack: res.status, masterStart })
      } else {
        this.count(`http ${res.status} ${res.body?.error?.code ?? ''}`.trim())
      }
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } }
      this.count(e.cause?.code ?? e.name)
    }
  }

  private count(why: string): void {
    this.refused[why] = (this.refused[why] ?? 0) + 1
  }
}

/** The runs file's start lines of this run's marker. */
export function readRuns(runsFile: string, marker: string): RunLine[] {
  let text = ''
  try {
    text = readFileSync(runsFile, 'utf8')
  } catch {
    return []
  }
  const out: RunLine[] = []
  for (const line of text.split('\n')) {
    const [taskId, m, what, pid] = line.split(' ')
    if (m === marker && what === 'start' && taskId) out.push({ taskId, pid: Number(pid) })
  }
  return out
}

/**
 * Kills the process group of every task run still alive (a duplicate run a dead worker left
 * behind, a task of a worker killed at the end). A pid is only taken for a task's if its
 * environment still names that task, so a recycled pid is never hit.
 */
export function killTaskGroups(runs: readonly RunLine[]): number {
  let killed = 0
  for (const r of runs) {
    if (!Number.isInteger(r.pid) || r.pid <= 1) continue
    let environ = ''
    try {
      environ = readFileSync(`/proc/${r.pid}/environ`, 'utf8')
    } catch {
      continue // gone
    }
    if (!environ.split('\0').includes(`CLOUDAI_TASK_ID=${r.taskId}`)) continue
    try {
      process.kill(-r.pid, 'SIGKILL')
      killed++
    } catch {
      // Gone meanwhile.
    }
  }
  return killed
}
