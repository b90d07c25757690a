import type { Logger } from '../shared/log.js'
import { CloudaiError } from '../shared/errors.js'
import { NO_EPOCH } from '../shared/leadership.js'
import type { Lease } from '../store/lease.js'
import type { Leadership } from './leadership.js'

/** What GET /api/status and /healthz say about who leads (issue 19; the OpenAPI document names these). */
export interface LeaderStatus {
  role: 'leader' | 'standby'
  /** The lease's epoch this master leads under, or (a standby) the leader's as last read; 0: none. */
  epoch: number
  /** The leader's HTTP API (`http://host:port`) and gRPC (`host:port`) addresses; null when unknown. */
  leader_api: string | null
  leader_grpc: string | null
}

/** The master's phases as the role sees them (master.ts owns them). */
export type MasterPhase = 'new' | 'starting' | 'standby' | 'taking-over' | 'running' | 'deposed' | 'closing' | 'closed'

export interface LeaderRoleOptions {
  /** Null: a store masters cannot share; this master always leads, unfenced. */
  leadership: Leadership | null
  phase: () => MasterPhase
  log: Logger
  /** When a failed publish() is tried again (--lease-renew). */
  retryMs: number
  /**
   * Called synchronously when the lease is lost while leading, before anything else runs: the
   * gates are closed already; it stops the parts that act (and resolves once they have).
   */
  onDeposed: (reason: string) => Promise<void>
}

/**
 * The master's side of "who leads" between the lease (leadership.ts) and the servers: what the
 * HTTP API and gRPC refuse while this master does not lead (503 / UNAVAILABLE CLOUDAI_NOT_LEADER,
 * naming the leader), what /api/status and /healthz say, and the stop when it is deposed.
 */
export class LeaderRole {
  private leadership: Leadership | null
  private deposition: Promise<void> | null = null
  private retryPublish: NodeJS.Timeout | null = null
  private wasDeposed = false

  constructor(private readonly opts: LeaderRoleOptions) {
    this.leadership = opts.leadership
    this.leadership?.on('lost', (reason) => this.lost(reason))
  }

  get epoch(): number {
    // While unfenced (runUnfenced) the lease's object still carries what it adopted at start.
    return (this.leadership ?? this.opts.leadership)?.epoch ?? NO_EPOCH
  }

  /** True once the lease was lost while leading: the process now answers as a standby. */
  get deposed(): boolean {
    return this.wasDeposed
  }

  /**
   * Null while this master leads; otherwise the refusal every route but status and health (and
   * every worker call) answers with. Checks the lease's timeout on each call: cheap (a clock read),
   * and the one check that holds after a pause.
   */
  refusal(): CloudaiError | null {
    // Deposed stays deposed, through the close that follows (standby-cycle.ts).
    if (this.wasDeposed) return this.notLeader('deposed')
    const phase = this.opts.phase()
    if (phase === 'standby' || phase === 'taking-over' || phase === 'deposed') return this.notLeader(phase)
    if (this.leadership && phase === 'running' && !this.leadership.leading) return this.notLeader('deposed')
    return null
  }

  status(): LeaderStatus {
    const l = this.leadership
    if (l === null) return { role: 'leader', epoch: NO_EPOCH, leader_api: null, leader_grpc: null }
    const leader = l.leader()
    const phase = this.opts.phase()
    const leading = (phase === 'running' || phase === 'closing') && l.leading
    return { role: leading ? 'leader' : 'standby', epoch: leader.epoch, leader_api: leader.api, leader_grpc: leader.grpc }
  }

  /**
   * A master whose store did not answer at start runs without the lease, as it did before there
   * was one (the journal loads the store once it answers): it leads, unfenced.
   */
  runUnfenced(): void {
    const leadership = this.leadership
    if (!leadership) return
    this.leadership = null
    leadership.acquireWhenAnswering(({ acquired, lease }) => {
      if (acquired) {
        this.leadership = leadership
        this.opts.log.info({ epoch: lease.epoch }, `The store answers: this master now holds the lease (epoch ${lease.epoch}) and its writes are fenced`)
        return
      }
      // Another master took the lease while this one led unfenced: it stops, as a deposed one.
      this.leadership = leadership
      this.lost(`the store answered with the lease held by ${lease.holder}: another master leads`)
    })
  }

  /**
   * Writes the bound addresses into the lease (a second acquire by its holder keeps the epoch). A
   * store that cannot take it now (its write lock held) does not stop the start: it is tried again
   * every renewal interval while this master leads.
   */
  async publish(): Promise<void> {
    const l = this.leadership
    if (!l || !l.leading) return
    try {
      const { acquired, lease } = await l.acquire()
      if (!acquired) l.lose(`the lease was taken by ${lease.holder} while this master started`)
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, `Could not write this master's addresses into the lease (${(err as Error).message}); trying again`)
      this.retryPublish ??= setTimeout(() => {
        this.retryPublish = null
        this.publish().catch(() => undefined)
      }, this.opts.retryMs)
    }
  }

  /** At shutdown, first: a deposition's stop finishes; a standby stops polling. */
  async closing(): Promise<void> {
    if (this.retryPublish) clearTimeout(this.retryPublish)
    this.retryPublish = null
    if (this.deposition) await this.deposition
    // The lease's own object, also while this master leads unfenced (its attempts stop here).
    const l = this.opts.leadership
    if (l && !l.leading) await l.close()
  }

  /** At shutdown, after the last write: the lease is let go so that a standby leads at once. */
  async release(): Promise<void> {
    await this.opts.leadership?.release()
  }

  private lost(reason: string): void {
    if (this.wasDeposed) return
    this.wasDeposed = true
    // Reading the lease from here on names the new leader in the refusals.
    this.leadership?.follow()
    this.deposition = this.opts.onDeposed(reason).catch((err: unknown) => {
      this.opts.log.error({ err }, 'Stopping the parts of a deposed master failed')
    })
  }

  private notLeader(phase: string): CloudaiError {
    const leader = this.leadership?.leader() ?? { api: null, grpc: null, epoch: NO_EPOCH, holder: null }
    const who = leader.api ? `the leader is ${leader.holder ?? 'another master'} at ${leader.api}` : 'the leader is not known yet'
    const what = phase === 'deposed' ? 'this master lost its lease and no longer leads' : phase === 'taking-over' ? 'this master is taking over (loading the store)' : 'this master is a standby'
    return new CloudaiError('CLOUDAI_NOT_LEADER', `${what}: ${who}`, { leader: leader.api, leader_grpc: leader.grpc, epoch: leader.epoch })
  }
}

/** A master started without --standby on a store whose lease a live master holds (exit 2). */
export function leaseHeldError(lease: Lease): CloudaiError {
  const inSec = Math.max(0, Math.ceil((lease.expiresAt - Date.now()) / 1000))
  const where = [lease.api ? `API ${lease.api}` : null, lease.grpc ? `gRPC ${lease.grpc}` : null].filter((x) => x !== null)
  return new CloudaiError(
    'CLOUDAI_LEASE_HELD',
    `the store's lease is held by master ${lease.holder}${where.length > 0 ? ` (${where.join(', ')})` : ''}, epoch ${lease.epoch}, renewed until about ${inSec}s from now: another master leads on this store; start this one with --standby to take over when it stops, or stop that one first`,
    { holder: lease.holder, epoch: lease.epoch, leader: lease.api, leader_grpc: lease.grpc },
  )
}
