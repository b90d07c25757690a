import { EventEmitter } from 'node:events'
import type { Logger } from '../shared/log.js'
import { Backoff } from '../shared/backoff.js'
import { systemClock, type Clock, type TimerHandle } from '../shared/clock.js'
import { CloudaiError, isCloudaiError } from '../shared/errors.js'
import type { TaskRecord, WorkerRecord } from '../shared/types.js'
import type { Store, WorkerChanges } from './store.js'
import { MASTER_DEFAULTS } from '../config.js'

/** Workers per heartbeat write (see writeHeartbeats). */
const HEARTBEAT_WRITE_ROWS = 1000

type WorkerEvent = 'worker-registered' | 'worker-unregistered' | 'worker-active' | 'worker-inactive' | 'worker-changed' | 'worker-credential' | 'worker-scheduling'
const WORKER_EVENTS: readonly WorkerEvent[] = ['worker-registered', 'worker-unregistered', 'worker-active', 'worker-inactive', 'worker-changed', 'worker-credential', 'worker-scheduling']

/** The registry as the journal sees it: current state by id, its events, and the heartbeat batch. */
export interface JournalSource {
  get(id: string): WorkerRecord | undefined
  drainHeartbeats(): string[]
  on(event: WorkerEvent, listener: (w: WorkerRecord) => void): unknown
  off(event: WorkerEvent, listener: (w: WorkerRecord) => void): unknown
}

/** One change not yet persisted: a worker's state (null: unregistered) or a task's (null: pruned). */
type Entry = { kind: 'worker'; id: string; worker: WorkerRecord | null } | { kind: 'task'; id: string; task: TaskRecord | null }

export interface JournalStatus {
  healthy: boolean
  /** False until the store has been opened once (a master that started while it was down). */
  opened: boolean
  /** Changes waiting in the journal (after coalescing), heartbeat-only updates not counted. */
  backlog: number
  lastError: string | null
  /** Start of the current outage (epoch ms), null while healthy. */
  degradedSince: number | null
  /** Outages since start, and their total length in ms (the current one included). */
  outages: number
  outageMs: number
}

export interface JournalOptions {
  log: Logger
  /** Entries held before they are coalesced (the latest state per worker and per task wins). */
  limit: number
  /**
   * How often heartbeat-only changes (last heartbeat, usage, running tasks) are written, for the
   * whole fleet in one batch (--store-heartbeat-interval). State changes never wait for it.
   */
  heartbeatFlushMs?: number
  retryBaseMs?: number
  retryCapMs?: number
  clock?: Clock
  /**
   * Runs once after the store opened late (the master started while it was down): loads what it
   * holds into memory before the journal writes memory's changes over it.
   */
  onLateOpen?: () => Promise<void>
}

export interface JournalEvents {
  /** Ids of tasks whose state the store now holds (after a write that succeeded). */
  'tasks-written': [ids: string[]]
  /** The store answered again after an outage and holds everything journalled until then. */
  recovered: [outageMs: number]
  /**
   * The store refused a write as stale (CLOUDAI_STALE_EPOCH): another master took the lease. The
   * journal has stopped writing for good; `epoch` is the one it was fenced at, `current` the
   * stored one (null: none), `discarded` the changes it held and dropped.
   */
  fenced: [epoch: number, current: number | null, discarded: number]
}

/** What a fenced journal knows of its end (StoreJournal.fenced). */
export interface JournalFence {
  epoch: number
  current: number | null
  /** Changes dropped: those held when the store refused, and every one journalled since. */
  discarded: number
  error: CloudaiError
}

/**
 * The write-behind journal every store is used through. The in-memory registry and task table are
 * authoritative; the journal keeps the changes the store does not hold yet, in order, and writes
 * them in batches: one call per run of worker changes or task changes, so SQLite commits a batch
 * in one transaction and MongoDB takes it in one bulkWrite.
 *
 * While the store is down nothing waits for it: changes pile up here, and the journal retries with
 * backoff (a ping when it holds nothing). It is bounded by `limit`: when full it coalesces,
 * keeping only the latest state of each worker and task, so it never drops a change; past the
 * limit it holds at most two entries per worker and task it names. Heartbeat fields are not
 * journal entries: the workers whose heartbeats changed are written once per `heartbeatFlushMs`
 * (and at close), as the registry holds them then. Not with every write: under a task load the
 * journal writes many times a second, and each such write would carry every worker that beat
 * since the last one, which is one store row per heartbeat again. The store's last heartbeat of a
 * worker is therefore up to that interval old (it matters only once memory is gone: at the next
 * start, where every worker starts inactive anyway); a worker's state changes carry their own
 * copy of the record, heartbeat fields included, and are written at once.
 *
 * One refusal ends it: a write the store refuses as stale (CLOUDAI_STALE_EPOCH: the master was
 * fenced at an epoch another master has since taken over from) is never retried, since no retry
 * can succeed and every change it holds is now the new leader's to make. The journal then drops
 * what it holds and whatever is journalled later (counted and logged), answers sync() false and
 * writeTaskNow with that error, and emits 'fenced' once, for the master to step down. Every other
 * error is an outage, as before.
 */
export class StoreJournal extends EventEmitter<JournalEvents> {
  private entries: Entry[] = []
  /**
   * The batch a write has taken out of `entries` and the store has not confirmed yet: still
   * backlog. (Counted as 0, a retry under way during an outage showed an empty backlog.)
   */
  private writingBatch: { size: number; progress: { written: number } } | null = null
  /** Entries appended since start, and how many of the first of them the store holds: what sync() waits on. */
  private appended = 0
  private writtenUpTo = 0
  /** Settled (and replaced) each time writtenUpTo moves: sync() waits for its entries, not for a whole flush. */
  private progressed = signal()
  private coalesceAt: number
  private readonly heartbeats = new Set<string>()
  /** The heartbeat interval came round since the heartbeats were last written: the next flush writes them. */
  private heartbeatsDue = false
  /**
   * Task removals journalled and not yet written, by id, with their entry: a store that answers
   * late still holds these tasks, and loading them would bring back what was pruned meanwhile.
   */
  private readonly removals = new Map<string, Entry>()
  private readonly clock: Clock
  private readonly backoff: Backoff
  private heartbeatTimer: TimerHandle | null = null
  private retryTimer: TimerHandle | null = null
  private urgent: NodeJS.Immediate | null = null
  private flushing: Promise<void> | null = null
  /** The writeTaskNow calls of this tick, written together on the next. */
  private direct: { tasks: TaskRecord[]; written: Promise<boolean> } | null = null
  private opened = false
  /** The store opened late and what it holds is not in memory yet. */
  private loadPending = false
  private degradedSince: number | null = null
  private lastError: string | null = null
  private outages = 0
  private pastOutageMs = 0
  private started = false
  private closed = false
  private fence: JournalFence | null = null
  private readonly onWorker = (w: WorkerRecord): void => this.recordWorker(w.id)

  constructor(
    private readonly store: Store,
    private readonly source: JournalSource,
    private readonly opts: JournalOptions,
  ) {
    super()
    this.clock = opts.clock ?? systemClock
    this.backoff = new Backoff(opts.retryBaseMs ?? 250, opts.retryCapMs ?? 5000)
    this.coalesceAt = opts.limit
  }

  /**
   * Starts following the registry. `opened` false means the store could not be opened at start:
   * the journal counts as degraded and keeps trying to open it.
   */
  start(opened: boolean): void {
    if (this.started) return
    this.started = true
    this.opened = opened
    for (const ev of WORKER_EVENTS) this.source.on(ev, this.onWorker)
    this.heartbeatTimer = this.clock.setInterval(() => {
      for (const id of this.source.drainHeartbeats()) this.heartbeats.add(id)
      if (this.heartbeats.size === 0) return
      this.heartbeatsDue = true
      if (this.healthy) this.schedule()
    }, this.opts.heartbeatFlushMs ?? MASTER_DEFAULTS.storeHeartbeatIntervalMs)
    if (!opened) this.failed(new CloudaiError('CLOUDAI_STORE_UNAVAILABLE', `the ${this.store.kind} store could not be opened`))
  }

  get healthy(): boolean {
    return this.degradedSince === null
  }

  /** Null until the store refused a write as stale; then why, and how much was dropped. */
  get fenced(): Readonly<JournalFence> | null {
    return this.fence
  }

  /** Changes journalled and not yet in the store, a batch being written among them. */
  private get backlog(): number {
    const writing = this.writingBatch === null ? 0 : this.writingBatch.size - this.writingBatch.progress.written
    return this.entries.length + writing
  }

  /** Writes go on: healthy, and not fenced. */
  private get writing(): boolean {
    return this.degradedSince === null && this.fence === null
  }

  status(): JournalStatus {
    const now = this.clock.now()
    const current = this.degradedSince === null ? 0 : now - this.degradedSince
    // A fenced journal drops every change: not a store to call healthy, whatever it answers.
    return {
      healthy: this.healthy && this.fence === null,
      opened: this.opened,
      backlog: this.backlog,
      lastError: this.fence ? this.fence.error.message : this.lastError,
      degradedSince: this.degradedSince,
      outages: this.outages,
      outageMs: this.pastOutageMs + current,
    }
  }

  /** Journals the worker's state as the registry holds it now (its removal if it is gone). */
  recordWorker(id: string): void {
    const w = this.source.get(id)
    // The registry changes records in place: the entry must keep this moment's state.
    this.append({ kind: 'worker', id, worker: w ? structuredClone(w) : null })
  }

  /** Task records are never changed in place (each transition makes a new one): no copy needed. */
  recordTask(task: TaskRecord): void {
    this.removals.delete(task.id)
    this.append({ kind: 'task', id: task.id, task })
  }

  /**
   * Journals the removal of a finished task the task table pruned. It replaces any state of the
   * task still journalled (a task pruned before the store took its last state is never written).
   */
  recordTaskRemoval(id: string): void {
    if (this.closed) return
    if (this.fence) {
      // Dropped like every change after the fence; no removal is pending, none ever will be written.
      this.fence.discarded++
      return
    }
    const entry: Entry = { kind: 'task', id, task: null }
    this.removals.set(id, entry)
    this.append(entry)
  }

  /** True while the removal of this task is journalled and not yet in the store (one map lookup). */
  removalPending(id: string): boolean {
    return this.removals.has(id)
  }

  /**
   * Writes one task state at once, outside the journal: a submission is acknowledged only once the
   * store holds it (a task nobody else knows of yet has nothing to be ordered after), and a final
   * state is announced only once it does (older states of it still journalled are ignored by the
   * store's version rule when they arrive later). Calls in one tick share one write (one SQLite
   * transaction, one fsync), as journalled changes do.
   * @throws CLOUDAI_STORE_DEGRADED when the store is down or fails now (it then counts as down)
   */
  async writeTaskNow(task: TaskRecord): Promise<void> {
    if (this.fence) throw this.fence.error
    if (!this.healthy) throw this.degradedError()
    let batch = this.direct
    if (!batch) {
      const tasks: TaskRecord[] = []
      batch = this.direct = { tasks, written: new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.writeDirect(tasks)) }
    }
    batch.tasks.push(task)
    if (!(await batch.written)) throw this.writeError()
  }

  /** The write of one tick's writeTaskNow calls; false (never a rejection) when the store did not take it. */
  private async writeDirect(tasks: TaskRecord[]): Promise<boolean> {
    this.direct = null
    if (!this.writing) return false
    try {
      await this.store.writeTasks(tasks)
      return true
    } catch (err) {
      this.failed(err)
      return false
    }
  }

  /**
   * Resolves true once everything journalled before the call is in the store, false at once when
   * the store is down (or goes down meanwhile): callers carry on from memory, never waiting for an
   * outage to end. A caller that finds no write under way lets the microtasks queued behind it run
   * first: a drain placing a thousand tasks journals them in one such run (one transition each),
   * and they then go in one write, rather than one write for the first and a second for the rest.
   */
  async sync(): Promise<boolean> {
    if (!this.writing) return false
    const mine = this.appended
    if (this.writtenUpTo >= mine) return true
    if (!this.flushing) await Promise.resolve()
    while (this.writing && this.writtenUpTo < mine) {
      if (!this.flushing) this.flushing = this.flush()
      // A flush may go on to write the fleet's heartbeats, in parts: its caller's entries are
      // written before those, and it is told so then.
      await Promise.race([this.flushing, this.progressed.promise])
    }
    // Written is written, even if a later part of the same flush failed.
    return this.writtenUpTo >= mine
  }

  private append(entry: Entry): void {
    if (this.closed) return
    if (this.fence) {
      this.fence.discarded++
      return
    }
    this.appended++
    this.entries.push(entry)
    if (this.entries.length > this.coalesceAt) this.coalesce()
    if (this.healthy) this.schedule()
  }

  /** Latest state per key, in the order of each key's last change; the size is then one per key. */
  private coalesce(): void {
    const before = this.entries.length
    this.entries = latestPerKey(this.entries)
    // Coalescing again before the journal has grown past twice its distinct keys would cost
    // O(n) per append once it holds more keys than the limit.
    this.coalesceAt = Math.max(this.opts.limit, this.entries.length * 2)
    this.opts.log.warn(
      { store: this.store.kind, before, after: this.entries.length, limit: this.opts.limit },
      `Store journal reached ${before} change(s): coalesced to the latest state of each worker and task (${this.entries.length})`,
    )
  }

  private schedule(): void {
    if (this.closed || this.fence || this.urgent || this.flushing) return
    this.urgent = setImmediate(() => {
      this.urgent = null
      if (!this.flushing) this.flushing = this.flush()
    })
  }

  /** One write of everything journalled (and the heartbeat batch); never rejects. */
  private async flush(): Promise<void> {
    if (this.fence) return
    try {
      if (!this.opened) {
        await this.store.open()
        this.opened = true
        this.loadPending = this.opts.onLateOpen !== undefined
      }
      if (this.loadPending) {
        await this.opts.onLateOpen?.()
        this.loadPending = false
      }
      for (const id of this.source.drainHeartbeats()) this.heartbeats.add(id)
      const written = await this.writeEntries()
      const heartbeats = this.heartbeatsWanted()
      if (written === 0 && !heartbeats && !this.healthy) await this.store.ping()
      if (heartbeats) await this.writeHeartbeats()
      this.recovered(written)
    } catch (err) {
      this.failed(err)
    } finally {
      this.flushing = null
      if (this.writing && (this.entries.length > 0 || this.heartbeatsWanted())) this.schedule()
    }
  }

  /** Everything journalled so far, in one write; returns how many entries (after coalescing) it took. */
  private async writeEntries(): Promise<number> {
    const batch = latestPerKey(this.entries)
    this.entries = []
    const upTo = this.appended
    const progress = { written: 0 }
    this.writingBatch = { size: batch.length, progress }
    try {
      await this.write(batch, progress)
    } catch (err) {
      if (this.fence) {
        // Fenced while this batch was in the store's hands (a writeTaskNow refused meanwhile):
        // nothing will write it again, so it is dropped and counted with the rest, not put back
        // to sit in the backlog for good. (Fenced by this very refusal, it is put back below and
        // fencedOff drops and counts it with what the journal holds.)
        this.fence.discarded += batch.length - progress.written
        throw err
      }
      // Put back what was not written, ahead of anything appended meanwhile.
      this.entries = batch.slice(progress.written).concat(this.entries)
      if (this.entries.length > this.coalesceAt) this.coalesce()
      throw err
    } finally {
      this.writingBatch = null
    }
    if (this.entries.length === 0) this.coalesceAt = this.opts.limit
    if (upTo > this.writtenUpTo) {
      this.writtenUpTo = upTo
      const done = this.progressed
      this.progressed = signal()
      done.resolve()
    }
    return batch.length
  }

  /** Heartbeats to write in this flush: their interval came round, or the journal is closing. */
  private heartbeatsWanted(): boolean {
    return this.heartbeats.size > 0 && (this.heartbeatsDue || this.closed)
  }

  /**
   * Writes runs of same-kind changes in journal order (one key appears once: a bulkWrite promises
   * no order among its operations), counting in `progress` the entries the store took.
   */
  private async write(batch: Entry[], progress: { written: number }): Promise<void> {
    let i = 0
    while (i < batch.length) {
      // Fenced by another write meanwhile: the store would refuse the rest, and a fenced journal writes no more.
      if (this.fence) throw this.fence.error
      const kind = batch[i]!.kind
      let j = i
      while (j < batch.length && batch[j]!.kind === kind) j++
      if (kind === 'worker') {
        const changes: WorkerChanges = { upserts: [], deletes: [] }
        for (let k = i; k < j; k++) {
          const e = batch[k] as Extract<Entry, { kind: 'worker' }>
          if (e.worker) changes.upserts.push(e.worker)
          else changes.deletes.push(e.id)
        }
        await this.store.writeWorkers(changes)
      } else {
        const tasks: TaskRecord[] = []
        const removals: string[] = []
        for (let k = i; k < j; k++) {
          const e = batch[k] as Extract<Entry, { kind: 'task' }>
          if (e.task) tasks.push(e.task)
          else removals.push(e.id)
        }
        if (tasks.length > 0) {
          await this.store.writeTasks(tasks)
          this.emit('tasks-written', tasks.map((t) => t.id))
        }
        // One key appears once in a batch: no task is both written and removed here.
        if (removals.length > 0) {
          await this.store.deleteTasks(removals)
          // Unless the task was removed again since (its newer entry is still to be written).
          for (let k = i; k < j; k++) {
            const e = batch[k]!
            if (this.removals.get(e.id) === e) this.removals.delete(e.id)
          }
        }
      }
      i = progress.written = j
    }
  }

  /**
   * The workers whose heartbeats changed, as the registry holds them now (newer than any entry), in
   * writes of at most HEARTBEAT_WRITE_ROWS: the whole fleet comes at once, and a store runs one call
   * at a time (SQLite ~9 µs a row on its thread), so a task write made meanwhile waits for one
   * such part, not for 10,000 rows.
   */
  private async writeHeartbeats(): Promise<void> {
    if (this.heartbeats.size === 0) return
    const ids = [...this.heartbeats]
    this.heartbeats.clear()
    this.heartbeatsDue = false
    let done = 0
    try {
      while (done < ids.length) {
        // What was journalled meanwhile (a task placed, a worker registered) goes ahead of the
        // next part: it waits for one part at most, and its sync() resolves then.
        if (this.entries.length > 0) await this.writeEntries()
        if (this.fence) throw this.fence.error
        const part = ids.slice(done, done + HEARTBEAT_WRITE_ROWS)
        const upserts: WorkerRecord[] = []
        for (const id of part) {
          const w = this.source.get(id)
          if (w) upserts.push(w)
        }
        if (upserts.length > 0) await this.store.writeWorkers({ upserts, deletes: [], heartbeatsOnly: true })
        done += part.length
      }
    } catch (err) {
      if (this.fence) {
        // As for a batch of entries: fenced meanwhile, nothing would write these again.
        this.fence.discarded += ids.length - done
        throw err
      }
      for (let i = done; i < ids.length; i++) this.heartbeats.add(ids[i]!)
      this.heartbeatsDue = true
      throw err
    }
  }

  private recovered(written: number): void {
    if (this.degradedSince === null) return
    const outageMs = this.clock.now() - this.degradedSince
    this.pastOutageMs += outageMs
    this.degradedSince = null
    this.lastError = null
    this.backoff.reset()
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer)
    this.retryTimer = null
    this.opts.log.info({ store: this.store.kind, outageMs, written }, `Store ${this.store.kind} is answering again after ${Math.round(outageMs / 100) / 10}s; wrote ${written} journalled change(s)`)
    this.emit('recovered', outageMs)
  }

  private failed(err: unknown): void {
    if (isCloudaiError(err) && err.code === 'CLOUDAI_STALE_EPOCH') {
      this.fencedOff(err)
      return
    }
    if (this.fence) return
    const message = err instanceof Error ? err.message : String(err)
    this.lastError = message
    if (this.degradedSince === null) {
      this.degradedSince = this.clock.now()
      this.outages++
      this.opts.log.error(
        { store: this.store.kind, err: message, backlog: this.backlog },
        `Store ${this.store.kind} failed: running from memory, journalling changes and retrying until it answers`,
      )
    } else {
      this.opts.log.debug({ store: this.store.kind, err: message }, 'store still failing')
    }
    if (this.closed || this.retryTimer) return
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null
      if (!this.flushing) this.flushing = this.flush()
    }, this.backoff.next())
  }

  /** The store refused a write as stale: stop writing for good, drop what is held, say so once. */
  private fencedOff(err: CloudaiError): void {
    if (this.fence) return
    const epoch = typeof err.details?.epoch === 'number' ? err.details.epoch : 0
    const current = typeof err.details?.current === 'number' ? err.details.current : null
    const discarded = this.entries.length + this.heartbeats.size
    this.fence = { epoch, current, discarded, error: err }
    this.entries = []
    this.removals.clear()
    this.heartbeats.clear()
    this.heartbeatsDue = false
    if (this.heartbeatTimer) this.clock.clearInterval(this.heartbeatTimer)
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer)
    if (this.urgent) clearImmediate(this.urgent)
    this.heartbeatTimer = this.retryTimer = this.urgent = null
    this.opts.log.error(
      { store: this.store.kind, epoch, current, discarded, err: err.message },
      `Store ${this.store.kind} refused a write of epoch ${epoch}${current === null ? '' : ` (it is at epoch ${current})`}: another master leads; this master's journal stops writing and dropped ${discarded} change(s)`,
    )
    this.emit('fenced', epoch, current, discarded)
  }

  /** Why a write was not taken: the fence's refusal once fenced, else the outage. */
  private writeError(): CloudaiError {
    return this.fence ? this.fence.error : this.degradedError()
  }

  private degradedError(): CloudaiError {
    const since = this.degradedSince === null ? '' : ` for ${Math.round((this.clock.now() - this.degradedSince) / 1000)}s`
    return new CloudaiError('CLOUDAI_STORE_DEGRADED', `the ${this.store.kind} store is not answering${since} (${this.lastError ?? 'unknown error'})`, {
      backlog: this.backlog,
    })
  }

  /** Stops following the registry and the timers, then tries once more to write what is journalled. */
  async close(): Promise<JournalStatus> {
    if (this.closed) return this.status()
    this.closed = true
    for (const ev of WORKER_EVENTS) this.source.off(ev, this.onWorker)
    if (this.heartbeatTimer) this.clock.clearInterval(this.heartbeatTimer)
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer)
    if (this.urgent) clearImmediate(this.urgent)
    this.heartbeatTimer = this.retryTimer = this.urgent = null
    if (this.direct) await this.direct.written
    while (this.flushing) await this.flushing
    if (this.fence) {
      this.opts.log.warn({ store: this.store.kind, epoch: this.fence.epoch, discarded: this.fence.discarded }, `Store journal closed fenced at epoch ${this.fence.epoch}: ${this.fence.discarded} change(s) dropped in all`)
      return this.status()
    }
    if (this.opened || this.entries.length > 0) {
      this.flushing = this.flush()
      await this.flushing
    }
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer)
    this.retryTimer = null
    return this.status()
  }
}

function latestPerKey(entries: Entry[]): Entry[] {
  const last = new Map<string, Entry>()
  for (const e of entries) {
    const key = e.kind === 'worker' ? `w\0${e.id}` : `t\0${e.id}`
    // Delete first so the key moves to the position of its latest change.
    last.delete(key)
    last.set(key, e)
  }
  return [...last.values()]
}

/** A promise and what settles it (Promise.withResolvers is Node 22's). */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}
