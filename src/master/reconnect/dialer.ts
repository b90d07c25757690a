import { availableParallelism } from 'node:os'
import { Piscina } from 'piscina'
import { dialMasterRegister } from './dial.js'
import { CANCEL_GENERATION, CANCEL_SLOTS, cancelFlagsBuffer } from './cancel-watch.js'
import { isDialResultsMessage, type BatchedDial, type DialBatch, type DialBatchDone, type DialBatchResults, type DialOutcome, type DialRequest, type DialResult, type DialThreadData } from './protocol.js'
import { Counters, DIAL_OUTCOME_COUNTER } from '../counters.js'
import { NO_CLUSTER_AUTH, type ClusterAuth } from '../../shared/cluster-auth.js'
import { liveNonces, type MasterKey } from '../../shared/worker-credential.js'
import { withAcceptedExecArgv } from './exec-argv.js'
import type { WorkerRecord } from '../../shared/types.js'
import { NO_EPOCH } from '../../shared/leadership.js'

export type DialTarget = Omit<DialRequest, 'deadline' | 'cancelSlot' | 'cancelFlags' | 'counters'>

/** Who is dialling: the same for every MasterRegister this master sends. */
export interface DialingMaster {
  masterId: string
  masterAddress: () => string
  dialTimeoutMs: number
  /** The master's epoch, read at each dial (default: NO_EPOCH). */
  epoch?: () => number
}

/** The MasterRegister dial of a worker, as the reconnection monitor and the suspect probes send it. */
export function masterRegisterTarget(w: WorkerRecord, master: DialingMaster, now: number): DialTarget {
  return {
    workerId: w.id,
    address: w.address,
    masterId: master.masterId,
    masterAddress: master.masterAddress(),
    masterEpoch: master.epoch?.() ?? NO_EPOCH,
    // The dial thread makes the proof from these and the master key; no proof without a credential.
    proofNonces: w.credential ? liveNonces(w.credential, now) : [],
    timeoutMs: master.dialTimeoutMs,
  }
}

export interface PendingDial {
  promise: Promise<DialResult>
  /** Cancels the dial wherever it is: queued, or mid-call on a thread. */
  cancel(): void
}

/** Where reconnection dials run. The master uses the pool; the bench compares it with inline. */
export interface Dialer {
  readonly kind: 'pool' | 'inline'
  /** The shared counters dials count into (attempts, outcomes, dial time); null counts nothing. */
  counters?: SharedArrayBuffer | null
  dial(target: DialTarget): PendingDial
  close(): Promise<void>
}

/**
 * Cancel flags in shared memory (cancel-watch.ts), one Int32 per in-flight dial. A slot is taken
 * per dial and given back when its result arrives; cancelling sets its flag, then bumps the
 * generation and notifies it, which wakes the one waiter of each dialling thread.
 */
export class CancelSlots {
  readonly flags = cancelFlagsBuffer()
  private readonly free: number[] = []
  private next = 0
  private notifying = false

  take(): number {
    const slot = this.free.pop() ?? (this.next < CANCEL_SLOTS ? this.next++ : -1)
    if (slot >= 0) Atomics.store(this.flags, slot, 0)
    return slot
  }

  /**
   * Sets the slot's flag now; the generation is bumped and notified once for every cancel of this
   * turn, in a microtask. A burst of returning workers cancels hundreds of dials within one turn
   * (each activation cancels its dial): a notify each was the longest stall of a dial storm's main
   * thread (the profile's top self time during it), and woke each dialling thread to scan all its
   * dials once per cancel.
   */
  cancel(slot: number): void {
    if (slot < 0) return
    Atomics.store(this.flags, slot, 1)
    if (this.notifying) return
    this.notifying = true
    queueMicrotask(() => {
      this.notifying = false
      Atomics.add(this.flags, CANCEL_GENERATION, 1)
      Atomics.notify(this.flags, CANCEL_GENERATION)
    })
  }

  release(slot: number): void {
    if (slot >= 0) this.free.push(slot)
  }
}

/** A dial's result when it never reached a thread. */
function settledHere(workerId: string, outcome: DialOutcome, message: string): DialResult {
  return { workerId, outcome, message, elapsedMs: 0, thread: -1 }
}

/** Dials up to this many in one batch: a larger message would be a stall of its own to post and to take. */
const MAX_BATCH = 256
/** A turn's dials are split over the threads only in shares of at least this many. */
const MIN_SPLIT = 64
/** Dials handed to the threads per event-loop turn; what is asked beyond it goes on the next turn. */
const MAX_PER_TURN = 1024

/** One dial on its way through the pool dialer: queued for this turn's batches, then on a thread. */
interface PoolEntry {
  req: BatchedDial
  promise: Promise<DialResult>
  state: 'queued' | 'sent' | 'settled'
  resolve: (r: DialResult) => void
  reject: (err: Error) => void
}

/** A batch on a thread: its dials by index, and how many of its posted results have come. */
interface SentBatch {
  entries: PoolEntry[]
  received: number
  /** From the task's answer: how many results the thread posted before it (null: not answered yet). */
  posted: number | null
}

/**
 * Dials on a Piscina pool, in batches. What is asked within one event-loop turn is flushed once,
 * at the end of the turn, as one task per thread (at most MAX_BATCH dials each); each thread runs
 * all of its batch's dials at once (they are I/O-bound: the cost is sockets, channel set-up and
 * TLS/HTTP2 framing, which is what stalls an event loop at a few thousand) and posts their results
 * back a turn's worth at a time. Every thread is started with the pool and Piscina's least-busy
 * balancer spreads the batches over them. Cancelling works wherever the dial is: queued here
 * (settled at once, never sent), or on a thread (the shared flag).
 */
/** The dial threads' heap limits (see the pool's options). */
export const DIAL_THREAD_LIMITS = { maxYoungGenerationSizeMb: 8 } as const

export class PoolDialer implements Dialer {
  readonly kind = 'pool'
  /** Set by the master: dials count themselves into its shared counters. */
  counters: SharedArrayBuffer | null = null
  private readonly pool: Piscina
  private readonly slots = new CancelSlots()
  private readonly threadCount: number
  private queue: PoolEntry[] = []
  private flushing: NodeJS.Immediate | null = null
  /** Dials on a thread, not yet answered: close() cancels them. */
  private readonly onThreads = new Set<PoolEntry>()
  private closed = false
  private sent = { batches: 0, dials: 0 }
  private counterView: Counters | null = null
  private readonly batches = new Map<number, SentBatch>()
  private nextBatch = 0

  /** @param opts.auth the master's TLS and cluster token, and opts.masterKey its key, handed to every thread once */
  constructor(opts: { threads?: number; auth?: ClusterAuth; masterKey?: MasterKey | null } = {}) {
    const threads = opts.threads && opts.threads > 0 ? opts.threads : Math.max(1, Math.min(4, availableParallelism()))
    this.threadCount = threads
    const workerData: DialThreadData = { cluster: (opts.auth ?? NO_CLUSTER_AUTH).material, masterKey: opts.masterKey?.bytes() ?? null, cancelFlags: this.slots.flags, heapLock: new Int32Array(new SharedArrayBuffer(4)) }
    const pool = (execArgv: string[]): Piscina => new Piscina({
      filename: new URL('../../../workers/dial.js', import.meta.url).href,
      // All started at once: Piscina adds a thread only when every one is at its task limit, which
      // batches (a few hundred at most per thread in a 5,000-worker pass) never reach.
      minThreads: threads,
      maxThreads: threads,
      // Batches, not dials: a pass of 5,000 at 64 dials a turn is about 80 batches a thread, each
      // held until its slowest dial (a tarpit: the dial timeout) settles.
      concurrentTasksPerWorker: 4096,
      idleTimeout: 60_000,
      // An idle thread waits for its next task on its event loop, not blocked in Atomics.wait:
      // blocked, its timers would never run, and the compaction that gives a burst's heap back
      // (idle-heap.ts) runs on one. A batch then arrives as a message event, not an Atomics wake:
      // the dial storm bench could not tell the two apart (README, Performance).
      atomics: 'disabled',
      // A dial burst (a join or a reconnect pass of thousands) grows a thread's young generation to
      // V8's default cap, 48 MiB a thread, and the heap never gives it back: about 100 MiB of the
      // master's memory with two threads, for garbage a much smaller nursery collects as well.
      resourceLimits: DIAL_THREAD_LIMITS,
      // Piscina loads the entry file with require() first; Node 20.19+ then loads our ES module
      // synchronously (require(esm)), and a master that stops while its threads are still loading
      // (one refused at start: a data directory in use) aborted inside V8 ("IsGraphAsync must be
      // used on an instantiated module") instead of exiting 2. Without require(esm) Piscina falls
      // back to import(), which a thread can be stopped in the middle of.
      execArgv,
      workerData,
    })
    // Ours first: should anything of node's own flags end the Worker's options early, this one
    // still counts.
    const execArgv = ['--no-experimental-require-module', ...process.execArgv]
    this.pool = withAcceptedExecArgv(execArgv, pool)
    // The threads' results, on their parentPorts (protocol.ts); anything else a thread posts is not ours.
    this.pool.on('message', (m: unknown) => {
      if (!isDialResultsMessage(m)) return
      const batch = this.batches.get(m.batch)
      if (!batch) return
      batch.received += m.results.length
      this.settleResults(batch, m.results)
      this.endIfComplete(m.batch, batch)
    })
  }

  get threads(): number {
    return this.pool.threads.length
  }

  /** Batches and dials handed to the threads since start (each batch is one message). */
  get handed(): { batches: number; dials: number } {
    return { ...this.sent }
  }

  dial(target: DialTarget): PendingDial {
    if (this.closed) return { promise: Promise.reject(new Error('the dial pool is closed')), cancel: () => {} }
    const slot = this.slots.take()
    const entry = { req: { ...target, deadline: Date.now() + target.timeoutMs, cancelSlot: slot }, state: 'queued' } as PoolEntry
    const promise = new Promise<DialResult>((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
    entry.promise = promise
    this.queue.push(entry)
    this.flushing ??= setImmediate(() => this.flush())
    return { promise, cancel: () => this.cancel(entry) }
  }

  private cancel(entry: PoolEntry): void {
    if (entry.state === 'queued') {
      // Still here: it never reaches a thread, and its slot goes back at once.
      this.settle(entry, settledHere(entry.req.workerId, 'cancelled', 'cancelled before the dial started'))
      this.countHere(DIAL_OUTCOME_COUNTER.cancelled)
    } else if (entry.state === 'sent') {
      // Only while it is on a thread: a settled dial's slot may already be another dial's.
      this.slots.cancel(entry.req.cancelSlot)
    }
  }

  private settle(entry: PoolEntry, result: DialResult): void {
    if (entry.state === 'settled') return
    entry.state = 'settled'
    this.onThreads.delete(entry)
    this.slots.release(entry.req.cancelSlot)
    entry.resolve(result)
  }

  private fail(entry: PoolEntry, err: Error): void {
    if (entry.state === 'settled') return
    entry.state = 'settled'
    this.onThreads.delete(entry)
    this.slots.release(entry.req.cancelSlot)
    entry.reject(err)
  }

  private countHere(counter: number): void {
    if (!this.counters) return
    if (this.counterView?.buffer !== this.counters) this.counterView = new Counters(this.counters)
    this.counterView.add(counter)
  }

  /** The end of a turn: this turn's dials, as one batch per thread. */
  private flush(): void {
    this.flushing = null
    const live: PoolEntry[] = []
    let i = 0
    for (; i < this.queue.length && live.length < MAX_PER_TURN; i++) if (this.queue[i]!.state === 'queued') live.push(this.queue[i]!)
    this.queue = i < this.queue.length ? this.queue.slice(i) : []
    if (this.queue.length > 0) this.flushing = setImmediate(() => this.flush())
    if (live.length === 0) return
    // Split over the threads only when each gets a batch worth its cost: a batch is a task and a
    // few result messages on both sides, whatever its size, and a budgeted tick (15 dials at 60 a
    // second) split over every thread paid that once per thread.
    const batches = Math.min(this.threadCount, Math.ceil(live.length / MIN_SPLIT))
    const per = Math.min(MAX_BATCH, Math.ceil(live.length / batches))
    for (let at = 0; at < live.length; at += per) this.send(live.slice(at, at + per))
  }

  private send(entries: PoolEntry[]): void {
    const id = this.nextBatch++
    const sent: SentBatch = { entries, received: 0, posted: null }
    this.batches.set(id, sent)
    for (const e of entries) {
      e.state = 'sent'
      this.onThreads.add(e)
    }
    const batch: DialBatch = { id, dials: entries.map((e) => e.req), counters: this.counters }
    this.sent.batches++
    this.sent.dials += entries.length
    ;(this.pool.run(batch) as Promise<DialBatchDone>).then(
      (done) => {
        sent.posted = done.posted
        this.settleResults(sent, done.results)
        this.endIfComplete(id, sent)
      },
      // The pool failed the task (destroyed, or its thread died): the dials it had not answered fail with it.
      (err: unknown) => {
        this.batches.delete(id)
        for (const e of entries) this.fail(e, err instanceof Error ? err : new Error(String(err)))
      },
    )
  }

  private settleResults(batch: SentBatch, results: DialBatchResults): void {
    for (const { index, result } of results) {
      const entry = batch.entries[index]
      if (entry) this.settle(entry, result)
    }
  }

  /**
   * Answered, and every result it posted has come: a dial still unanswered then lost its thread
   * (it cannot come any more).
   */
  private endIfComplete(id: number, batch: SentBatch): void {
    if (batch.posted === null || batch.received < batch.posted) return
    this.batches.delete(id)
    for (const e of batch.entries) this.fail(e, new Error('the dial thread ended the batch without this dial\'s result'))
  }

  /** Cancels every dial (queued or on a thread), waits for their results, then stops the threads. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.flushing) clearImmediate(this.flushing)
    this.flushing = null
    for (const e of this.queue) this.cancel(e)
    this.queue = []
    const onThreads = [...this.onThreads]
    for (const e of onThreads) this.cancel(e)
    // Each settles with its result, or fails with its batch: a cancelled dial answers at once.
    await Promise.allSettled(onThreads.map((e) => e.promise))
    await this.pool.destroy()
  }
}

abstract class SlottedDialer implements Dialer {
  abstract readonly kind: 'pool' | 'inline'
  private readonly slots = new CancelSlots()
  /** Set by the master: dials count themselves into its shared counters. */
  counters: SharedArrayBuffer | null = null

  protected abstract run(req: DialRequest): Promise<DialResult>

  dial(target: DialTarget): PendingDial {
    const slot = this.slots.take()
    const req: DialRequest = { ...target, deadline: Date.now() + target.timeoutMs, cancelSlot: slot, cancelFlags: slot >= 0 ? this.slots.flags : null, counters: this.counters }
    let settled = false
    const promise = this.run(req).finally(() => {
      settled = true
      this.slots.release(slot)
    })
    // Only while it runs: a settled dial's slot may already be another dial's.
    return {
      promise,
      cancel: () => {
        if (!settled) this.slots.cancel(slot)
      },
    }
  }

  abstract close(): Promise<void>
}

/** The same dials on the calling thread: the bench baseline, and tests of the monitor's logic. */
export class InlineDialer extends SlottedDialer {
  readonly kind = 'inline'
  private readonly auth: ClusterAuth
  private readonly key: MasterKey | null

  constructor(opts: { auth?: ClusterAuth; masterKey?: MasterKey | null } = {}) {
    super()
    this.auth = opts.auth ?? NO_CLUSTER_AUTH
    this.key = opts.masterKey ?? null
  }

  protected run(req: DialRequest): Promise<DialResult> {
    return dialMasterRegister(req, this.auth, this.key)
  }

  async close(): Promise<void> {}
}
