import * as grpc from '@grpc/grpc-js'
import { LEADER_GRPC_METADATA } from '../shared/leadership.js'
import type { Logger } from '../shared/log.js'
import { Backoff } from '../shared/backoff.js'
import { NO_CLUSTER_AUTH, REFUSAL_LOG_INTERVAL_MS, type ClusterAuth } from '../shared/cluster-auth.js'
import { clientKeepaliveOptions, KEEPALIVE, type Keepalive } from '../shared/keepalive.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../shared/proto.js'
import type { WorkerSpecs, WorkerUsage } from '../shared/types.js'
import { validateAddress } from '../shared/validation.js'
import type { AckMsg, HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, RunningTaskMsg, TaskResultMsg } from '../shared/wire.js'
import { AUTHORIZATION_METADATA } from '../shared/worker-credential.js'

type HeartbeatStream = grpc.ClientDuplexStream<HeartbeatMsg, HeartbeatAckMsg>

/** How long a stream we half-closed may wait for the master's status before it is cancelled. */
const STREAM_END_GRACE_MS = 1000

export interface MasterLinkOptions {
  workerId: string
  /** host:port the master should dial us on (sent as worker_ip). */
  advertise: () => string
  specs: () => WorkerSpecs
  usage: () => WorkerUsage
  runningTasks: () => RunningTaskMsg[]
  heartbeatIntervalMs: number
  joinMaxBackoffMs: number
  /** Deadline of one RegisterWorker call. */
  registerTimeoutMs?: number
  /** Called each time the worker is registered with a master (first time, re-join, new master). */
  onConnected?: () => void
  /**
   * 'stream' (default): heartbeats on one StreamHeartbeats call, falling back to SendHeartbeat with
   * a master that lacks it. 'unary': always SendHeartbeat.
   */
  heartbeatMode?: 'stream' | 'unary'
  /** TLS credentials and the cluster token every call to the master carries (default: neither). */
  auth?: ClusterAuth
  /** This worker's own token, sent as `authorization: Bearer` on every call to the master (null: none). */
  token?: string | null
  /**
   * The master's server certificate must name spiffe://cloudai/master, beyond the CA and hostname
   * checks (a worker whose own certificate carries its SPIFFE ID). Default false.
   */
  masterCertificate?: boolean
  /**
   * Pings on the connection to the master while a call is open (the heartbeat stream always is):
   * a master that stopped answering breaks the stream within timeMs + timeoutMs, and the worker
   * registers again. Default KEEPALIVE (20 s).
   */
  keepalive?: Keepalive
  log: Logger
  now?: () => number
}

/** `dropped`: the master we were registered with no longer has us (unregistered); we wait for its MasterRegister. */
export type LinkState = 'idle' | 'joining' | 'connected' | 'dropped' | 'closed'

/**
 * The master's refusals that mean it dropped this worker (unregistered it, which also revokes its
 * token): retrying cannot change them. Only an operator can, by registering the worker again,
 * after which the master calls MasterRegister and the link follows it.
 */
const DROPPED_CODES: ReadonlySet<string> = new Set(['CLOUDAI_WORKER_NOT_REGISTERED', 'CLOUDAI_WORKER_TOKEN_INVALID'])
const STOPPED = 'stopped registering with it until it calls MasterRegister again (after `cloudai register`; a new registration issues a new token, which this worker must be restarted with if it runs with one)'

/**
 * The worker's connection to its master: RegisterWorker, then heartbeats; when heartbeats fail
 * (master restarted, network cut, master forgot us) it goes back to registering, with capped
 * exponential backoff and jitter, until it is connected again or told to follow another master.
 *
 * Heartbeats go on one StreamHeartbeats call per registration: a broken stream is noticed the
 * moment the connection drops or the master refuses, not at the next heartbeat's deadline. A
 * master without that RPC gets unary SendHeartbeat calls instead.
 *
 * Following is idempotent: asked to follow the master it is already connected to, it does nothing;
 * asked while a registration to that master is under way, it waits for that one. Each switch of
 * master starts a new epoch so that loops of the old one stop by themselves (the link's own
 * counter, not the masters' lease epoch).
 *
 * Joined with several addresses (`--master a,b`: a leader and its standbys, issue 19), a failed
 * registration moves on to the next address of the list, at once, and the backoff comes once per
 * round through the list. A standby refuses with CLOUDAI_NOT_LEADER and names the leader
 * (LEADER_GRPC_METADATA): that address is tried next when it is one of the list; one outside the
 * list is never dialled (only the operator's list is trusted), the round goes on.
 */
export class MasterLink {
  private state: LinkState = 'idle'
  private address: string | null = null
  private client: MasterWorkerClient | null = null
  private epoch = 0
  private registering: Promise<void> | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private stream: HeartbeatStream | null = null
  /** The current master answered UNIMPLEMENTED to StreamHeartbeats; forgotten on switchTo. */
  private noHeartbeatStream = false
  private joinTimer: NodeJS.Timeout | null = null
  private readonly backoff: Backoff
  private failuresLogged = false
  /** A standby's refusal was logged in this run of failures. */
  private standbyLogged = false
  /** Registered with the current master at least once (a refusal then means it dropped us). */
  private registeredHere = false
  /** When a refusal of our cluster token was last logged at error (null: not in this run). */
  private tokenRefusalLoggedAt: number | null = null
  private readonly auth: ClusterAuth
  private readonly now: () => number
  /** The addresses joined (--master a,b), in order; empty when following MasterRegister only. */
  private candidates: readonly string[] = []
  /** The leader the last standby named, when it is one of `candidates`: the next to try. */
  private leaderHint: string | null = null
  /** Registrations failed in a row since the last backoff: a round is one per candidate. */
  private roundAttempts = 0

  constructor(private readonly opts: MasterLinkOptions) {
    this.backoff = new Backoff(Math.min(200, opts.joinMaxBackoffMs), opts.joinMaxBackoffMs)
    this.auth = opts.auth ?? NO_CLUSTER_AUTH
    this.now = opts.now ?? Date.now
  }

  get masterAddress(): string | null {
    return this.address
  }

  get status(): LinkState {
    return this.state
  }

  /** True while registered with a master (heartbeats flowing). */
  get connected(): boolean {
    return this.state === 'connected' && this.client !== null
  }

  /** ReportTaskCompletion to the master we are registered with; rejects at once when there is none. */
  reportCompletion(result: TaskResultMsg, timeoutMs: number): Promise<AckMsg> {
    const client = this.client
    if (this.state !== 'connected' || !client) return Promise.reject(new Error('not registered with a master'))
    return callUnary<TaskResultMsg, AckMsg>(client, 'ReportTaskCompletion', result, timeoutMs).promise
  }

  /**
   * Follows the master at `address` and registers with it once. Resolves when registered; rejects
   * with the master's reason otherwise, and keeps retrying in the background.
   */
  async follow(address: string): Promise<void> {
    if (this.state === 'closed') throw new Error('the worker is shutting down')
    if (address === this.address) {
      if (this.state === 'connected') return
      if (this.registering) return this.registering
    } else {
      this.switchTo(address)
    }
    this.clearJoinTimer()
    try {
      await this.registerOnce()
    } catch (err) {
      this.scheduleJoin()
      throw err
    }
  }

  /**
   * Worker-initiated join: register with the first of `addresses`, then the next ones in turn
   * until one takes us, retrying with backoff until it works. Does not wait.
   */
  join(addresses: readonly string[]): void {
    if (this.state === 'closed' || addresses.length === 0) return
    this.candidates = [...addresses]
    if (this.address === null || !this.candidates.includes(this.address)) this.switchTo(addresses[0]!)
    this.clearJoinTimer()
    void this.registerOnce().catch(() => this.scheduleJoin())
  }

  /**
   * A new master: a new client, and its registration starts afresh. `fresh` false is the next
   * address of a round through the list: the round's backoff and its failure log go on.
   */
  private switchTo(address: string, fresh = true): void {
    this.epoch++
    this.stopHeartbeats()
    this.clearJoinTimer()
    this.client?.close()
    this.address = address
    // Every call on this client (registration, both kinds of heartbeats, results) carries the
    // worker's token when it has one, beside the cluster token.
    const token = this.opts.token ?? null
    this.client = new (loadProto().Client)(address, this.auth.channelCredentials(this.opts.masterCertificate === true ? 'master' : 'any'), this.auth.clientOptions({
      'grpc.enable_retries': 0,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      ...(token !== null ? { interceptors: [bearerInterceptor(token)] } : {}),
      ...clientKeepaliveOptions(this.opts.keepalive ?? KEEPALIVE),
    }))
    this.registering = null
    this.state = 'joining'
    this.noHeartbeatStream = false
    this.registeredHere = false
    this.leaderHint = null
    if (!fresh) return
    this.backoff.reset()
    this.roundAttempts = 0
    this.failuresLogged = false
    this.standbyLogged = false
    this.tokenRefusalLoggedAt = null
  }

  private registerOnce(): Promise<void> {
    if (this.registering) return this.registering
    const epoch = this.epoch
    this.state = 'joining'
    this.registering = this.register(epoch).finally(() => {
      if (this.epoch === epoch) this.registering = null
    })
    return this.registering
  }

  private async register(epoch: number): Promise<void> {
    const client = this.client
    const address = this.address
    if (!client || !address) throw new Error('no master to register with')
    const specs = this.opts.specs()
    const { promise } = callUnary<object, RegisterAckMsg>(
      client,
      'RegisterWorker',
      { worker_id: this.opts.workerId, worker_ip: this.opts.advertise(), total_cpu: specs.cpu, total_memory: specs.memory, total_storage: specs.storage, total_gpu: specs.gpu },
      this.opts.registerTimeoutMs ?? 3000,
    )
    let ack: RegisterAckMsg
    try {
      ack = await promise
    } catch (err) {
      const e = err as grpc.ServiceError
      const code = e.metadata?.get('cloudai-error-code')[0]
      const drop = epoch === this.epoch && this.registeredHere && typeof code === 'string' && DROPPED_CODES.has(code)
      if (e.code === grpc.status.UNAUTHENTICATED || code === 'CLOUDAI_WRONG_WORKER') this.logTokenRefused(address, e.details || e.message, typeof code === 'string' ? code : null, drop)
      else if (code === 'CLOUDAI_NOT_LEADER' && epoch === this.epoch) this.standby(address, e.metadata?.get(LEADER_GRPC_METADATA)[0])
      else if (drop) this.opts.log.warn({ master: address, code, reason: e.details || e.message }, `Master ${address} no longer has worker ${this.opts.workerId} (${e.details || e.message}): it was unregistered; ${STOPPED}`)
      else this.logFailure(address, `RegisterWorker failed: ${e.details || e.message}`)
      if (drop) this.dropped()
      throw new Error(e.details || e.message)
    }
    if (epoch !== this.epoch || this.state === 'closed') return
    if (!ack.success) {
      this.logFailure(address, `master refused registration: ${ack.message}`)
      throw new Error(ack.message || 'the master refused RegisterWorker')
    }
    this.state = 'connected'
    this.registeredHere = true
    this.roundAttempts = 0
    this.backoff.reset()
    this.failuresLogged = false
    this.standbyLogged = false
    this.tokenRefusalLoggedAt = null
    this.opts.log.info({ master: address, specs }, `Registered with master ${address}; sending heartbeats every ${this.opts.heartbeatIntervalMs}ms`)
    this.startHeartbeats(epoch)
    try {
      this.opts.onConnected?.()
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, 'onConnected hook failed')
    }
  }

  /**
   * The master we were registered with refused us as no longer registered (or our token as
   * revoked): it dropped us. Re-registering every few seconds could never work, so the join loop
   * stops here (the refusal was said once). The tasks it ran go on (the master cancels those it
   * wants stopped) and their results stay in the outbox; registered again, the master's
   * MasterRegister brings the link back (follow), and the outbox is delivered then.
   */
  private dropped(): void {
    this.state = 'dropped'
    this.clearJoinTimer()
  }

  /** Logs the first failure of a run of failures at warn, the rest at debug: no log spam. */
  private logFailure(address: string, message: string): void {
    if (this.failuresLogged) {
      this.opts.log.debug({ master: address }, message)
    } else {
      this.failuresLogged = true
      this.opts.log.warn({ master: address }, `${message}; retrying with backoff`)
    }
  }

  /**
   * The master refused our cluster token or our worker token (or its absence). Retrying cannot fix
   * that until someone changes a token, so it is an error, said with the reason and what to check,
   * and said again once a minute while it lasts rather than once and then only at debug level.
   */
  private logTokenRefused(address: string, reason: string, code: string | null, dropped = false): void {
    this.failuresLogged = true
    const now = this.now()
    if (!dropped && this.tokenRefusalLoggedAt !== null && now - this.tokenRefusalLoggedAt < REFUSAL_LOG_INTERVAL_MS) {
      this.opts.log.debug({ master: address, reason }, `Master ${address} refused RegisterWorker: ${reason}`)
      return
    }
    this.tokenRefusalLoggedAt = now
    let ours: string
    if (code === null || code === 'CLOUDAI_UNAUTHENTICATED') {
      ours = `${this.auth.hasToken ? 'the cluster token this worker sends does not match the master\'s' : 'this worker sends no cluster token'} (set the same --cluster-token or CLOUDAI_CLUSTER_TOKEN on both)`
    } else if (code === 'CLOUDAI_WRONG_WORKER') {
      ours = `the worker token or the certificate this worker runs with is another worker's, not ${this.opts.workerId}'s`
    } else {
      ours = this.opts.token
        ? 'the master does not take the worker token this worker runs with (`cloudai token rotate <id>` issues a new one)'
        : 'this worker runs without its worker token (start it with --token, --token-file or CLOUDAI_WORKER_TOKEN, as `cloudai register` printed it)'
    }
    this.opts.log.error(
      { master: address, reason, code: code ?? 'CLOUDAI_UNAUTHENTICATED' },
      `Master ${address} refused RegisterWorker: ${reason}; ${ours}; ${dropped ? STOPPED : 'retrying with backoff'}`,
    )
  }

  /**
   * The master at `address` is a standby (CLOUDAI_NOT_LEADER). The leader it names goes next when
   * it is one of the list; otherwise the round goes on through the list.
   */
  private standby(address: string, named: unknown): void {
    let leader: string | null = null
    try {
      if (typeof named === 'string' && named !== '') leader = validateAddress(named, 'leader')
    } catch {
      leader = null
    }
    const listed = leader !== null && leader !== address && this.candidates.includes(leader)
    if (listed) this.leaderHint = leader
    const next = listed
      ? `trying the leader ${leader} next`
      : leader !== null && leader !== address
        ? `it names the leader ${leader}, which is not one of --master (${this.candidates.join(',') || 'none'}): not dialled`
        : 'it names no leader'
    const message = `Master ${address} is a standby, not the leader: ${next}`
    // Once per run of failures at info (standbys refuse every round while the leader is away).
    if (this.standbyLogged) {
      this.opts.log.debug({ master: address, leader }, message)
    } else {
      this.standbyLogged = true
      this.opts.log.info({ master: address, leader }, message)
    }
  }

  /**
   * After a failed registration: the same master again after the backoff, or with a list the next
   * address (the leader a standby named first), at once within a round and after the backoff once
   * a round through the whole list failed.
   */
  private scheduleJoin(): void {
    if (this.state === 'closed' || this.state === 'dropped' || this.joinTimer || this.state === 'connected') return
    const epoch = this.epoch
    const next = this.nextCandidate()
    this.roundAttempts++
    let delay = 0
    if (this.roundAttempts >= Math.max(1, this.candidates.length)) {
      this.roundAttempts = 0
      delay = this.backoff.next()
    }
    this.joinTimer = setTimeout(() => {
      this.joinTimer = null
      if (epoch !== this.epoch || this.state !== 'joining') return
      if (next !== null && next !== this.address) this.switchTo(next, false)
      void this.registerOnce().catch(() => this.scheduleJoin())
    }, delay)
  }

  /** The address to register with next: null with a single master (or none), which is kept. */
  private nextCandidate(): string | null {
    const hint = this.leaderHint
    this.leaderHint = null
    if (this.candidates.length <= 1) return null
    if (hint !== null) return hint
    const at = this.address === null ? -1 : this.candidates.indexOf(this.address)
    return this.candidates[(at + 1) % this.candidates.length]!
  }

  private clearJoinTimer(): void {
    if (this.joinTimer) clearTimeout(this.joinTimer)
    this.joinTimer = null
  }

  private startHeartbeats(epoch: number): void {
    this.stopHeartbeats()
    if (this.opts.heartbeatMode === 'unary' || this.noHeartbeatStream) this.startUnaryHeartbeats(epoch)
    else this.openHeartbeatStream(epoch)
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer)
    this.heartbeatTimer = null
    this.endHeartbeatStream()
  }

  private openHeartbeatStream(epoch: number): void {
    const client = this.client
    if (!client) return
    const stream = client.StreamHeartbeats()
    this.stream = stream
    // The master writes nothing while it accepts; reading keeps the call's end observable.
    stream.on('data', () => {})
    // A non-OK status arrives as 'error' then 'status'; whichever comes first closes the stream.
    stream.on('error', (err: Partial<grpc.ServiceError>) => this.heartbeatStreamClosed(stream, epoch, err.code ?? grpc.status.UNKNOWN, err.details || err.message || 'stream error'))
    stream.on('status', (s: grpc.StatusObject) => this.heartbeatStreamClosed(stream, epoch, s.code, s.details || 'the master ended the stream'))
    const tick = (): void => {
      this.heartbeatTimer = null
      if (epoch !== this.epoch || this.stream !== stream) return
      // The next heartbeat is due one interval after this one went out, as with the unary call
      // that waits for its answer: at most one is ever queued (heartbeats carry the latest state,
      // so a backed-up stream just sends fewer), and the call's set-up does not bunch the first two.
      stream.write(this.heartbeatMessage(), () => {
        if (epoch === this.epoch && this.stream === stream) this.heartbeatTimer = setTimeout(tick, this.opts.heartbeatIntervalMs)
      })
    }
    // First heartbeat at once: usage is known as soon as we are active.
    tick()
  }

  private heartbeatStreamClosed(stream: HeartbeatStream, epoch: number, code: grpc.status, details: string): void {
    if (stream !== this.stream) return
    this.stream = null
    this.stopHeartbeats()
    if (epoch !== this.epoch || this.state !== 'connected') return
    if (code === grpc.status.UNIMPLEMENTED) {
      this.noHeartbeatStream = true
      this.opts.log.info({ master: this.address }, `Master ${this.address} has no heartbeat stream; using unary SendHeartbeat`)
      this.startUnaryHeartbeats(epoch)
      return
    }
    this.opts.log.warn({ master: this.address, code: grpc.status[code] }, `Heartbeat stream to master ${this.address} broke (${details}); registering again`)
    this.state = 'joining'
    this.registerOnce().catch(() => this.scheduleJoin())
  }

  /**
   * Half-closes the current stream so the master sees a clean end rather than a break; cancelled
   * if the master does not answer soon, so that no call outlives the link.
   */
  private endHeartbeatStream(): void {
    const stream = this.stream
    if (!stream) return
    this.stream = null
    const cancel = setTimeout(() => stream.cancel(), STREAM_END_GRACE_MS)
    cancel.unref()
    stream.once('status', () => clearTimeout(cancel))
    stream.end()
  }

  private startUnaryHeartbeats(epoch: number): void {
    const tick = (): void => {
      this.heartbeatTimer = null
      const after = (ok: boolean): void => {
        if (epoch !== this.epoch || this.state !== 'connected') return
        if (ok) {
          this.heartbeatTimer = setTimeout(tick, this.opts.heartbeatIntervalMs)
        } else {
          this.state = 'joining'
          this.registerOnce().catch(() => this.scheduleJoin())
        }
      }
      // A heartbeat that could not even be sent counts as a failed one: register again.
      this.sendHeartbeat(epoch).then(after, (err: unknown) => {
        this.opts.log.error({ master: this.address, err }, `Heartbeat to master ${this.address} could not be sent; registering again`)
        after(false)
      })
    }
    // First heartbeat at once: usage is known as soon as we are active.
    tick()
  }

  private heartbeatMessage(): HeartbeatMsg {
    const usage = this.opts.usage()
    return {
      worker_id: this.opts.workerId,
      cpu_usage: usage.cpu,
      memory_usage: usage.memory,
      storage_usage: usage.storage,
      gpu_usage: usage.gpu,
      running_tasks: this.opts.runningTasks(),
    }
  }

  private async sendHeartbeat(epoch: number): Promise<boolean> {
    const client = this.client
    if (!client || epoch !== this.epoch) return false
    const { promise } = callUnary<HeartbeatMsg, HeartbeatAckMsg>(
      client,
      'SendHeartbeat',
      this.heartbeatMessage(),
      Math.max(1000, Math.min(this.opts.heartbeatIntervalMs, 5000)),
    )
    try {
      const ack = await promise
      return ack.success
    } catch (err) {
      const e = err as grpc.ServiceError
      if (epoch === this.epoch && this.state === 'connected') {
        this.opts.log.warn({ master: this.address, code: grpc.status[e.code] }, `Heartbeat to master ${this.address} failed (${e.details || e.message}); registering again`)
      }
      return false
    }
  }

  close(): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.epoch++
    this.stopHeartbeats()
    this.clearJoinTimer()
    this.client?.close()
    this.client = null
  }
}

/**
 * A client interceptor that puts `authorization: Bearer <token>` on every call (unary and streams),
 * the way ClusterAuth adds the cluster token: a call that forgets it cannot be written.
 */
function bearerInterceptor(token: string): grpc.Interceptor {
  const value = `Bearer ${token}`
  return (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    start: (metadata, listener, next) => {
      metadata.set(AUTHORIZATION_METADATA, value)
      next(metadata, listener)
    },
  })
}
