import { availableParallelism } from 'node:os'
import { Piscina } from 'piscina'
import { dialMasterRegister } from './dial.js'
import type { DialRequest, DialResult, DialThreadData } from './protocol.js'
import { NO_CLUSTER_AUTH, type ClusterAuth } from '../../shared/cluster-auth.js'
import { liveNonces, type MasterKey } from '../../shared/worker-credential.js'
import type { WorkerRecord } from '../../shared/types.js'

export type DialTarget = Omit<DialRequest, 'deadline' | 'cancelSlot' | 'cancelFlags' | 'counters'>

/** Who is dialling: the same for every MasterRegister this master sends. */
export interface DialingMaster {
  masterId: string
  masterAddress: () => string
  dialTimeoutMs: number
}

/** The MasterRegister dial of a worker, as the reconnection monitor and the suspect probes send it. */
export function masterRegisterTarget(w: WorkerRecord, master: DialingMaster, now: number): DialTarget {
  return {
    workerId: w.id,
    address: w.address,
    masterId: master.masterId,
    masterAddress: master.masterAddress(),
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

const CANCEL_SLOTS = 65_536

/**
 * Cancel flags in shared memory, one Int32 per in-flight dial. A slot is taken per dial and given
 * back when its result arrives; cancelling writes 1 and notifies the waiter on the dial's thread.
 */
class CancelSlots {
  readonly flags = new Int32Array(new SharedArrayBuffer(CANCEL_SLOTS * 4))
  private readonly free: number[] = []
  private next = 0

  take(): number {
    const slot = this.free.pop() ?? (this.next < CANCEL_SLOTS ? this.next++ : -1)
    if (slot >= 0) Atomics.store(this.flags, slot, 0)
    return slot
  }

  cancel(slot: number): void {
    if (slot < 0) return
    Atomics.store(this.flags, slot, 1)
    Atomics.notify(this.flags, slot)
  }

  release(slot: number): void {
    if (slot >= 0) this.free.push(slot)
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
    const promise = this.run(req).finally(() => this.slots.release(slot))
    return { promise, cancel: () => this.slots.cancel(slot) }
  }

  abstract close(): Promise<void>
}

/**
 * Dials on a Piscina pool. Each thread runs many dials at once (they are I/O-bound: the cost is
 * channel set-up and TLS/HTTP2 framing, which is what stalls an event loop at a few thousand).
 */
export class PoolDialer extends SlottedDialer {
  readonly kind = 'pool'
  private readonly pool: Piscina

  /** @param opts.auth the master's TLS and cluster token, and opts.masterKey its key, handed to every thread once */
  constructor(opts: { threads?: number; concurrencyPerThread?: number; auth?: ClusterAuth; masterKey?: MasterKey | null } = {}) {
    super()
    const threads = opts.threads && opts.threads > 0 ? opts.threads : Math.max(1, Math.min(4, availableParallelism()))
    const workerData: DialThreadData = { cluster: (opts.auth ?? NO_CLUSTER_AUTH).material, masterKey: opts.masterKey?.bytes() ?? null }
    this.pool = new Piscina({
      filename: new URL('../../../workers/dial.js', import.meta.url).href,
      minThreads: 1,
      maxThreads: threads,
      // A dial mostly waits (a tarpit holds one for the whole dial timeout), so a thread holds
      // thousands. A lower cap queues the rest of a large pass behind the tarpits, where their
      // deadlines run out before they start: at 1,024 a thread, a 5,000-worker pass lost most of the
      // workers that had come back.
      concurrentTasksPerWorker: opts.concurrencyPerThread ?? 8192,
      idleTimeout: 60_000,
      workerData,
    })
  }

  get threads(): number {
    return this.pool.threads.length
  }

  protected run(req: DialRequest): Promise<DialResult> {
    return this.pool.run(req) as Promise<DialResult>
  }

  async close(): Promise<void> {
    await this.pool.destroy()
  }
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
