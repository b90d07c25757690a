import * as grpc from '@grpc/grpc-js'
import { C, type Counters } from './counters.js'
import type { Logger } from '../shared/log.js'
import { callUnary } from '../shared/proto.js'
import type { WorkerRecord } from '../shared/types.js'
import type { TaskAckMsg } from '../shared/wire.js'
import type { Registry } from './registry.js'
import type { WorkerClients } from './worker-clients.js'

// The CancelTask calls the master sends to workers: an operator's cancel, and the reconciliation
// of heartbeats (a worker still runs a task, or an attempt of it, that is no longer its own). What
// a heartbeat lists is the worker's word, so it must not be able to make the master send calls or
// log lines by the thousand: a task is asked about at most once per retry interval per worker, at
// most a few calls per worker are in flight, and ids the master never placed on that worker are
// only counted (one log line per worker per interval). Memory is bounded by what the worker's
// latest heartbeat lists: what it stops listing is forgotten.

export interface WorkerCancelsOptions {
  clients: WorkerClients
  registry: Registry
  log: Logger
  /** Deadline of one CancelTask call. */
  rpcTimeoutMs: number
  counters?: Counters
  /** Reconciliation's CancelTask calls in flight at once per worker (an operator's cancel always goes). */
  maxInFlightPerWorker?: number
  /** After a CancelTask (answered or not), the same task on the same worker is not asked about again for this long. */
  retryAfterMs?: number
  /** Ids listed that the master never assigned there: one log line per worker per interval. */
  unknownLogIntervalMs?: number
  now?: () => number
}

export const CANCEL_DEFAULTS = { maxInFlightPerWorker: 8, retryAfterMs: 60_000, unknownLogIntervalMs: 60_000 } as const

interface Asked {
  /** When the last call was sent. */
  at: number
  inFlight: boolean
}

interface WorkerState {
  asked: Map<string, Asked>
  inFlight: number
  /** Unknown ids since the last line about them, and when that line was logged. */
  unknownHeld: number
  unknownLoggedAt: number | null
}

export class WorkerCancels {
  private readonly workers = new Map<string, WorkerState>()
  private readonly pending = new Set<Promise<void>>()
  private readonly maxInFlight: number
  private readonly retryAfterMs: number
  private readonly unknownLogIntervalMs: number
  private readonly now: () => number

  constructor(private readonly opts: WorkerCancelsOptions) {
    this.maxInFlight = opts.maxInFlightPerWorker ?? CANCEL_DEFAULTS.maxInFlightPerWorker
    this.retryAfterMs = opts.retryAfterMs ?? CANCEL_DEFAULTS.retryAfterMs
    this.unknownLogIntervalMs = opts.unknownLogIntervalMs ?? CANCEL_DEFAULTS.unknownLogIntervalMs
    this.now = opts.now ?? Date.now
  }

  /**
   * A heartbeat of `workerId` lists `taskId` as running, and the master placed it there once but it
   * is no longer that worker's attempt: asked to stop, unless it was asked within the retry
   * interval or the worker has its share of calls in flight (a later heartbeat asks then).
   */
  stale(workerId: string, taskId: string): void {
    const w = this.state(workerId)
    const now = this.now()
    const asked = w.asked.get(taskId)
    if (asked && (asked.inFlight || now - asked.at < this.retryAfterMs)) return
    if (w.inFlight >= this.maxInFlight) return
    if (this.send(workerId, w, taskId, now)) this.opts.counters?.add(C.STALE_TASK_CANCELS)
  }

  /** An operator cancelled a task that was on `workerId`: sent now, unless a call for it is in flight. */
  operator(workerId: string, taskId: string): void {
    // An unregistered worker has nobody to call, and its state would never be forgotten.
    if (!this.opts.registry.get(workerId)) return
    const w = this.state(workerId)
    if (w.asked.get(taskId)?.inFlight) return
    this.send(workerId, w, taskId, this.now())
  }

  /**
   * `count` ids in one heartbeat of `workerId` that this master never assigned to it: counted, and
   * logged once per interval per worker with how many there were since the last line.
   */
  unknown(workerId: string, count: number, example: string): void {
    this.opts.counters?.add(C.HEARTBEAT_UNKNOWN_TASKS, count)
    const w = this.state(workerId)
    w.unknownHeld += count
    const now = this.now()
    if (w.unknownLoggedAt !== null && now - w.unknownLoggedAt < this.unknownLogIntervalMs) return
    const held = w.unknownHeld
    w.unknownHeld = 0
    w.unknownLoggedAt = now
    this.opts.log.warn(
      { workerId, unknownTasks: count, sinceLastLine: held, example: example.slice(0, 80) },
      `Worker ${workerId} lists ${count} running task(s) this master never assigned to it (e.g. ${example.slice(0, 80)}; ${held} since the last line): left alone, no CancelTask sent; logged at most once a minute per worker`,
    )
  }

  /** The worker's latest heartbeat lists these ids: what was asked about and is no longer listed is forgotten. */
  listed(workerId: string, ids: ReadonlySet<string> | null): void {
    const w = this.workers.get(workerId)
    if (!w || w.asked.size === 0) return
    for (const [taskId, asked] of w.asked) if (!asked.inFlight && !ids?.has(taskId)) w.asked.delete(taskId)
  }

  /**
   * The worker was unregistered while it ran these tasks: each is asked to stop there, with the
   * record the registry no longer holds (its credential makes the proofs). Resolves once every
   * call is answered or failed (within the call deadline); the caller drops the client then.
   */
  async departed(worker: WorkerRecord, taskIds: readonly string[]): Promise<void> {
    const { log } = this.opts
    const client = this.opts.clients.get(worker.id, worker.address)
    const calls = taskIds.map((taskId) =>
      callUnary<{ task_id: string }, TaskAckMsg>(client, 'CancelTask', { task_id: taskId }, this.opts.rpcTimeoutMs, this.opts.clients.proof(worker, 'CancelTask', taskId)).promise.then(
        (ack) => log.info({ taskId, workerId: worker.id, ok: ack.success, message: ack.message }, `CancelTask ${taskId} on unregistered worker ${worker.id}: ${ack.message || (ack.success ? 'ok' : 'refused')}`),
        (err: grpc.ServiceError) => log.warn({ taskId, workerId: worker.id, code: grpc.status[err.code] ?? err.code, err: err.details ?? err.message }, `CancelTask ${taskId} on unregistered worker ${worker.id} failed`),
      ),
    )
    const all = Promise.all(calls).then(() => {})
    this.pending.add(all)
    try {
      await all
    } finally {
      this.pending.delete(all)
    }
  }

  /** The worker is gone (unregistered): everything about it is forgotten. */
  forget(workerId: string): void {
    this.workers.delete(workerId)
  }

  /** Waits for the calls in flight. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.pending])
  }

  private state(workerId: string): WorkerState {
    let w = this.workers.get(workerId)
    if (!w) this.workers.set(workerId, (w = { asked: new Map(), inFlight: 0, unknownHeld: 0, unknownLoggedAt: null }))
    return w
  }

  /** False when the worker is no longer registered (nothing to call). */
  private send(workerId: string, w: WorkerState, taskId: string, now: number): boolean {
    const worker = this.opts.registry.get(workerId)
    if (!worker) return false
    const asked: Asked = { at: now, inFlight: true }
    w.asked.set(taskId, asked)
    w.inFlight++
    const { log } = this.opts
    const proof = this.opts.clients.proof(worker, 'CancelTask', taskId)
    const p = callUnary<{ task_id: string }, TaskAckMsg>(this.opts.clients.get(worker.id, worker.address), 'CancelTask', { task_id: taskId }, this.opts.rpcTimeoutMs, proof).promise.then(
      (ack) => log.info({ taskId, workerId, ok: ack.success, message: ack.message }, `CancelTask ${taskId} on worker ${workerId}: ${ack.message || (ack.success ? 'ok' : 'refused')}`),
      (err: grpc.ServiceError) => log.warn({ taskId, workerId, code: grpc.status[err.code] ?? err.code, err: err.details ?? err.message }, `CancelTask ${taskId} on worker ${workerId} failed`),
    ).finally(() => {
      asked.inFlight = false
      // The retry interval counts from the answer: a worker that takes its kill grace to stop
      // still lists the task meanwhile.
      asked.at = this.now()
      w.inFlight--
      this.pending.delete(p)
    })
    this.pending.add(p)
    return true
  }
}
