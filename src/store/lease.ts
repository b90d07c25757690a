// The leader's lease (issue 19): the store is the arbiter between masters that share it, so no
// consensus of our own. Times are the store's clock wherever the store has one (MongoDB's $$NOW,
// SQLite's one host), never the caller's, so that two masters' clocks need not agree.
import { CloudaiError } from '../shared/errors.js'

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
  /**
   * Extends the lease by ttlMs from now when `holder` still holds it at `epoch`; false (and no
   * change) otherwise. A lease that lapsed and that nobody took since is still the holder's.
   */
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

// --- the rules every store applies ---------------------------------------------------------------
// The stores differ in how they make one change atomic (a SQLite IMMEDIATE transaction, one
// MongoDB findOneAndUpdate, a synchronous step in memory), not in what the change is: these say it.

/** A lease lapses at its expiry: from then on anyone may take it (releaseLease sets it to now). */
export function leaseLapsed(lease: Lease, now: number): boolean {
  return lease.expiresAt <= now
}

/**
 * The lease after `req` asks for it at `now` (the store's clock): taken when there is none, when
 * it has lapsed, or when `req.holder` holds it already (then its epoch is kept, lapsed or not:
 * nobody held it in between); a change of holder is epoch + 1. Otherwise unchanged, and refused.
 */
export function acquireOutcome(current: Lease | null, req: LeaseRequest, now: number): { acquired: boolean; lease: Lease } {
  if (current && current.holder !== req.holder && !leaseLapsed(current, now)) return { acquired: false, lease: current }
  const epoch = current === null ? 1 : current.holder === req.holder ? current.epoch : current.epoch + 1
  return { acquired: true, lease: { holder: req.holder, epoch, expiresAt: now + req.ttlMs, api: req.api, grpc: req.grpc } }
}

/**
 * A renewal or a release applies only to the holder at its epoch. A lapsed lease nobody took since
 * is still its holder's (same epoch, nobody wrote in between), so a late renewal of it holds.
 */
export function holdsLease(current: Lease | null, req: { holder: string; epoch: number }): current is Lease {
  return current !== null && current.holder === req.holder && current.epoch === req.epoch
}

/** What a fenced write of a deposed holder throws: nothing of it was written. */
export function staleEpochError(fence: number, stored: number | null): CloudaiError {
  const now = stored === null ? 'no lease is stored' : `the stored lease is at epoch ${stored}`
  return new CloudaiError('CLOUDAI_STALE_EPOCH', `write refused: this master leads at epoch ${fence} but ${now} (another master has taken over)`, { epoch: fence, current: stored })
}

/** Checks what a caller asks of the lease: a holder, a whole positive ttl, an epoch. */
export function checkLeaseRequest(req: { holder: string; ttlMs?: number; epoch?: number }): void {
  if (typeof req.holder !== 'string' || req.holder === '') throw new CloudaiError('CLOUDAI_BAD_FIELD', 'a lease needs a holder (the master id)')
  if (req.ttlMs !== undefined && !(Number.isSafeInteger(req.ttlMs) && req.ttlMs > 0)) throw new CloudaiError('CLOUDAI_BAD_FIELD', `a lease ttl must be a whole number of ms above 0, not ${req.ttlMs}`)
  if (req.epoch !== undefined && !(Number.isSafeInteger(req.epoch) && req.epoch >= 1)) throw new CloudaiError('CLOUDAI_BAD_FIELD', `a lease epoch must be a whole number from 1, not ${req.epoch}`)
}
