// The master's side of the SQLite thread seam: a Store whose every call is a message to the store
// thread (thread.ts, entry workers/sqlite-store.ts), which owns the connection. The main thread
// only clones the records it hands over; SQLite's work, its fsyncs and its busy waits happen on
// the thread, so a burst of writes never stalls the event loop.
import { Worker } from 'node:worker_threads'
import { join, resolve } from 'node:path'
import { CloudaiError, type ErrorCode } from '../../shared/errors.js'
import type { TaskRecord, WorkerRecord } from '../../shared/types.js'
import { checkLeaseRequest, type Lease, type LeaseRequest } from '../lease.js'
import type { Store, WorkerChanges } from '../store.js'
import { STAGE_CHARS, STAGE_RECORDS, type StoreCalls, type StoreOp, type StoreRequest, type StoreResponse, type StoreStage, type StoreThreadData, type WireError } from './protocol.js'

const THREAD_FILE = new URL('../../../workers/sqlite-store.js', import.meta.url)

interface Pending {
  resolve: (value: unknown) => void
  reject: (err: Error) => void
}

/**
 * The embedded default store: one SQLite file under --data-dir (SqliteConnection, connection.ts,
 * has the schema and the writes), run on a thread of its own. Answers come only once the thread's
 * call is done, so a write resolves once committed: durability is the connection's, unchanged.
 *
 * A thread that dies (a crash, or it was terminated) fails the calls it had as
 * CLOUDAI_STORE_UNAVAILABLE, which the journal treats as an outage; the next call starts a new
 * thread and reopens the connection, so the journal's retry heals it without a restart.
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly location: string
  private thread: Worker | null = null
  /** The thread in use has opened its connection. */
  private ready = false
  /** open() succeeded and close() has not been called: a dead thread is started again on the next call. */
  private wanted = false
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private opening: Promise<void> | null = null
  /** The latest (re)open, settled: later callers wait on it behind those already waiting. */
  private lastOpening: Promise<void> = Promise.resolve()
  /** Calls waiting for an open to finish: while there are any, new calls queue behind them. */
  private openWaiters = 0
  /** A large write is being posted in parts: later messages wait for it, so the order holds. */
  private posting: Promise<void> | null = null
  /** fence()'s epoch, held here too: a thread started anew (a crash, a reopen) is given it after its open. */
  private fenceEpoch: number | null = null

  constructor(private readonly dataDir: string, private readonly busyTimeoutMs = 50) {
    this.location = join(resolve(dataDir), 'cloudai.db')
  }

  async open(): Promise<void> {
    if (this.ready) return
    try {
      await this.openThread()
    } catch (err) {
      // The master refuses to start on some of these: no thread may keep its process alive.
      await this.stopThread()
      throw err
    }
    this.wanted = true
  }

  async close(): Promise<void> {
    this.wanted = false
    await this.stopThread()
  }

  ping(): Promise<void> {
    return this.call('ping')
  }

  loadWorkers(): Promise<WorkerRecord[]> {
    return this.call('loadWorkers')
  }

  async writeWorkers(changes: WorkerChanges): Promise<void> {
    if (changes.upserts.length === 0 && changes.deletes.length === 0) return
    await this.call('writeWorkers', changes)
  }

  loadTasks(): Promise<TaskRecord[]> {
    return this.call('loadTasks')
  }

  async writeTasks(tasks: TaskRecord[]): Promise<void> {
    if (tasks.length === 0) return
    await this.call('writeTasks', tasks)
  }

  async deleteTasks(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return
    await this.call('deleteTasks', ids)
  }

  deleteFinishedBefore(before: number): Promise<number> {
    return this.call('deleteFinishedBefore', before)
  }

  deleteFinishedBeyond(keep: number): Promise<number> {
    return this.call('deleteFinishedBeyond', keep)
  }

  acquireLease(req: LeaseRequest): Promise<{ acquired: boolean; lease: Lease }> {
    return this.call('acquireLease', req)
  }

  renewLease(req: { holder: string; epoch: number; ttlMs: number }): Promise<boolean> {
    return this.call('renewLease', req)
  }

  releaseLease(req: { holder: string; epoch: number }): Promise<void> {
    return this.call('releaseLease', req)
  }

  readLease(): Promise<Lease | null> {
    return this.call('readLease')
  }

  /**
   * Takes effect for every call made after it: the message goes to the thread in call order, ahead
   * of them. A thread that is not running gets it when it next opens.
   */
  fence(epoch: number | null): void {
    if (epoch !== null) checkLeaseRequest({ holder: '-', epoch })
    this.fenceEpoch = epoch
    if (!this.thread) return
    // A failure here is a thread that died: the new one is given the fence before any other call.
    void this.call('fence', epoch).catch(() => undefined)
  }

  /** One call on the thread; a thread that died since open() is replaced (and reopened) first. */
  private async call<K extends StoreOp>(op: K, ...args: StoreCalls[K]['args']): Promise<StoreCalls[K]['result']> {
    // While earlier calls still wait for a (re)open, later ones queue behind them on the same
    // promise, whose continuations run in order: calls reach the thread in the order they were made.
    if (!this.ready || this.openWaiters > 0) {
      if (!this.ready && !this.wanted) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store is not open')
      this.openWaiters++
      try {
        await (this.ready ? this.lastOpening : this.openThread())
      } finally {
        this.openWaiters--
      }
    }
    return (await this.send(op, args)) as StoreCalls[K]['result']
  }

  /** Starts the thread if none runs and has it open the connection; concurrent callers share one attempt. */
  private openThread(): Promise<void> {
    if (this.opening) return this.opening
    this.opening = (async () => {
      try {
        this.startThread()
        await this.send('open', [])
        if (this.fenceEpoch !== null) await this.send('fence', [this.fenceEpoch])
        this.ready = true
      } finally {
        this.opening = null
      }
    })()
    this.lastOpening = this.opening.catch(() => {})
    return this.opening
  }

  private startThread(): void {
    if (this.thread) return
    const data: StoreThreadData = { dataDir: this.dataDir, busyTimeoutMs: this.busyTimeoutMs }
    const thread = new Worker(THREAD_FILE, { workerData: data, name: 'cloudai-sqlite-store' })
    let crash: Error | null = null
    thread.on('message', (res: StoreResponse) => this.answer(res))
    // Without a listener an uncaught error in the thread would be thrown on the main thread.
    thread.on('error', (err) => {
      crash = err
    })
    thread.on('exit', (code) => {
      if (this.thread !== thread) return
      this.thread = null
      this.ready = false
      const why = crash ? crash.message : `exit code ${code}`
      this.failPending(new CloudaiError('CLOUDAI_STORE_UNAVAILABLE', `the SQLite store thread stopped (${why}); the next call starts a new one`))
    })
    this.thread = thread
  }

  private send(op: StoreOp, args: unknown[]): Promise<unknown> {
    const thread = this.thread
    if (!thread) return Promise.reject(new CloudaiError('CLOUDAI_STORE_UNAVAILABLE', 'the SQLite store thread is not running'))
    const id = this.nextId++
    const answer = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }))
    const messages = split({ id, op, args: args as StoreRequest['args'] })
    try {
      if (messages.length === 1 && !this.posting) thread.postMessage(messages[0])
      else this.postInTurns(thread, id, messages)
    } catch (err) {
      this.reject(id, err as Error)
    }
    return answer
  }

  /**
   * Posts one message per event-loop turn, after any such posting under way: the main thread
   * clones at most STAGE_RECORDS records at a time.
   */
  private postInTurns(thread: Worker, id: number, messages: (StoreRequest | StoreStage)[]): void {
    const run = async (): Promise<void> => {
      await this.posting
      for (let i = 0; i < messages.length; i++) {
        if (i > 0) await new Promise((r) => setImmediate(r))
        // A thread that died meanwhile failed this call already (exit).
        if (this.thread !== thread) return
        thread.postMessage(messages[i])
      }
    }
    const posting: Promise<void> = run().catch((err: unknown) => this.reject(id, err as Error)).finally(() => {
      if (this.posting === posting) this.posting = null
    })
    this.posting = posting
  }

  private reject(id: number, err: Error): void {
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    p.reject(err)
  }

  private answer(res: StoreResponse): void {
    const p = this.pending.get(res.id)
    if (!p) return
    this.pending.delete(res.id)
    if (res.ok) p.resolve(res.value)
    else p.reject(fromWire(res.error))
  }

  private failPending(err: Error): void {
    const all = [...this.pending.values()]
    this.pending.clear()
    for (const p of all) p.reject(err)
  }

  /** Closes the connection on its thread (so WAL is checkpointed as on any close), then ends the thread. */
  private async stopThread(): Promise<void> {
    if (this.opening) await this.opening.catch(() => undefined)
    const thread = this.thread
    this.ready = false
    if (!thread) return
    await this.send('close', []).catch(() => undefined)
    this.thread = null
    await thread.terminate()
    this.failPending(new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store was closed'))
  }
}

/** A request, its large record list split into leading StoreStage parts (see protocol.ts). */
function split(req: StoreRequest): (StoreRequest | StoreStage)[] {
  let records: (TaskRecord | WorkerRecord)[]
  let rest: (records: (TaskRecord | WorkerRecord)[]) => StoreRequest
  if (req.op === 'writeTasks') {
    records = (req.args as StoreCalls['writeTasks']['args'])[0]
    rest = (r) => ({ ...req, args: [r as TaskRecord[]] })
  } else if (req.op === 'writeWorkers') {
    const [changes] = req.args as StoreCalls['writeWorkers']['args']
    records = changes.upserts
    rest = (r) => ({ ...req, args: [{ ...changes, upserts: r as WorkerRecord[] }] })
  } else {
    return [req]
  }
  const out: (StoreRequest | StoreStage)[] = []
  let start = 0
  let chars = 0
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!
    // What makes a record large: a task's output tail (up to --task-output-tail) and command.
    const size = 'logsTail' in r ? r.logsTail.length + r.command.length : 0
    if (i > start && (i - start >= STAGE_RECORDS || chars + size > STAGE_CHARS)) {
      out.push({ id: req.id, stage: records.slice(start, i) })
      start = i
      chars = 0
    }
    chars += size
  }
  if (start === 0) return [req]
  out.push(rest(records.slice(start)))
  return out
}

/** The error the connection threw, as the journal and the master expect it: same code, same message. */
function fromWire(w: WireError): Error {
  if (w.cloudai) return new CloudaiError(w.code as ErrorCode, w.message, w.details)
  const err = new Error(w.message) as Error & { code?: string }
  err.name = w.name
  if (w.code !== undefined) err.code = w.code
  return err
}
