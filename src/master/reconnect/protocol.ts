// The reconnection seam: what the main thread (dialer.ts) and the dial pool's threads
// (dial-thread.ts) say to each other. Both sides import this module and nothing else of the other.
import type { ClusterAuth } from '../../shared/cluster-auth.js'

export interface DialRequest {
  workerId: string
  address: string
  masterId: string
  masterAddress: string
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
  cancelFlags: Int32Array | null
  /** The master's counters (shared memory): the dial's thread counts attempts and outcomes itself. */
  counters: SharedArrayBuffer | null
}

export type DialOutcome = 'success' | 'rejected' | 'refused' | 'timeout' | 'cancelled' | 'error'

export interface DialResult {
  workerId: string
  outcome: DialOutcome
  message: string
  elapsedMs: number
}

/** What the dial pool's threads get once, as Piscina's workerData (see dial-thread.ts). */
export interface DialThreadData {
  /** The cluster token and the PEMs' contents, as read at start: no thread reads a file. */
  cluster: ClusterAuth['material']
  /** The master key's bytes, for the proof each MasterRegister carries (null: no proofs). */
  masterKey: Uint8Array | null
}
