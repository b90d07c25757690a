import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import { CloudaiError } from '../shared/errors.js'
import type { TaskEvents, TaskRecord, TaskStatus } from '../shared/types.js'
import type { TaskInput } from './task-input.js'

/** Which transitions exist: a task never moves backwards out of a final state. */
const ALLOWED: Record<TaskStatus, readonly TaskStatus[]> = {
  queued: ['assigned', 'cancelled', 'failed'],
  // A fast command may report completion before the AssignTask answer is processed.
  assigned: ['running', 'queued', 'completed', 'failed', 'cancelled'],
  running: ['queued', 'completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
}

/**
 * Out of 'queued' only with `resumes`: the queued copy of a task is withdrawn because the worker of
 * its latest placement came back still running that run, or with its result.
 */
const RESUMED: readonly TaskStatus[] = ['running', 'completed', 'failed']

export interface TransitionGuard {
  /** The task must be in one of these states... */
  from?: readonly TaskStatus[]
  /** ...on this worker... */
  workerId?: string | null
  /** ...at this placement (TaskRecord.attempt). */
  attempt?: number
  /**
   * The transition confirms that the placement's run started on its worker: leaving 'assigned'
   * this way counts one more run in `attempts` (once per placement).
   */
  startsRun?: boolean
  /**
   * The task, queued again, goes back to the run of its latest placement, which its worker still
   * had (a worker that came back): the only way from 'queued' to 'running', 'completed' or
   * 'failed', and only with `workerId` and `attempt` given (that placement's). Never counts a run:
   * it was counted when it started.
   */
  resumes?: boolean
}

export type TaskPatch = Partial<Pick<TaskRecord, 'workerId' | 'attempt' | 'assignedAt' | 'startedAt' | 'finishedAt' | 'exitCode' | 'logsTail'>>

/**
 * The worker of a task's latest placement (attempt number `attempt`): each placement is one
 * 'assigned' step of its history. Null before the first.
 */
export function latestPlacement(t: TaskRecord): string | null {
  for (let i = t.history.length - 1; i >= 0; i--) {
    const h = t.history[i]!
    if (h.status === 'assigned') return h.workerId
  }
  return null
}

/** What the task table needs of persistence: the store journal (src/store/journal.ts). */
export interface TaskPersistence {
  readonly healthy: boolean
  recordTask(task: TaskRecord): void
  /** True once everything recorded is in the store; false at once while the store is down. */
  sync(): Promise<boolean>
  /** @throws CLOUDAI_STORE_DEGRADED */
  writeTaskNow(task: TaskRecord): Promise<void>
}

export interface SubmitOptions {
  /** While the store is down: keep the task in memory, not yet durable, instead of refusing it. */
  acceptWhileDegraded: boolean
}

/**
 * The task table: the master's one owner of task state. Every change goes through `transition`,
 * which checks that the move is allowed, applies it, emits `task-changed` and journals it; while
 * the store answers, it resolves only once the store holds the change, so a task is never sent to
 * a worker before its assignment would survive a crash. While the store is down, work goes on
 * from memory and the journal catches the store up later. Changes to one task are serialised, so
 * two racing transitions see each other's result.
 */
export class TaskTable extends EventEmitter<TaskEvents> {
  private readonly tasks = new Map<string, TaskRecord>()
  private readonly onWorker = new Map<string, Set<string>>()
  /** Queued ids, so a drain looks at the queue and not at every task ever submitted. */
  private readonly queuedIds = new Set<string>()
  private readonly locks = new Map<string, Promise<unknown>>()
  /** Accepted while the store was down and not written yet. */
  private readonly undurable = new Set<string>()

  constructor(private readonly persistence: TaskPersistence, private readonly now: () => number = Date.now) {
    super()
  }

  /**
   * Adds tasks from the store; a task memory already holds keeps memory's state (it can only have
   * moved on since: a store that opened late is loaded after work began). Returns how many were new.
   */
  load(records: Iterable<TaskRecord>): number {
    let added = 0
    for (const stored of records) {
      if (this.tasks.has(stored.id)) continue
      // Written before placements had their own number: `attempts` was that number.
      const t = typeof stored.attempt === 'number' ? stored : { ...stored, attempt: stored.attempts }
      this.tasks.set(t.id, t)
      this.index(t, null)
      added++
    }
    return added
  }

  /** False for a task accepted while the store was down, until the store holds it. */
  isDurable(id: string): boolean {
    return !this.undurable.has(id)
  }

  /** The journal wrote these tasks. */
  markDurable(ids: readonly string[]): void {
    if (this.undurable.size === 0) return
    for (const id of ids) this.undurable.delete(id)
  }

  get size(): number {
    return this.tasks.size
  }

  get(id: string): TaskRecord | undefined {
    return this.tasks.get(id)
  }

  require(id: string): TaskRecord {
    const t = this.tasks.get(id)
    if (!t) throw new CloudaiError('CLOUDAI_UNKNOWN_TASK', `task ${id} does not exist`)
    return t
  }

  values(): IterableIterator<TaskRecord> {
    return this.tasks.values()
  }

  /** Tasks the master has placed on this worker (assigned or running). */
  /** How many tasks the table places on a worker (no allocation: the heartbeat path asks it). */
  onWorkerCount(workerId: string): number {
    return this.onWorker.get(workerId)?.size ?? 0
  }

  onWorkerTasks(workerId: string): TaskRecord[] {
    const ids = this.onWorker.get(workerId)
    if (!ids) return []
    return [...ids].map((id) => this.tasks.get(id)).filter((t): t is TaskRecord => t !== undefined)
  }

  /** Queued tasks, oldest submission first (a requeued task keeps its place). */
  queued(): TaskRecord[] {
    const out: TaskRecord[] = []
    for (const id of this.queuedIds) {
      const t = this.tasks.get(id)
      if (t) out.push(t)
    }
    return out.sort((a, b) => a.submittedAt - b.submittedAt || (a.id < b.id ? -1 : 1))
  }

  counts(): Record<TaskStatus, number> {
    const c: Record<TaskStatus, number> = { queued: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0 }
    for (const t of this.tasks.values()) c[t.status]++
    return c
  }

  /**
   * Persists a new queued task, then adds it. While the store is down the task is refused, or with
   * `acceptWhileDegraded` kept in memory and journalled (isDurable false until written).
   * @throws CLOUDAI_STORE_DEGRADED when it is not durable and not accepted
   */
  async submit(input: TaskInput, opts: SubmitOptions): Promise<TaskRecord> {
    const at = this.now()
    const task: TaskRecord = {
      id: `task-${randomUUID()}`,
      ...input,
      status: 'queued',
      workerId: null,
      attempts: 0,
      attempt: 0,
      submittedAt: at,
      assignedAt: null,
      startedAt: null,
      finishedAt: null,
      exitCode: null,
      reason: null,
      logsTail: '',
      updatedAt: at,
      history: [{ status: 'queued', at, workerId: null, reason: null }],
    }
    try {
      await this.persistence.writeTaskNow(task)
    } catch (err) {
      if (!opts.acceptWhileDegraded) throw err
      this.undurable.add(task.id)
      this.persistence.recordTask(task)
    }
    this.tasks.set(task.id, task)
    this.index(task, null)
    this.emit('task-changed', task, null)
    return task
  }

  /**
   * Moves a task to `to` if the guard holds (else returns null: someone else moved it first).
   * Resolves once the store holds the change, or at once while the store is down.
   */
  transition(id: string, to: TaskStatus, patch: TaskPatch, reason: string | null, guard: TransitionGuard = {}): Promise<TaskRecord | null> {
    return this.serialised(id, async () => {
      const cur = this.tasks.get(id)
      if (!cur) return null
      const resumed = cur.status === 'queued' && guard.resumes === true && RESUMED.includes(to) && guard.attempt !== undefined && typeof guard.workerId === 'string' && latestPlacement(cur) === guard.workerId
      if (!ALLOWED[cur.status].includes(to) && !resumed) return null
      if (guard.from && !guard.from.includes(cur.status)) return null
      // A queued task is on no worker: a resume names the worker it goes back to, in the patch.
      if (guard.workerId !== undefined && cur.workerId !== guard.workerId && !(resumed && patch.workerId === guard.workerId)) return null
      if (guard.attempt !== undefined && cur.attempt !== guard.attempt) return null
      const at = this.now()
      const next: TaskRecord = {
        ...cur,
        ...patch,
        attempts: guard.startsRun && cur.status === 'assigned' ? cur.attempts + 1 : cur.attempts,
        status: to,
        reason: reason ?? (to === 'queued' ? cur.reason : null),
        updatedAt: at,
        history: [...cur.history, { status: to, at, workerId: patch.workerId !== undefined ? patch.workerId : cur.workerId, reason }],
      }
      this.tasks.set(id, next)
      this.index(next, cur)
      this.persistence.recordTask(next)
      this.emit('task-changed', next, cur.status)
      if (this.persistence.healthy) await this.persistence.sync()
      return next
    })
  }

  private index(next: TaskRecord, prev: TaskRecord | null): void {
    if (next.status === 'queued') this.queuedIds.add(next.id)
    else this.queuedIds.delete(next.id)
    if (prev?.workerId) this.onWorker.get(prev.workerId)?.delete(prev.id)
    if (next.workerId && (next.status === 'assigned' || next.status === 'running')) {
      let set = this.onWorker.get(next.workerId)
      if (!set) this.onWorker.set(next.workerId, (set = new Set()))
      set.add(next.id)
    }
  }

  private serialised<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.catch(() => {})
    this.locks.set(id, tail)
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id)
    })
    return run
  }
}
