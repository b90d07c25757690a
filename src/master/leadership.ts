import { EventEmitter } from 'node:events'
import type { Logger } from '../shared/log.js'
import { CloudaiError } from '../shared/errors.js'
import { NO_EPOCH } from '../shared/leadership.js'
import type { Lease, LeaseStore } from '../store/lease.js'

// Who leads among the masters that share a store (issue 19): the store's lease is the arbiter.
// This file holds the lease's life on the master's side: taking it, renewing it, noticing that it
// is lost, giving it back. What the master does when it leads or stops leading is master.ts's.

/**
 * The lease's TTL in the store, from the master's --lease-timeout.
 *
 * The leader stops acting at `sentAt + timeout` on its own monotonic clock, where sentAt is when
 * it SENT the renewal that succeeded. The store extends the lease to `receivedAt + ttl` on the
 * store's clock, and receivedAt is after sentAt (a request cannot arrive before it left), so the
 * store's expiry is at least `sentAt + ttl` as both clocks measure elapsed time. A ttl equal to the
 * timeout would thus already put the expiry at or after the moment the holder stops, however slow
 * the network or the store; what is left is the two clocks' rates, which can differ by a quartz's
 * error (tens of ppm) and NTP's slewing (at most 500 ppm). DRIFT_ALLOWANCE (1%) covers that many
 * times over, and a floor of 20 ms covers timer granularity at the shortest timeouts tests use. A
 * longer ttl only delays a takeover after a crash by as much; a shorter one could let a standby take
 * over while the old leader still acts. (A wall-clock jump on the store's clock is the store's to
 * rule out: MongoDB's $$NOW on one primary, SQLite on one host.)
 */
export function leaseTtlMs(timeoutMs: number): number {
  return timeoutMs + Math.max(20, Math.ceil(timeoutMs * DRIFT_ALLOWANCE))
}
const DRIFT_ALLOWANCE = 0.01

export interface LeadershipOptions {
  lease: LeaseStore
  /**
   * --master-id: the lease's holder. A master restarted with the same id (after a crash) takes its
   * own lease back at once (the store keeps the epoch); two live masters must not share one, which
   * the data directory's lock rules out on SQLite and a standby checks before it takes the lease.
   */
  masterId: string
  renewMs: number
  timeoutMs: number
  /** Where this master answers, written into the lease for standbys to name. */
  address: () => { api: string | null; grpc: string | null }
  log: Logger
  /** Monotonic ms (performance.now): a wall-clock step must neither extend nor cut the lease. */
  now?: () => number
}

export interface LeadershipEvents {
  /** This master now holds the lease at `epoch` (fenced already): load and lead. */
  acquired: [epoch: number]
  /** It no longer does (timeout, refused renewal, a fenced write): stop acting at once. */
  lost: [reason: string]
}

/**
 * The master's side of the lease. A leader renews every `renewMs`; once `timeoutMs` has passed on
 * its own monotonic clock since it sent the last renewal that succeeded, it has lost the lease,
 * whatever the store says: `leading` answers false from that instant and `lost` is emitted (once).
 * The check is made on every read of `leading` and `epoch`, not only by a timer: after a pause
 * (SIGSTOP, a stalled VM) I/O callbacks run before the timers do, and a gate that trusted the
 * timer would let them act for one more turn.
 */
/** How often a standby reads the lease (cheap; at most every --lease-renew): what a released lease waits for. */
const STANDBY_READ_MS = 200

export class Leadership extends EventEmitter<LeadershipEvents> {
  readonly holder: string
  private readonly now: () => number
  private state: 'standby' | 'leader' | 'closed' = 'standby'
  private currentEpoch = NO_EPOCH
  /** Monotonic ms after which this leader must no longer act. */
  private validUntil = 0
  private renewTimer: NodeJS.Timeout | null = null
  private deadlineTimer: NodeJS.Timeout | null = null
  private pollTimer: NodeJS.Timeout | null = null
  private polling = false
  private inflight: Promise<unknown> | null = null
  /** The lease as last read or written: whom a standby names. */
  private known: Lease | null = null
  private sameIdWarned = false

  constructor(private readonly opts: LeadershipOptions) {
    super()
    this.now = opts.now ?? (() => performance.now())
    this.holder = opts.masterId
  }

  /** True while this master holds the lease and its timeout has not passed; loses it when it has. */
  get leading(): boolean {
    if (this.state !== 'leader') return false
    if (this.now() < this.validUntil) return true
    this.lose(`the lease was not renewed within --lease-timeout (${this.opts.timeoutMs}ms)`)
    return false
  }

  /**
   * The epoch this master acts under: its lease's while it leads, the last one it held after
   * (calls made with it are refused by whoever has seen a newer one), NO_EPOCH before it ever led.
   * Read on every call to a worker: it checks the lease's timeout as `leading` does.
   */
  get epoch(): number {
    if (this.state === 'leader') void this.leading
    return this.currentEpoch
  }

  /** The lease as last seen (null: never taken, or not read yet). */
  get lease(): Lease | null {
    return this.known
  }

  /** The leader's addresses as far as this master knows: itself while it leads. */
  leader(): { epoch: number; api: string | null; grpc: string | null; holder: string | null } {
    if (this.leading) {
      const { api, grpc } = this.opts.address()
      return { epoch: this.currentEpoch, api, grpc, holder: this.holder }
    }
    const l = this.known
    if (!l || l.holder === this.holder) return { epoch: l?.epoch ?? NO_EPOCH, api: null, grpc: null, holder: null }
    return { epoch: l.epoch, api: l.api, grpc: l.grpc, holder: l.holder }
  }

  /**
   * One attempt at the lease. Acquired: the store is fenced at the new epoch before this returns,
   * renewals start, and the caller leads. Otherwise the lease as it stands (its holder).
   */
  async acquire(): Promise<{ acquired: boolean; lease: Lease }> {
    if (this.state === 'closed') throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'the master is shutting down')
    const { api, grpc } = this.opts.address()
    const sentAt = this.now()
    const run = this.opts.lease.acquireLease({ holder: this.holder, ttlMs: leaseTtlMs(this.opts.timeoutMs), api, grpc })
    this.inflight = run
    const result = await run.finally(() => (this.inflight = null))
    this.known = result.lease
    // close() may have run while the store answered.
    if (!result.acquired || this.isClosed()) return result
    const fresh = this.state !== 'leader'
    this.currentEpoch = result.lease.epoch
    // Before anything is written under it: every write from here on needs this epoch in the store.
    this.opts.lease.fence(this.currentEpoch)
    this.state = 'leader'
    this.extend(sentAt)
    if (fresh) {
      this.opts.log.info({ epoch: this.currentEpoch, holder: this.holder, leaseTimeoutMs: this.opts.timeoutMs, ttlMs: leaseTtlMs(this.opts.timeoutMs) }, `This master holds the lease (epoch ${this.currentEpoch}): it leads`)
      this.scheduleRenewal()
    }
    return result
  }

  /**
   * A master that leads unfenced at start (the store could not give it the lease: SQLite's write
   * lock held by another process) whose stored lease is its own (it restarted): its calls to
   * workers carry that lease's epoch meanwhile, so that workers that followed it before do not
   * refuse it as a deposed master. A lease of another holder is not adopted (epoch stays as it is),
   * nor one the store cannot read now.
   */
  async adoptOwnEpoch(): Promise<void> {
    try {
      const l = await this.opts.lease.readLease()
      this.known = l
      if (l && l.holder === this.holder && this.state === 'standby' && this.currentEpoch === NO_EPOCH) this.currentEpoch = l.epoch
    } catch (err) {
      this.opts.log.debug({ err: (err as Error).message }, 'could not read the lease either; calls carry no epoch until the lease is taken')
    }
  }

  /** Reads the lease as stored (whom a standby names) without taking it. */
  async refresh(): Promise<void> {
    this.known = await this.opts.lease.readLease()
  }

  /**
   * As a standby: reads the lease every STANDBY_READ_MS (at most every `renewMs`) and tries for it
   * when it reads as lapsed or released, and every `renewMs` in any case (the store's clock is the
   * one that counts, and this host's may be behind it), until it is acquired (then `acquired`) or
   * close(). Reads are cheap (no write lock): a leader's SIGTERM release is taken within a read's
   * interval, not a renewal's.
   */
  waitForLease(): void {
    if (this.polling || this.state !== 'standby') return
    this.polling = true
    const readMs = Math.min(this.opts.renewMs, STANDBY_READ_MS)
    let triedAt = -Infinity
    const attempt = (): void => {
      this.pollTimer = null
      if (this.state !== 'standby') return
      const due = this.now() - triedAt >= this.opts.renewMs
      this.acquireAsStandby(due).then(
        (r) => {
          if (r.tried) triedAt = this.now()
          if (r.acquired && this.state === 'leader') {
            this.polling = false
            this.emit('acquired', this.currentEpoch)
            return
          }
          if (this.state === 'standby') this.pollTimer = setTimeout(attempt, readMs)
        },
        (err: unknown) => {
          triedAt = this.now()
          this.opts.log.warn({ err: (err as Error).message }, `Could not read the lease (${(err as Error).message}); trying again in ${this.opts.renewMs}ms`)
          if (this.state === 'standby') this.pollTimer = setTimeout(attempt, this.opts.renewMs)
        },
      )
    }
    attempt()
  }

  /**
   * A master that could not reach the store at start leads unfenced meanwhile: tries for the lease
   * every `renewMs` until the store answers, then says how it went. Acquired: fenced and renewing,
   * as after acquire(). Not acquired: another master holds it, and this one must stop.
   */
  acquireWhenAnswering(done: (result: { acquired: boolean; lease: Lease }) => void): void {
    if (this.polling || this.state !== 'standby') return
    this.polling = true
    const attempt = (): void => {
      this.pollTimer = null
      if (this.state !== 'standby') return
      this.acquire().then(
        (r) => {
          this.polling = false
          done(r)
        },
        () => {
          if (this.state === 'standby') this.pollTimer = setTimeout(attempt, this.opts.renewMs)
        },
      )
    }
    attempt()
  }

  /**
   * A standby takes the lease only from another holder: a live lease in its own name is another
   * process started with the same --master-id, which a second acquire would make a second leader.
   */
  private async acquireAsStandby(due: boolean): Promise<{ acquired: boolean; lease: Lease | null; tried: boolean }> {
    const current = await this.opts.lease.readLease()
    this.known = current
    const live = current !== null && current.expiresAt > Date.now()
    if (current && current.holder === this.holder && live) {
      if (!this.sameIdWarned) this.opts.log.error({ holder: current.holder }, `The lease is held by a master with this standby's --master-id (${current.holder}): give each master its own --master-id; this standby does not take over while it runs`)
      this.sameIdWarned = true
      return { acquired: false, lease: current, tried: false }
    }
    // A lease that reads as live by this host's clock is tried for only once a renewal interval.
    if (live && !due) return { acquired: false, lease: current, tried: false }
    return { ...(await this.acquire()), tried: true }
  }

  /** After a loss: reads the lease every `renewMs` (never taking it) so that refusals name the new leader. */
  follow(): void {
    if (this.polling || this.state !== 'standby') return
    this.polling = true
    const read = (): void => {
      this.pollTimer = null
      if (this.state !== 'standby') return
      this.opts.lease.readLease().then(
        (lease) => {
          this.known = lease
        },
        (err: unknown) => this.opts.log.debug({ err: (err as Error).message }, 'could not read the lease'),
      ).finally(() => {
        if (this.state === 'standby' && this.polling) this.pollTimer = setTimeout(read, this.opts.renewMs)
      })
    }
    read()
  }

  /**
   * The lease is lost (a timeout, a refused renewal, a write the store refused as stale): from
   * now on `leading` is false, and `lost` is emitted synchronously so that the master stops before
   * it returns to the event loop. The lease is let go in the store too (when it still names this
   * master), so that a standby need not wait out its TTL. Idempotent.
   */
  lose(reason: string): void {
    if (this.state !== 'leader') return
    this.state = 'standby'
    this.clearTimers()
    this.opts.log.error({ epoch: this.currentEpoch, reason }, `This master lost the lease (epoch ${this.currentEpoch}): ${reason}; it stops acting`)
    this.giveBack()
    this.emit('lost', reason)
  }

  /** SIGTERM: lets the lease lapse at once so that a standby takes over without waiting. Then closed. */
  async release(): Promise<void> {
    const held = this.state === 'leader'
    this.state = 'closed'
    this.clearTimers()
    if (this.inflight) await this.inflight.catch(() => undefined)
    if (!held) return
    try {
      await this.opts.lease.releaseLease({ holder: this.holder, epoch: this.currentEpoch })
      this.opts.log.info({ epoch: this.currentEpoch }, `Lease released (epoch ${this.currentEpoch}): a standby takes over at once`)
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, `Could not release the lease (${(err as Error).message}): a standby takes over once it lapses`)
    }
  }

  /** Stops renewing and polling without touching the lease. Idempotent. */
  async close(): Promise<void> {
    this.state = 'closed'
    this.clearTimers()
    if (this.inflight) await this.inflight.catch(() => undefined)
  }

  private extend(sentAt: number): void {
    this.validUntil = sentAt + this.opts.timeoutMs
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer)
    this.deadlineTimer = setTimeout(() => {
      this.deadlineTimer = null
      void this.leading
    }, Math.max(0, this.validUntil - this.now()) + 1)
  }

  private scheduleRenewal(): void {
    this.renewTimer = setTimeout(() => {
      this.renewTimer = null
      this.renew()
    }, this.opts.renewMs)
  }

  private renew(): void {
    if (!this.leading) return
    const epoch = this.currentEpoch
    const sentAt = this.now()
    const run = this.opts.lease.renewLease({ holder: this.holder, epoch, ttlMs: leaseTtlMs(this.opts.timeoutMs) })
    this.inflight = run
    run.then(
      (renewed) => {
        this.inflight = null
        if (this.state !== 'leader' || this.currentEpoch !== epoch) return
        if (!renewed) {
          this.lose('the store refused the renewal: another master holds the lease')
          return
        }
        // Too late is too late: past the deadline the leader has stopped, whatever the store did.
        if (!this.leading) return
        this.extend(sentAt)
        this.scheduleRenewal()
      },
      (err: unknown) => {
        this.inflight = null
        if (!this.leading) return
        const left = Math.round(this.validUntil - this.now())
        this.opts.log.warn({ err: (err as Error).message, leftMs: left }, `Could not renew the lease (${(err as Error).message}); ${left}ms left before this master stops acting`)
        this.scheduleRenewal()
      },
    )
  }

  /** After a loss: the lease, when the store still names this master at its epoch, lapses now. */
  private giveBack(): void {
    this.opts.lease.releaseLease({ holder: this.holder, epoch: this.currentEpoch }).catch((err: unknown) => {
      this.opts.log.debug({ err: (err as Error).message }, 'release of a lost lease failed (it lapses by itself)')
    })
  }

  private isClosed(): boolean {
    return this.state === 'closed'
  }

  private clearTimers(): void {
    for (const t of [this.renewTimer, this.deadlineTimer, this.pollTimer]) if (t) clearTimeout(t)
    this.renewTimer = this.deadlineTimer = this.pollTimer = null
    this.polling = false
  }
}

/** A store that masters can share offers the lease (src/store/lease.ts). */
export function leaseStoreOf(store: object): LeaseStore | null {
  const s = store as Partial<LeaseStore>
  return typeof s.acquireLease === 'function' && typeof s.renewLease === 'function' && typeof s.releaseLease === 'function' && typeof s.readLease === 'function' && typeof s.fence === 'function' ? (s as LeaseStore) : null
}
