import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import { CloudaiError, isCloudaiError } from '../shared/errors.js'
import type { TaskEvents, TaskRecord, TaskStatus, TaskTransition } from '../shared/types.js'
import { utf8Tail } from '../shared/utf8-tail.js'
import { FINAL_TASK_STATUSES } from '../store/store.js'
import type { TaskInput } from './task-input.js'
import { compareSubmission, FinishOrder, SubmissionOrder } from './task-indexes.js'
import { DEFAULT_TASK_RETENTION, type TaskRetention } from './task-retention.js'

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

/** States a task ends in: written to the store before memory holds them (see `transition`). */
export const FINAL_STATES: ReadonlySet<TaskStatus> = new Set<TaskStatus>(['completed', 'failed', 'cancelled'])

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
   * 'failed', and only with `workerId` and `attempt` given (that placement's). Counts the run only
   * when its start was never confirmed (its AssignTask got no answer, yet it ran): otherwise it was
   * counted when it started.
   */
  resumes?: boolean
  /**
   * The master stopped the run itself (a drain): leaving 'running' this way takes back the run it
   * counted, so a task drained off a worker does not spend an attempt. The step is marked
   * (TaskTransition.refundedRun): should that run go on after all (its result lands, its worker is
   * given it back), the resume counts it again.
   */
  refundsRun?: boolean
}

export type TaskPatch = Partial<Pick<TaskRecord, 'workerId' | 'attempt' | 'assignedAt' | 'startedAt' | 'finishedAt' | 'exitCode' | 'logsTail' | 'logLines'>>

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

/**
 * Whether the run of the task's latest placement was confirmed started (counted in `attempts`): a
 * step after that placement's 'assigned' one says it ran. False before the first placement.
 */
export function placementStarted(t: Pick<TaskRecord, 'history'>): boolean {
  for (let i = t.history.length - 1; i >= 0; i--) {
    const h = t.history[i]!
    if (h.status === 'assigned') return false
    // The master stopped that run and took its count back (a drain): a resume of it counts it again, once.
    if (h.refundedRun === true) return false
    if (h.status === 'running' || h.status === 'completed' || h.status === 'failed') return true
  }
  return false
}

/** Every worker the task was ever placed on, once each, in order. */
function placedOn(t: TaskRecord): string[] {
  const out: string[] = []
  for (const h of t.history) if (h.status === 'assigned' && h.workerId !== null && !out.includes(h.workerId)) out.push(h.workerId)
  return out
}

/** What the task table needs of persistence: the store journal (src/store/journal.ts). */
export interface TaskPersistence {
  readonly healthy: boolean
  recordTask(task: TaskRecord): void
  /** True once everything recorded is in the store; false at once while the store is down. */
  sync(): Promise<boolean>
  /** @throws CLOUDAI_STORE_DEGRADED */
  writeTaskNow(task: TaskRecord): Promise<void>
  /** Journals a pruned task's removal from the store (retried like any change until it lands). */
  recordTaskRemoval(id: string): void
  /** True while a removal journalled by recordTaskRemoval is not in the store yet. */
  removalPending(id: string): boolean
}

const FINAL: ReadonlySet<TaskStatus> = new Set(FINAL_TASK_STATUSES)

/** Every id this master makes: `task-` and a UUID. */
export const TASK_ID_PREFIX = 'task-'
/** The shortest prefix `resolve` takes, past `task-` (git's shortest abbreviation too). */
export const TASK_PREFIX_MIN = 4
/** Ids an ambiguous prefix's refusal names. */
const AMBIGUOUS_SHOWN = 5
const isFinal = (s: TaskStatus): boolean => FINAL.has(s)

export interface SubmitOptions {
  /** While the store is down: keep the task in memory, not yet durable, instead of refusing it. */
  acceptWhileDegraded: boolean
}

/**
 * The task table: the master's one owner of task state. Every change goes through `transition`,
 * which checks that the move is allowed, applies it, emits `task-changed` and journals it; while
 * the store answers, it resolves only once the store holds the change, so a task is never sent to
 * a worker before its assignment would survive a crash. While the store is down, work goes on
 * from memory and the journal catches the store up later. A final state is the exception: it is
 * written to the store first and only then applied and announced, so nothing is ever told a task
 * finished that a crash could turn back into a running one. Changes to one task are serialised,
 * so two racing transitions see each other's result.
 */
export class TaskTable extends EventEmitter<TaskEvents> {
  private readonly tasks = new Map<string, TaskRecord>()
  private readonly onWorker = new Map<string, Set<string>>()
  /** Queued ids, so a drain looks at the queue and not at every task ever submitted. */
  private readonly queuedIds = new Set<string>()
  /**
   * The queued ids in queue order, kept between drains: a drain runs at every task that finishes,
   * and sorting the whole queue each time was 39 ms of main-thread CPU while 1,000 tasks were
   * placed (a profile of the bench's time-to-assign). Ids that left the queue are dropped as it is
   * read; a task that enters the queue clears it, to be sorted again at the next read.
   */
  private queuedOrder: string[] | null = null
  private readonly locks = new Map<string, Promise<unknown>>()
  /** Accepted while the store was down and not written yet. */
  private readonly undurable = new Set<string>()
  // Indexes kept by index() as tasks change, so that counts, lists and pruning never scan every
  // task: ids per status (counts are their sizes), submission order, finish order.
  private readonly byStatus: Record<TaskStatus, Set<string>> = {
    queued: this.queuedIds, assigned: new Set(), running: new Set(), completed: new Set(), failed: new Set(), cancelled: new Set(),
  }
  private readonly submissions = new SubmissionOrder((id) => this.tasks.get(id))
  private readonly finished = new FinishOrder()

  constructor(
    private readonly persistence: TaskPersistence,
    private readonly now: () => number = Date.now,
    private readonly retention: TaskRetention = DEFAULT_TASK_RETENTION,
  ) {
    super()
  }

  /**
   * Adds tasks from the store; a task memory already holds keeps memory's state (it can only have
   * moved on since: a store that opened late is loaded after work began), and one pruned while
   * the store was unreachable stays pruned (its removal is still journalled). Returns how many
   * were new.
   */
  load(records: Iterable<TaskRecord>): number {
    let added = 0
    const finished: { id: string; finishedAt: number }[] = []
    for (const stored of records) {
      if (this.tasks.has(stored.id) || this.persistence.removalPending(stored.id)) continue
      // A store written before --task-output-tail (or with a larger one) may hold a longer tail;
      // one written before placements had their own number has it in `attempts`.
      const t = this.boundOutput(typeof stored.attempt === 'number' ? stored : { ...stored, attempt: stored.attempts })
      this.tasks.set(t.id, t)
      this.index(t, null, 'loading')
      if (isFinal(t.status)) finished.push({ id: t.id, finishedAt: t.updatedAt })
      added++
    }
    // The orders are built once for the whole load, which may come after work began.
    if (added > 0) this.submissions.rebuild(this.tasks.values())
    this.finished.addAll(finished)
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

  /**
   * The task `idOrPrefix` names: its id, or (as git and docker take a commit or a container) the
   * one task whose id starts with it, `task-` may be left out. A prefix names at least
   * TASK_PREFIX_MIN characters past `task-`, so that `t` is not read as "the only task". Only an
   * id not found as typed costs a scan of the ids.
   */
  resolve(idOrPrefix: string): TaskRecord {
    const exact = this.tasks.get(idOrPrefix)
    if (exact) return exact
    const prefix = idOrPrefix.startsWith(TASK_ID_PREFIX) ? idOrPrefix : `${TASK_ID_PREFIX}${idOrPrefix}`
    if (prefix.length < TASK_ID_PREFIX.length + TASK_PREFIX_MIN) return this.require(idOrPrefix)
    const found: TaskRecord[] = []
    for (const [id, t] of this.tasks) {
      if (!id.startsWith(prefix)) continue
      found.push(t)
      if (found.length > AMBIGUOUS_SHOWN) break
    }
    if (found.length === 1) return found[0]!
    if (found.length === 0) return this.require(idOrPrefix)
    const shown = found.slice(0, AMBIGUOUS_SHOWN).map((t) => t.id)
    throw new CloudaiError('CLOUDAI_AMBIGUOUS_TASK_ID', `${JSON.stringify(idOrPrefix)} is the start of more than one task's id (${shown.join(', ')}${found.length > AMBIGUOUS_SHOWN ? ', ...' : ''}): give more of it`, { task_ids: shown })
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
    if (this.queuedOrder === null) {
      const sorted: TaskRecord[] = []
      for (const id of this.queuedIds) {
        const t = this.tasks.get(id)
        if (t) sorted.push(t)
      }
      sorted.sort(compareSubmission)
      this.queuedOrder = sorted.map((t) => t.id)
      return sorted
    }
    const order = this.queuedOrder
    const out: TaskRecord[] = []
    let kept = 0
    for (const id of order) {
      const t = this.queuedIds.has(id) ? this.tasks.get(id) : undefined
      if (t === undefined) continue
      order[kept++] = id
      out.push(t)
    }
    order.length = kept
    return out
  }

  // --- counts, lists and pruning, all from the indexes ----------------------------------------

  /** Tasks per status: the sizes of the status index, no pass over the tasks. */
  counts(): Record<TaskStatus, number> {
    const s = this.byStatus
    return { queued: s.queued.size, assigned: s.assigned.size, running: s.running.size, completed: s.completed.size, failed: s.failed.size, cancelled: s.cancelled.size }
  }

  /**
   * A page of the task list, newest submission first, optionally of one status. Costs what it
   * returns (plus the offset), not the number of tasks held: without a status it walks the
   * submission order from its newest end; with one it sorts that status's ids, or walks the
   * submission order when that status is so common that the walk is the shorter way.
   */
  list(query: { status?: TaskStatus; offset: number; limit: number }): { tasks: TaskRecord[]; total: number } {
    const { status, offset, limit } = query
    if (status === undefined) return { tasks: this.submissions.newest(offset, limit), total: this.tasks.size }
    const ids = this.byStatus[status]
    const wanted = offset + limit
    const sortCost = ids.size * Math.log2(ids.size + 2)
    const walkCost = ids.size === 0 ? 0 : (wanted * this.tasks.size) / ids.size
    if (walkCost < sortCost) return { tasks: this.submissions.newest(offset, limit, (t) => t.status === status), total: ids.size }
    const all: TaskRecord[] = []
    for (const id of ids) all.push(this.tasks.get(id)!)
    all.sort((a, b) => b.submittedAt - a.submittedAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
    return { tasks: all.slice(offset, wanted), total: ids.size }
  }

  /** Queued, assigned and running tasks, oldest submission first: bounded by the work in hand. */
  unfinished(): TaskRecord[] {
    const out: TaskRecord[] = []
    for (const s of ['queued', 'assigned', 'running'] as const) for (const id of this.byStatus[s]) out.push(this.tasks.get(id)!)
    return out.sort(compareSubmission)
  }

  /** Up to `n` finished tasks, the most recently finished first. */
  recentlyFinished(n: number): TaskRecord[] {
    return this.finished.newest(n).map((id) => this.tasks.get(id)!)
  }

  /**
   * Removes finished tasks that finished (on this table's clock) `retentionMs` ago or more, then the
   * oldest finished past `maxFinished`, from memory, and journals their removal from the store.
   * Looks only at the front of the finish order: the cost is what it removes. Never removes a task
   * that is not final. Emits `task-pruned` for each. Returns the ids removed.
   */
  prune(): string[] {
    const cutoff = this.now() - this.retention.retentionMs
    const removed: string[] = []
    for (let head = this.finished.oldest(); head !== null; head = this.finished.oldest()) {
      if (head.finishedAt > cutoff && this.finished.size <= this.retention.maxFinished) break
      this.finished.shift()
      const t = this.tasks.get(head.id)
      if (!t || !isFinal(t.status)) continue
      this.tasks.delete(t.id)
      this.byStatus[t.status].delete(t.id)
      this.submissions.removed()
      this.undurable.delete(t.id)
      this.persistence.recordTaskRemoval(t.id)
      removed.push(t.id)
      this.emit('task-pruned', t, placedOn(t))
    }
    return removed
  }

  /** The record with its output cut to the last `outputTailBytes` (the worker keeps the whole log). */
  private boundOutput<T extends { logsTail?: string }>(r: T): T {
    const tail = r.logsTail
    if (tail === undefined) return r
    const bounded = utf8Tail(tail, this.retention.outputTailBytes)
    return bounded === tail ? r : { ...r, logsTail: bounded }
  }

  // ---------------------------------------------------------------------------------------------

  /**
   * Persists a new queued task, then adds it. While the store is down the task is refused, or with
   * `acceptWhileDegraded` kept in memory and journalled (isDurable false until written).
   * @throws CLOUDAI_STORE_DEGRADED when it is not durable and not accepted
   */
  async submit(input: TaskInput, opts: SubmitOptions): Promise<TaskRecord> {
    const at = this.now()
    const task: TaskRecord = {
      id: `${TASK_ID_PREFIX}${randomUUID()}`,
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
      // Only an outage is ridden out in memory: a refusal the store will never take back (a
      // deposed master's stale epoch, a store that cannot work) would leave the task acknowledged
      // and never written.
      if (!opts.acceptWhileDegraded || !isCloudaiError(err) || err.code !== 'CLOUDAI_STORE_DEGRADED') throw err
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
   * Resolves once the store holds the change, or at once while the store is down; a final state
   * (FINAL_STATES) only once the store holds it.
   * @throws CLOUDAI_STORE_DEGRADED for a final state the store cannot take now (nothing changed)
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
      const refunded = guard.refundsRun === true && cur.status === 'running' && cur.attempts > 0
      const step: TaskTransition = { status: to, at, workerId: patch.workerId !== undefined ? patch.workerId : cur.workerId, reason }
      if (refunded) step.refundedRun = true
      const next: TaskRecord = {
        ...cur,
        ...this.boundOutput(patch),
        attempts: (guard.startsRun && cur.status === 'assigned') || (resumed && !placementStarted(cur)) ? cur.attempts + 1 : refunded ? cur.attempts - 1 : cur.attempts,
        status: to,
        reason: reason ?? (to === 'queued' ? cur.reason : null),
        updatedAt: at,
        history: [...cur.history, step],
      }
      if (FINAL_STATES.has(to)) return this.settle(next, cur)
      this.tasks.set(id, next)
      this.index(next, cur)
      this.persistence.recordTask(next)
      this.emit('task-changed', next, cur.status)
      if (this.persistence.healthy) await this.persistence.sync()
      return next
    })
  }

  /**
   * A final state: durable first, then in memory and announced. Written outside the journal, which
   * may still hold older states of the task: the store's version rule (taskVersion) ignores those
   * when they arrive after it. The task lock is held meanwhile, so nothing else moves the task.
   * @throws CLOUDAI_STORE_DEGRADED (memory unchanged; the journal then counts the store as down)
   */
  private async settle(next: TaskRecord, cur: TaskRecord): Promise<TaskRecord> {
    await this.persistence.writeTaskNow(next)
    this.undurable.delete(next.id)
    this.tasks.set(next.id, next)
    this.index(next, cur)
    this.emit('task-changed', next, cur.status)
    return next
  }

  /** Keeps every index in step with a change; `loading`: load() builds the orders itself, once. */
  private index(next: TaskRecord, prev: TaskRecord | null, loading?: 'loading'): void {
    if (prev) this.byStatus[prev.status].delete(prev.id)
    this.byStatus[next.status].add(next.id)
    // Into the queue, or moved in it (its place is its submission time): the order is made anew.
    if (next.status === 'queued' && (prev === null || prev.status !== 'queued' || prev.submittedAt !== next.submittedAt)) this.queuedOrder = null
    if (loading === undefined) {
      if (prev === null) this.submissions.add(next)
      // A final state is never left: a task enters the finish order once.
      if (isFinal(next.status) && (prev === null || !isFinal(prev.status))) this.finished.add(next.id, next.updatedAt)
    }
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
    // The caller handles run's rejection; the lock only waits for it to settle, then lets go.
    const tail: Promise<void> = run.catch(() => {}).then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id)
    })
    this.locks.set(id, tail)
    return run
  }
}
