// The reconnection seam: what the main thread (dialer.ts) and the dial pool's threads
// (dial-thread.ts) say to each other. Both sides import this module and nothing else of the other.
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
 * per thread). Their results come back as they settle, coalesced per turn of the dial thread's loop,
 * not when the whole batch is done: a batch holding a tarpit must not hold back the answer of a
 * worker that came back. They come on the thread's parentPort (DialResultsMessage), which Piscina
 * hands to the pool's 'message' listeners: one channel per thread for its whole life. A channel per
 * batch, created, transferred and closed four times a second by a budgeted trickle of dead
 * workers' dials, was a tenth to a sixth of what those dials cost each of the two threads (perf,
 * 5,000 dead workers). The task resolves (DialBatchDone) once every dial has settled.
 */
export interface DialBatch {
  /** The dialer's number for this batch: its results name it. */
  id: number
  dials: BatchedDial[]
  counters: SharedArrayBuffer | null
}

/** Results settled in one turn, by index in the batch. */
export type DialBatchResults = { index: number; result: DialResult }[]

/** What a dial thread posts on its parentPort while a batch runs. */
export interface DialResultsMessage {
  kind: typeof DIAL_RESULTS
  batch: number
  results: DialBatchResults
}

export const DIAL_RESULTS = 'cloudai-dial-results'

/**
 * A batch's task result. `results`: those settled in its last turn, carried by the answer itself.
 * `posted`: how many came before it as DialResultsMessages. Those travel on another channel than
 * the answer and may arrive after it; the dialer waits for that many before it counts a dial still
 * unanswered as lost.
 */
export interface DialBatchDone {
  posted: number
  results: DialBatchResults
}

export function isDialResultsMessage(m: unknown): m is DialResultsMessage {
  if (typeof m !== 'object' || m === null) return false
  const r = m as Partial<DialResultsMessage>
  return r.kind === DIAL_RESULTS && typeof r.batch === 'number' && Array.isArray(r.results)
}

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
