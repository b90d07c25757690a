import * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { CloudaiError, toCloudaiError } from '../shared/errors.js'
import { loadProto } from '../shared/proto.js'
import { parseResultStatus, type ResultStatus } from '../shared/result-status.js'
import { KEEPALIVE, serverKeepaliveOptions, type Keepalive } from '../shared/keepalive.js'
import { MAX_RUNNING_TASKS, validateAmount, validatePercent, validateString, validateTaskId, validateWorkerId } from '../shared/validation.js'
import type { AckMsg, HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, TaskResultMsg, WorkerInfoMsg } from '../shared/wire.js'
import type { RunningTaskInfo, WorkerSpecs, WorkerUsage } from '../shared/types.js'
import { C, type Counters } from './counters.js'
import { NO_CLUSTER_AUTH, type ClusterAuth } from '../shared/cluster-auth.js'
import { GRPC_MAX_CONNECTIONS_DEFAULT } from './connection-budget.js'
import { GrpcListener, PREFACE_TIMEOUT_MS, type ConnectionRefusal } from '../shared/grpc-listener.js'
import type { Registry } from './registry.js'
import { WorkerAuth } from './worker-auth.js'
import { ActivationSlices } from './activation-slices.js'
import { LEADER_GRPC_METADATA } from '../shared/leadership.js'

const CONNECTION_COUNTER: Record<'accepted' | ConnectionRefusal, number> = {
  accepted: C.GRPC_CONNECTIONS_ACCEPTED,
  max_connections: C.GRPC_REFUSED_MAX_CONNECTIONS,
  max_per_peer: C.GRPC_REFUSED_MAX_CONNECTIONS,
  preface_timeout: C.GRPC_REFUSED_PREFACE_TIMEOUT,
  bad_preface: C.GRPC_REFUSED_BAD_PREFACE,
  tls_handshake: C.GRPC_REFUSED_TLS_HANDSHAKE,
}


/** What the task side of the master needs from the gRPC service. */
export interface TaskHooks {
  onHeartbeat(workerId: string, running: RunningTaskInfo[]): void
  /**
   * Resolves true once recorded (durable: now, or by an earlier delivery of the same report),
   * false when stale (acknowledged and ignored); rejects with CLOUDAI_STORE_DEGRADED while the store
   * cannot take it, which the worker is answered as UNAVAILABLE: it keeps the result and reports it again.
   */
  onCompletion(result: CompletionReport): Promise<boolean>
}

/** A validated TaskResult: its status word read into ours (see src/shared/result-status.ts). */
export type CompletionReport = TaskResultMsg & { status: ResultStatus }

/** Where accepted heartbeats go after the registry: the telemetry lanes (off the main thread). */
export interface HeartbeatSink {
  ingest(workerId: string, usage: WorkerUsage, running: RunningTaskInfo[]): void
}

const MAX_LOGS_BYTES = 1024 * 1024 + 1024

/** What bounds the gRPC side's connections (see src/shared/grpc-listener.ts and README, Security). */
export interface GrpcLimits {
  /** Connections open at once (--grpc-max-connections, from the file-descriptor budget). */
  maxConnections: number
  /** A connection that has not sent the HTTP/2 preface (after its TLS handshake) by then is closed. */
  prefaceTimeoutMs: number
  /** A connection with no call open for this long is closed (--grpc-idle-timeout); a heartbeat stream is a call. */
  idleTimeoutMs: number
  /** Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number
  /**
   * A heartbeat stream that has carried no heartbeat for this long is ended (its worker is
   * inactive by then anyway: the master gives it the heartbeat timeout). Without it a stream that
   * never sends one would hold its connection open for good, since a stream is a call.
   */
  streamSilenceMs: number
  keepalive: Keepalive
}

export const GRPC_LIMIT_DEFAULTS: GrpcLimits = Object.freeze({
  maxConnections: GRPC_MAX_CONNECTIONS_DEFAULT,
  prefaceTimeoutMs: PREFACE_TIMEOUT_MS,
  idleTimeoutMs: 5 * 60_000,
  // A worker opens one heartbeat stream and a few unary calls (registration, completion reports
  // from its outbox); 100 is grpc-go's and C-core's usual figure. A client past it waits for a free
  // stream (nghttp2 holds the request back) instead of failing.
  maxConcurrentStreams: 100,
  streamSilenceMs: 15_000,
  keepalive: KEEPALIVE,
})

export interface MasterGrpcOptions {
  registry: Registry
  tasks?: TaskHooks
  telemetry?: HeartbeatSink
  counters?: Counters
  host: string
  port: number
  log: Logger
  now?: () => number
  /**
   * TLS for the server, and the cluster token every call must carry (checked before any handler:
   * a refused call changes nothing). Default: insecure, no token.
   */
  auth?: ClusterAuth
  /**
   * Who each worker call is from (worker tokens, client certificates with a CA, loopback,
   * --worker-auth none). Default: tokens (or, with `auth`'s CA, certificates) required, except
   * from loopback for workers that never presented one.
   */
  workerAuth?: WorkerAuth
  limits?: Partial<GrpcLimits>
  /**
   * While this master does not lead (a standby, a deposed leader): the refusal of every worker
   * call, UNAVAILABLE CLOUDAI_NOT_LEADER with the leader's gRPC address as LEADER_GRPC_METADATA.
   */
  notLeader?: () => CloudaiError | null
}

// Shared by every empty heartbeat: most workers run nothing most of the time.
const NO_TASKS: RunningTaskInfo[] = Object.freeze([]) as unknown as RunningTaskInfo[]

/** One open StreamHeartbeats call. `done` is set once its outcome is counted and logged. */
interface HeartbeatStream {
  call: grpc.ServerDuplexStream<HeartbeatMsg, HeartbeatAckMsg>
  /** The worker it speaks for, from its first accepted heartbeat; null until then. */
  workerId: string | null
  /**
   * The check of each heartbeat's worker_id against who opened the stream (from the call's
   * credentials), made once at open rather than per heartbeat; null: refused at open.
   */
  authorize: ((workerId: string) => void) | null
  done: boolean
  /** When it opened or last carried a heartbeat (monotonic ms: a transport matter, not the registry's clock). */
  lastAt: number
}

/**
 * The master's side of the MasterWorker service: RegisterWorker, SendHeartbeat, StreamHeartbeats
 * and ReportTaskCompletion. Every field
 * from a peer is validated before it reaches the registry; a refusal is a gRPC status with a
 * message that says why (CloudAI peers only look at the status), and never changes state. With a
 * cluster token, a call without it is refused (UNAUTHENTICATED) before it reaches any of this.
 * Each call is then bound to a worker by its credentials (worker-auth.ts), and may speak only for
 * that worker: the message's worker_id is checked against it, never trusted.
 */
export class MasterGrpcServer {
  private server: grpc.Server | null = null
  private listener: GrpcListener | null = null
  private boundPort = 0
  readonly limits: GrpcLimits
  private readonly now: () => number
  private readonly streams = new Set<HeartbeatStream>()
  private readonly workerAuth: WorkerAuth
  private silenceSweep: NodeJS.Timeout | null = null
  /** RegisterWorker activations, a time slice per turn (activation-slices.ts). */
  private readonly activations = new ActivationSlices()

  constructor(private readonly opts: MasterGrpcOptions) {
    this.now = opts.now ?? Date.now
    this.workerAuth = opts.workerAuth ?? new WorkerAuth({ registry: opts.registry, mode: 'token', certificates: opts.auth?.verifiesPeers === true, log: opts.log, now: this.now })
    this.limits = { ...GRPC_LIMIT_DEFAULTS, ...opts.limits }
  }

  get port(): number {
    return this.boundPort
  }

  /** gRPC connections open now (all phases). */
  get connections(): number {
    return this.listener?.open ?? 0
  }

  async start(): Promise<number> {
    const auth = this.opts.auth ?? NO_CLUSTER_AUTH
    const limits = this.limits
    const server = new grpc.Server(auth.serverOptions({ log: this.opts.log, now: this.now }, {
      'grpc.max_receive_message_length': 4 * 1024 * 1024,
      // Off: nothing reads channelz (no channelz service is served), and on it costs every
      // connection a channelz registry entry, a call tracker and their closures, and every
      // heartbeat a `new Date()` for the session's last-message timestamp (per-heartbeat garbage).
      'grpc.enable_channelz': 0,
      // grpc-js closes a session (GOAWAY, then the socket) once it has had no stream open for this
      // long (server.js onIdleTimeout: activeStreams === 0 and lastIdle older than the timeout).
      'grpc.max_connection_idle_ms': limits.idleTimeoutMs,
      'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
      ...serverKeepaliveOptions(limits.keepalive),
    }))
    server.addService(loadProto().service, {
      RegisterWorker: (call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => this.registerWorker(call, cb),
      SendHeartbeat: (call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => this.sendHeartbeat(call, cb),
      StreamHeartbeats: (call: grpc.ServerDuplexStream<HeartbeatMsg, HeartbeatAckMsg>) => this.streamHeartbeats(call),
      ...(this.opts.tasks
        ? { ReportTaskCompletion: (call: grpc.ServerUnaryCall<TaskResultMsg, AckMsg>, cb: grpc.sendUnaryData<AckMsg>) => this.reportTaskCompletion(call, cb) }
        : {}),
    })
    // Connections come from our listener, TLS already terminated there: the injector itself is
    // plaintext (see grpc-listener.ts).
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure())
    const listener = new GrpcListener({
      host: this.opts.host,
      port: this.opts.port,
      maxConnections: limits.maxConnections,
      prefaceTimeoutMs: limits.prefaceTimeoutMs,
      tls: auth.serverTlsOptions(),
      inject: (socket) => injector.injectConnection(socket),
      portFlag: '--grpc-port',
      onConnection: (outcome) => this.opts.counters?.add(CONNECTION_COUNTER[outcome]),
      log: this.opts.log,
      now: this.now,
    })
    this.server = server
    this.listener = listener
    this.boundPort = await listener.start()
    // One sweep for every stream rather than a timer each: 20,000 streams cost one pass, not 20,000 timers.
    this.silenceSweep = setInterval(() => this.endSilentStreams(), Math.max(50, Math.floor(limits.streamSilenceMs / 3)))
    this.silenceSweep.unref()
    return this.boundPort
  }

  private registerWorker(call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>): void {
    const req = call.request
    let id: string
    let info: { specs: WorkerSpecs; reportedAddress: string | null }
    let reported: string
    try {
      this.assertLeader()
      const identity = this.workerAuth.identify('RegisterWorker', call)
      id = validateWorkerId(req.worker_id)
      this.workerAuth.authorize('RegisterWorker', identity, id, call)
      const specs = {
        cpu: validateAmount(req.total_cpu, 'total_cpu', 1e6),
        memory: validateAmount(req.total_memory, 'total_memory', 1e9),
        storage: validateAmount(req.total_storage, 'total_storage', 1e12),
        gpu: validateAmount(req.total_gpu, 'total_gpu', 1e4),
      }
      reported = validateString(req.worker_ip, 'worker_ip', { max: 262 })
      info = { specs, reportedAddress: reported || null }
    } catch (err) {
      return this.refuse('RegisterWorker', req.worker_id, err, cb)
    }
    // Checked and authorized now; the activation itself waits for its slice of a turn (a pass's
    // returning workers arrive together), and the answer follows it.
    this.activations.push(() => {
      // Given up while it waited (deadline, cancel): the worker will register again.
      if (call.cancelled) return
      try {
        const wasActive = this.opts.registry.get(id)?.isActive === true
        const worker = this.opts.registry.connect(id, info, this.now())
        if (!wasActive) {
          this.opts.log.info({ workerId: id, address: worker.address, reportedAddress: reported, specs: info.specs }, `Worker ${id} registered and active (${worker.address})`)
        }
        cb(null, { success: true, message: `worker ${id} registered` })
      } catch (err) {
        // Unregistered in between, say: refused as it would have been on arrival.
        this.refuse('RegisterWorker', id, err, cb)
      }
    }, () => this.refuse('RegisterWorker', id, new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'master shutting down'), cb))
  }

  private sendHeartbeat(call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>): void {
    try {
      this.assertLeader()
      const identity = this.workerAuth.identify('SendHeartbeat', call)
      this.acceptHeartbeat(call.request, (id) => this.workerAuth.authorize('SendHeartbeat', identity, id, call))
      cb(null, { success: true })
    } catch (err) {
      this.refuse('SendHeartbeat', call.request.worker_id, err, cb)
    }
  }

  /**
   * A worker's heartbeats on one long-lived call. Nothing is written back while they are accepted;
   * the first refusal ends the call with the status SendHeartbeat would have answered. How the
   * stream ends changes no worker state: liveness stays with the heartbeat timeout, so a worker
   * that restarts its stream cleanly (or briefly loses it) is never marked inactive for that.
   */
  private streamHeartbeats(call: grpc.ServerDuplexStream<HeartbeatMsg, HeartbeatAckMsg>): void {
    const stream: HeartbeatStream = { call, workerId: null, authorize: null, done: false, lastAt: performance.now() }
    this.streams.add(stream)
    this.opts.counters?.add(C.HEARTBEAT_STREAMS_OPENED)
    call.on('data', (msg: HeartbeatMsg) => this.streamedHeartbeat(stream, msg))
    // grpc-js ends the read side of a call that broke, too, just before it reports the cancel
    // (within the same turn of the event loop): only an end that no cancel follows is clean.
    call.on('end', () => setImmediate(() => this.streamEnded(stream)))
    call.on('cancelled', () => this.streamBroke(stream, 'cancelled'))
    // Also the path of our own refusals (grpc-js turns an 'error' into the call's status); those
    // are already done, so only errors of the call itself count as a break.
    call.on('error', (err: Error) => this.streamBroke(stream, err.message))
    // Identified once, from the metadata the call opened with; each heartbeat is then checked
    // against it (and against a revocation or rotation since).
    try {
      this.assertLeader()
      const identity = this.workerAuth.identify('StreamHeartbeats', call)
      stream.authorize = (id) => this.workerAuth.authorize('StreamHeartbeats', identity, id, call)
    } catch (err) {
      this.opts.counters?.add(C.HEARTBEATS_REFUSED)
      this.finishStream(stream, this.refusalStatus('StreamHeartbeats', null, err))
    }
  }

  private streamedHeartbeat(stream: HeartbeatStream, msg: HeartbeatMsg): void {
    if (stream.done) return
    const authorize = stream.authorize!
    stream.lastAt = performance.now()
    try {
      this.assertLeader()
      if (stream.workerId === null) this.acceptHeartbeat(msg, authorize)
      else if (msg.worker_id !== stream.workerId) {
        throw new CloudaiError('CLOUDAI_BAD_FIELD', `worker_id changed mid-stream from ${stream.workerId} to ${String(msg.worker_id).slice(0, 80)}; one stream carries one worker's heartbeats`)
      } else {
        // The id this stream's first heartbeat validated: the same text, and the same string, so
        // the maps keyed by worker id (registry, task table, queue) reuse its hash instead of
        // hashing each message's fresh copy.
        this.accept(stream.workerId, msg, authorize)
      }
    } catch (err) {
      this.finishStream(stream, this.refusalStatus('StreamHeartbeats', msg.worker_id, err))
      return
    }
    if (stream.workerId === null) {
      stream.workerId = msg.worker_id
      this.opts.log.debug({ workerId: msg.worker_id }, `Heartbeats from worker ${msg.worker_id} arrive on a stream`)
    }
  }

  /** The worker half-closed: it is done with this stream (shutting down, or opening another). */
  private streamEnded(stream: HeartbeatStream): void {
    if (stream.done) return
    this.opts.counters?.add(C.HEARTBEAT_STREAMS_ENDED)
    this.opts.log.debug({ workerId: stream.workerId }, `Heartbeat stream from worker ${stream.workerId ?? '(unidentified)'} ended`)
    this.finishStream(stream, null)
  }

  /** Worker killed, connection reset, call cancelled: logged, and left to the heartbeat timeout. */
  private streamBroke(stream: HeartbeatStream, reason: string): void {
    if (stream.done) return
    stream.done = true
    this.streams.delete(stream)
    this.opts.counters?.add(C.HEARTBEAT_STREAMS_BROKEN)
    this.opts.log.info({ workerId: stream.workerId, reason }, `Heartbeat stream from worker ${stream.workerId ?? '(unidentified)'} broke (${reason})`)
  }

  /** Ends the streams that carried no heartbeat for streamSilenceMs; their workers register again. */
  private endSilentStreams(): void {
    const before = performance.now() - this.limits.streamSilenceMs
    let silent: HeartbeatStream[] | null = null
    for (const stream of this.streams) if (stream.lastAt < before) (silent ??= []).push(stream)
    if (!silent) return
    const seconds = Math.round(this.limits.streamSilenceMs / 100) / 10
    for (const stream of silent) {
      const id = stream.workerId
      // Unidentified streams are what a flood leaves; a line each would be the flood's echo.
      if (id === null) this.opts.log.debug(`Ended a heartbeat stream that sent no heartbeat in ${seconds}s`)
      else this.opts.log.info({ workerId: id }, `Ended the heartbeat stream of worker ${id}: no heartbeat in ${seconds}s`)
      this.finishStream(stream, errorStatus(new CloudaiError('CLOUDAI_WORKER_INACTIVE', `no heartbeat on this stream in ${seconds}s; call RegisterWorker and open a new one`)))
    }
  }

  /** Ends the call: OK for `null`, else with that error status (grpc-js sends it as the trailers). */
  private finishStream(stream: HeartbeatStream, status: grpc.ServerErrorResponse | null): void {
    stream.done = true
    this.streams.delete(stream)
    if (status) stream.call.emit('error', status)
    else stream.call.end()
  }

  /**
   * One heartbeat, from the unary RPC or a stream: validated, checked against the caller's identity
   * (`authorize`, which throws for a worker the caller may not speak for), stamped on the registry
   * (liveness), reconciled against the task table, then handed to the worker's telemetry lane.
   * @throws CloudaiError when the heartbeat is refused (nothing changed)
   */
  acceptHeartbeat(req: HeartbeatMsg, authorize: (workerId: string) => void): void {
    let id: string
    try {
      id = validateWorkerId(req.worker_id)
    } catch (err) {
      this.opts.counters?.add(C.HEARTBEATS_RECEIVED)
      this.opts.counters?.add(C.HEARTBEATS_REFUSED)
      throw err
    }
    this.accept(id, req, authorize)
  }

  /** acceptHeartbeat past the worker_id's validation (`id` is req.worker_id, valid). */
  private accept(id: string, req: HeartbeatMsg, authorize: (workerId: string) => void): void {
    const counters = this.opts.counters
    counters?.add(C.HEARTBEATS_RECEIVED)
    try {
      authorize(id)
      const usage = {
        cpu: validatePercent(req.cpu_usage, 'cpu_usage'),
        memory: validatePercent(req.memory_usage, 'memory_usage'),
        storage: validatePercent(req.storage_usage, 'storage_usage'),
        gpu: validatePercent(req.gpu_usage, 'gpu_usage'),
      }
      const tasks = req.running_tasks ?? []
      if (tasks.length > MAX_RUNNING_TASKS) throw new CloudaiError('CLOUDAI_BAD_FIELD', `running_tasks lists ${tasks.length} tasks; at most ${MAX_RUNNING_TASKS}`)
      const running: RunningTaskInfo[] = tasks.length === 0 ? NO_TASKS : tasks.map((t, i) => ({
        taskId: validateString(t.task_id, `running_tasks[${i}].task_id`, { required: true }),
        cpu: validateAmount(t.cpu_allocated, `running_tasks[${i}].cpu_allocated`),
        memory: validateAmount(t.memory_allocated, `running_tasks[${i}].memory_allocated`),
        gpu: validateAmount(t.gpu_allocated, `running_tasks[${i}].gpu_allocated`),
        // CloudAI's workers say "running" (its comment also names paused and failed); any case.
        status: validateString(t.status, `running_tasks[${i}].status`, { max: 32 }).toLowerCase(),
        attempt: validateAmount(t.attempt ?? 0, `running_tasks[${i}].attempt`, 1e6),
      }))
      const now = this.now()
      this.opts.registry.heartbeat(id, usage, running, now)
      this.opts.tasks?.onHeartbeat(id, running)
      this.opts.telemetry?.ingest(id, usage, running)
    } catch (err) {
      counters?.add(C.HEARTBEATS_REFUSED)
      throw err
    }
  }

  private reportTaskCompletion(call: grpc.ServerUnaryCall<TaskResultMsg, AckMsg>, cb: grpc.sendUnaryData<AckMsg>): void {
    const r = call.request
    let result: CompletionReport
    try {
      this.assertLeader()
      const identity = this.workerAuth.identify('ReportTaskCompletion', call)
      validateTaskId(r.task_id)
      const workerId = validateWorkerId(r.worker_id)
      // From here worker_id is the caller's own: the queue accepts the result only for a task and
      // attempt it gave that worker.
      this.workerAuth.authorize('ReportTaskCompletion', identity, workerId, call)
      if (!this.opts.registry.get(workerId)) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `completion report from ${workerId}, which is not registered with this master`)
      const status = parseResultStatus(r.status)
      if (typeof r.logs !== 'string' || Buffer.byteLength(r.logs) > MAX_LOGS_BYTES) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'logs must be a string of at most 1 MiB')
      for (const f of ['duration_ms', 'started_at', 'finished_at', 'attempt', 'log_lines'] as const) validateAmount(r[f] ?? 0, f, Number.MAX_SAFE_INTEGER)
      if (!Number.isInteger(r.exit_code ?? 0)) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'exit_code must be a whole number')
      validateString(r.reason, 'reason', { max: 1024 })
      result = { ...r, status, attempt: r.attempt ?? 0, reason: r.reason ?? '', has_exit_code: r.has_exit_code === true }
    } catch (err) {
      this.refuse('ReportTaskCompletion', r.worker_id, err, cb)
      return
    }
    this.opts.tasks!.onCompletion(result).then(
      (applied) => cb(null, { success: true, message: applied ? 'recorded' : 'ignored: the task is no longer this worker\'s attempt (requeued, cancelled or already finished)' }),
      (err: unknown) => this.refuse('ReportTaskCompletion', r.worker_id, err, cb),
    )
  }

  /** @throws CLOUDAI_NOT_LEADER while this master does not lead (a standby, a deposed leader) */
  private assertLeader(): void {
    const refusal = this.opts.notLeader?.()
    if (refusal) throw refusal
  }

  private refuse(rpc: string, workerId: unknown, err: unknown, cb: grpc.sendUnaryData<never>): void {
    cb(this.refusalStatus(rpc, workerId, err))
  }

  /** Logs a refusal and builds its status: the same for a unary answer and a stream's end. */
  private refusalStatus(rpc: string, workerId: unknown, err: unknown): grpc.ServerErrorResponse {
    const e = toCloudaiError(err)
    if (e.code === 'CLOUDAI_INTERNAL') this.opts.log.error({ rpc, err }, `${rpc} failed`)
    else this.opts.log.debug({ rpc, workerId: String(workerId).slice(0, 80), code: e.code, reason: e.message }, `${rpc} refused`)
    return errorStatus(e)
  }

  /** Stops accepting calls, lets in-flight ones finish within `graceMs`, then cancels the rest. */
  async close(graceMs: number): Promise<void> {
    const server = this.server
    const listener = this.listener
    if (!server || !listener) return
    this.server = null
    this.listener = null
    if (this.silenceSweep) clearInterval(this.silenceSweep)
    this.silenceSweep = null
    this.activations.close()
    listener.stopAccepting()
    // Heartbeat streams never finish by themselves: tryShutdown would wait for them until the
    // grace ran out. Ended here, their workers see UNAVAILABLE and go back to registering.
    const shuttingDown = errorStatus(new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'master shutting down'))
    for (const stream of [...this.streams]) this.finishStream(stream, shuttingDown)
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown()
        resolve()
      }, graceMs)
      server.tryShutdown(() => {
        clearTimeout(force)
        resolve()
      })
    })
    // What grpc-js no longer holds but is still open: connections still awaiting their preface.
    await listener.close()
  }
}

/** The status of a refusal: the code's gRPC status, a reason, and the code itself as metadata. */
function errorStatus(e: CloudaiError): grpc.ServerErrorResponse {
  const metadata = new grpc.Metadata()
  metadata.set('cloudai-error-code', e.code)
  // A standby's refusal names the leader a worker with several --master addresses tries next.
  const leader = e.code === 'CLOUDAI_NOT_LEADER' ? e.details?.leader_grpc : undefined
  if (typeof leader === 'string') metadata.set(LEADER_GRPC_METADATA, leader)
  return { name: 'CloudaiError', message: e.message, code: e.grpcStatus, details: `${e.message} (${e.code})`, metadata }
}
