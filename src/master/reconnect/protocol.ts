// The reconnection seam: what the main thread (dialer.ts) and the dial pool's threads
// (dial-thread.ts) say to each other. Both sides import this module and nothing else of the other.
import type { MessagePort } from 'node:worker_threads'
import type { ClusterAuth } from '../../shared/cluster-auth.js'

export interface DialRequest {
  workerId: string
  address: string
  masterId: string
  masterAddress: string
  /**
   * The master's epoch when the dial was asked for (issue 19: from its lease; NO_EPOCH without
   * one), sent as MasterInfo.master_epoch: a worker that has seen a higher one refuses the dial.
   * Absent: NO_EPOCH.
   */
  masterEpoch?: number
  /**
   * Nonces of the worker's live tokens (current, and previous during a rotation): the dial sends a
   * proof for each. Absent or empty for a worker without a credential, which then gets none.
   */
  proofNonces?: readonly string[]
  timeoutMs: number
  /** Absolute deadline (epoch ms) set by the main thread, so time spent queued counts too. */
  deadline: number
  /** Index into `cancelFlags`; -1 when this dial cannot be cancelled. */
  cancelSlot: number
  /** The dialer's flags and their generation word (cancel-watch.ts); null: not cancellable. */
  cancelFlags: Int32Array | null
  /** The master's counters (shared memory): the dial's thread counts attempts and outcomes itself. */
  counters: SharedArrayBuffer | null
}

/** One dial inside a batch: the request without what the batch carries once for all of its dials. */
export type BatchedDial = Omit<DialRequest, 'cancelFlags' | 'counters'>

/**
 * One Piscina task: many dials at once (those asked within one event-loop turn, a share of them
 * per thread). Their results come back on `port` as they settle, coalesced per turn of the dial
 * thread's loop (DialBatchResults), not when the whole batch is done: a batch holding a tarpit
 * must not hold back the answer of a worker that came back. The task itself resolves with the
 * number of dials once every one has settled and been posted.
 */
export interface DialBatch {
  dials: BatchedDial[]
  counters: SharedArrayBuffer | null
  /** Transferred with the task; the thread closes it after the batch's last result. */
  port: MessagePort
}

/** What a dial thread posts on a batch's port: results settled in one turn, by index in the batch. */
export type DialBatchResults = { index: number; result: DialResult }[]

export type DialOutcome = 'success' | 'rejected' | 'refused' | 'timeout' | 'cancelled' | 'error'

export interface DialResult {
  workerId: string
  outcome: DialOutcome
  message: string
  elapsedMs: number
  /** The threadId of the thread that dialled (0: the main thread; -1: settled without a dial). */
  thread?: number
}

/** What the dial pool's threads get once, as Piscina's workerData (see dial-thread.ts). */
export interface DialThreadData {
  /** The cluster token and the PEMs' contents, as read at start: no thread reads a file. */
  cluster: ClusterAuth['material']
  /** The master key's bytes, for the proof each MasterRegister carries (null: no proofs). */
  masterKey: Uint8Array | null
  /**
   * The dialer's cancel flags, one Int32 per slot (each dial's `cancelSlot` indexes them), given
   * once per thread, not with each batch: a batch's copy is a new Int32Array object on the thread
   * (the same memory), so a watch looked up by it was a new CancelWatch, and a new waiter on the
   * generation word, for every batch. They piled up (150 waiters woken by one notify in a dial
   * storm, one notify then taking up to 40 ms of the main thread) and, with no cancel to wake
   * them, never went away while dead workers were dialled.
   */
  cancelFlags: Int32Array
  /** One Int32, 0 when free: the dial threads compact their heaps in turns (idle-heap.ts). */
  heapLock: Int32Array
}

/** The nice value a dial thread sets for itself on Linux (dial-thread.ts): below the main thread's. */
export const DIAL_THREAD_NICE = 10
