import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { CloudaiError } from '../shared/errors.js'
import { NO_EPOCH } from '../shared/leadership.js'
import type { Logger } from '../shared/log.js'

// The worker's side of fencing (issue 19): the highest master epoch it has seen, kept in
// <dataDir>/master-epoch.json across restarts. A master's epoch comes from the lease in the store
// and grows with every change of leader, so a call carrying a lower one comes from a deposed leader
// (paused, partitioned, or not yet aware it lost its lease): it is refused and changes nothing. A
// raise is on disk (file and directory entry fsynced) before the call that raised it is answered:
// a worker that restarts can never fall back to obeying the master it had already seen deposed.
//
// 0 is what a master without a lease sends, and what a CloudAI master's missing field decodes as:
// it is taken only while the worker has never seen more. Once a leader with a lease has called,
// a master without one is refused like any deposed leader.

export const EPOCH_FILE = 'master-epoch.json'

/** The MasterRegister / AssignTask / CancelTask calls that carry an epoch. */
export type EpochMethod = 'MasterRegister' | 'AssignTask' | 'CancelTask'

/** What the file holds: the epoch, and who raised it when (for an operator reading it). */
interface EpochRecord {
  epoch: number
  master: string | null
  at: number
}

/**
 * A master_epoch from the wire: a whole number from 0 up (proto int64, decoded as a number).
 * @throws CloudaiError CLOUDAI_BAD_FIELD
 */
export function validateEpoch(value: unknown, field = 'master_epoch'): number {
  const n = value ?? NO_EPOCH
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}, got ${String(n)}`)
  }
  return n
}

export class SeenEpoch {
  private readonly file: string
  private highest = NO_EPOCH

  constructor(private readonly dataDir: string, private readonly log: Logger) {
    this.file = join(dataDir, EPOCH_FILE)
  }

  /** The highest epoch seen so far (NO_EPOCH: none above 0). */
  get value(): number {
    return this.highest
  }

  /**
   * Loads what an earlier run saw. No file: nothing seen yet. A file that cannot be read is a
   * start refused, not an epoch forgotten: forgetting it would let a deposed leader back in.
   * @throws CloudaiError CLOUDAI_BAD_CONFIG
   */
  open(): number {
    rmSync(`${this.file}.tmp`, { force: true })
    let text: string
    try {
      text = readFileSync(this.file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.highest
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot read ${this.file}: ${(err as Error).message}`)
    }
    let epoch: number
    try {
      const record = JSON.parse(text) as Partial<EpochRecord> | null
      // No default here: a record without its epoch is damage, not "nothing seen".
      if (typeof record?.epoch !== 'number') throw new Error('it has no epoch')
      epoch = validateEpoch(record.epoch, 'epoch')
    } catch (err) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${this.file} does not hold the master epoch this worker has seen (${(err as Error).message}): it fences off deposed masters, so the worker does not start without it; delete the file only if no deposed master can still reach this worker`)
    }
    this.highest = epoch
    return epoch
  }

  /**
   * Admits a call carrying `epoch`, or refuses it. A higher epoch is written (durably) before this
   * returns, so the caller answers only once it is on disk.
   * @param master who called, for the log and the file (the address MasterRegister names; null otherwise)
   * @throws CloudaiError CLOUDAI_STALE_EPOCH when `epoch` is below the highest seen; nothing changes
   */
  admit(method: EpochMethod, epoch: number, master: string | null = null): void {
    if (epoch < this.highest) {
      throw new CloudaiError('CLOUDAI_STALE_EPOCH', `${method} carries master epoch ${epoch}, but this worker has seen epoch ${this.highest}: it comes from a master that is no longer the leader`, { epoch, seen: this.highest })
    }
    if (epoch === this.highest) return
    this.write({ epoch, master, at: Date.now() })
    const previous = this.highest
    this.highest = epoch
    this.log.info({ epoch, previous, master, rpc: method }, `Master epoch ${epoch} seen (${method}${master ? ` from ${master}` : ''}); calls with an epoch below it are refused from now on`)
  }

  /** tmp file, fsync, rename, fsync of the directory: the old record or the new one, never half of one. */
  private write(record: EpochRecord): void {
    const tmp = `${this.file}.tmp`
    const fd = openSync(tmp, 'w', 0o600)
    try {
      writeSync(fd, JSON.stringify(record))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, this.file)
    let dir: number | undefined
    try {
      dir = openSync(this.dataDir, 'r')
      fsyncSync(dir)
    } catch {
      // Some platforms refuse fsync on directories; the file itself is synced.
    } finally {
      if (dir !== undefined) closeSync(dir)
    }
  }
}
