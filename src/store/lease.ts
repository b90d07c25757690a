// The leader's lease (issue 19): the store is the arbiter between masters that share it, so no
// consensus of our own. Times are the store's clock wherever the store has one (MongoDB's $$NOW,
// SQLite's one host), never the caller's, so that two masters' clocks need not agree.

/** The lease as the store holds it. */
export interface Lease {
  /** The master id (--master-id) of its holder. */
  holder: string
  /** Starts at 1 and grows by one with every change of holder; a renewal keeps it. */
  epoch: number
  /** When it lapses unless renewed, epoch ms on the store's clock. */
  expiresAt: number
  /** The holder's HTTP API address (`http://host:port`) and gRPC address (`host:port`), for a standby to name. */
  api: string | null
  grpc: string | null
}

export interface LeaseRequest {
  holder: string
  ttlMs: number
  api: string | null
  grpc: string | null
}

/**
 * What a store that masters can share offers. The journal and the masters reach it only through
 * this interface.
 */
export interface LeaseStore {
  /**
   * Takes the lease when nobody holds it, when it has lapsed, or when `holder` holds it already
   * (then the epoch is kept). Answers with the lease as it stands after the call: `acquired`
   * false and another holder when it is held by a live master.
   */
  acquireLease(req: LeaseRequest): Promise<{ acquired: boolean; lease: Lease }>
  /** Extends the lease by ttlMs from now when `holder` still holds it at `epoch`; false (and no change) otherwise. */
  renewLease(req: { holder: string; epoch: number; ttlMs: number }): Promise<boolean>
  /** Lets the lease lapse at once when `holder` holds it at `epoch` (a clean shutdown); otherwise no change. */
  releaseLease(req: { holder: string; epoch: number }): Promise<void>
  /** The lease as stored, or null when none was ever taken. */
  readLease(): Promise<Lease | null>
  /**
   * From now on every write (workers, tasks, deletions) is conditional, in the same transaction,
   * on the stored lease's epoch still being `epoch`: a write of a deposed holder throws
   * CLOUDAI_STALE_EPOCH and changes nothing. null: unfenced (a master that shares its store with no one).
   */
  fence(epoch: number | null): void
}
