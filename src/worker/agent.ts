import { statSync } from 'node:fs'
import { GrpcListener, PREFACE_TIMEOUT_MS } from '../shared/grpc-listener.js'
import * as grpc from '@grpc/grpc-js'
import type { WorkerConfig } from '../config.js'
import type { Logger } from '../shared/log.js'
import { CloudaiError, isCloudaiError, toCloudaiError } from '../shared/errors.js'
import { DataDirLock } from '../shared/data-dir-lock.js'
import { loadProto } from '../shared/proto.js'
import { resultStatusWord } from '../shared/result-status.js'
import { assignSubject, type CallSource } from '../shared/worker-credential.js'
import { describeIdentity, MASTER_SPIFFE_ID, workerSpiffeId } from '../shared/certificate-identity.js'
import { clusterAuthOf } from '../shared/cluster-auth.js'
import { serverKeepaliveOptions } from '../shared/keepalive.js'
import { advertiseHost, bindAddress } from '../shared/advertise.js'
import { MAX_RUNNING_TASKS, MAX_TASK_REQUEST, validateAddress, validateAmount, validateString, validateTaskId, validateTaskSpec, validateWorkerId } from '../shared/validation.js'
import type { LogChunkMsg, MasterInfoMsg, RegisterAckMsg, RunningTaskMsg, TaskAckMsg, TaskIdMsg, TaskLogRequestMsg, TaskMsg, TaskResultMsg } from '../shared/wire.js'
import { utf8Tail } from '../shared/utf8-tail.js'
import { Executor, shellArgv, type ProcessSpec, type TaskOutcome } from './executor.js'
import { MasterLink } from './link.js'
import { notFoundChunk, parseLogRequest, serveLog, TaskLogIndex } from './log-stream.js'
import { MasterCheck } from './master-auth.js'
import { Outbox } from './outbox.js'
import { Reporter } from './reporter.js'
import { TaskDirRetention } from './task-retention.js'
import { DockerProbe, dockerRunArgv, signalContainer } from './runtime.js'
import { readSpecs, UsageSampler } from './specs.js'
import { SeenEpoch, validateEpoch, type EpochMethod } from './seen-epoch.js'

// Limits of an AssignTask beyond the task rules both sides share (src/shared/validation.ts).
/** What a report carries of the output (the master refuses more); the whole log stays on the worker. */
const MAX_REPORT_LOG_BYTES = 1024 * 1024
/** At shutdown, the time given to deliver the results of the tasks it cancelled. */
const SHUTDOWN_REPORT_MS = 2_000
/** At shutdown, the time calls under way on our server get to be answered. */
const SERVER_DRAIN_MS = 250
/** At shutdown, the time a peer gets to close its connection to our server before we cut it. */
const CONNECTION_CLOSE_MS = 100

export interface WorkerAgentDeps {
  log: Logger
  /** Disk whose size and usage are reported (default: the working directory). */
  diskPath?: string
  /** Where Docker tasks look for an engine (tests pass a probe with a fake docker CLI). */
  docker?: DockerProbe
  /** Bounds of the gRPC port (tests shorten them); WORKER_GRPC_LIMITS by default. */
  limits?: Partial<typeof WORKER_GRPC_LIMITS>
}

/**
 * A worker's callers are its master: a dial and a channel for tasks, a few connections at most.
 * The bound leaves room for those many times over, and none for a flood; one address off this
 * machine gets at most maxPerPeer of it. A connection lives at most maxAgeMs (then a GOAWAY, and
 * 30 s for its calls): a caller that opens a call and never sends its message holds a slot that
 * long, not for good. A master's channel simply connects again.
 */
export const WORKER_GRPC_LIMITS = { maxConnections: 64, maxPerPeer: 8, prefaceTimeoutMs: PREFACE_TIMEOUT_MS, idleTimeoutMs: 5 * 60_000, maxAgeMs: 5 * 60_000 }

/** An AssignTask that passed validation. */
interface TaskInput {
  taskId: string
  attempt: number
  command: string
  dockerImage: string
  env: Record<string, string>
  timeoutMs: number
  cpu: number
  memory: number
  gpu: number
}

/**
 * The worker agent: the gRPC server the master calls (MasterRegister, AssignTask, CancelTask;
 * with a cluster token, only a master that sends it gets past the server's check; then only the
 * worker's own master, by its proof or (with --tls-ca) its certificate, or a caller on this machine
 * without a token: master-auth.ts),
 * the link that registers with the master and heartbeats, the executor that runs tasks and the
 * reporter that delivers their results through the outbox. Started with `master`, it also joins
 * that master on its own.
 */
export class WorkerAgent {
  private server: grpc.Server | null = null
  /** Accepts the connections our gRPC server serves; see start(). */
  private listener: GrpcListener | null = null
  private boundPort = 0
  private link: MasterLink | null = null
  private executor: Executor | null = null
  private outbox: Outbox | null = null
  private reporter: Reporter | null = null
  /** Where StreamTaskLogs finds a task's numbered output. */
  private logs: TaskLogIndex | null = null
  /** Removes finished task directories after --task-retention. */
  private taskDirs: TaskDirRetention | null = null
  private readonly docker: DockerProbe
  /** Resources of the tasks the executor runs, as the master asked for them (for heartbeats). */
  private readonly allocations = new Map<string, RunningTaskMsg>()
  /** AssignTask calls under way (a Docker probe may take up to 3 s): a retry of the same attempt joins the first. */
  private readonly starting = new Map<string, { attempt: number; ack: Promise<TaskAckMsg> }>()
  /** Tasks cancelled while their AssignTask was still under way. */
  private readonly cancelledEarly = new Set<string>()
  /** Calls on our server not answered yet; the server is cut off only once they are (or after a grace). */
  private readonly answering = new Set<Promise<void>>()
  private closed = false
  private closing: Promise<void> | null = null
  private readonly masterCheck: MasterCheck
  /** Held from the start of start() to the end of close(). */
  private dirLock: DataDirLock | null = null
  /** The highest master epoch seen (on disk): calls of a deposed leader are refused. */
  private epochs: SeenEpoch | null = null

  constructor(private readonly config: WorkerConfig, private readonly deps: WorkerAgentDeps) {
    this.docker = deps.docker ?? new DockerProbe()
    // With --tls-ca, certificates name their holders: the master's may drive us as its proof does.
    const certificates = (config.tls?.caPath ?? null) !== null
    this.masterCheck = new MasterCheck({ workerId: config.id, token: config.token ?? null, mode: config.masterAuth ?? 'proof', certificates, log: deps.log })
  }

  get port(): number {
    return this.boundPort
  }

  get advertise(): string {
    return this.config.advertise ?? `${advertiseHost(this.config.host)}:${this.boundPort}`
  }

  get linkState(): string {
    return this.link?.status ?? 'idle'
  }

  /**
   * Starts the worker; a start that fails closes what it started (the lock last, as close() does)
   * and throws: the data directory is free again, and no timer or port is left behind.
   */
  async start(): Promise<void> {
    if (this.closing) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', `worker ${this.config.id} is shutting down`)
    try {
      await this.startParts()
    } catch (err) {
      // A typed refusal (a port in use, a locked data directory): its code and reason, no stack.
      this.deps.log.error(isCloudaiError(err) ? { code: err.code, reason: err.message } : { err }, 'worker failed to start; shutting down what started')
      await this.close()
      throw err
    }
  }

  private async startParts(): Promise<void> {
    const { log } = this.deps
    // First: the data directory is this worker's alone (another worker there would take our
    // running tasks for orphans and kill them), and writable. CLOUDAI_DATA_DIR_LOCKED / _READONLY.
    this.dirLock = DataDirLock.acquire(this.config.dataDir, 'worker')
    // TLS and the cluster token, for our server and for our calls to the master: PEMs read once here.
    const auth = clusterAuthOf(this.config)
    // A certificate naming a SPIFFE ID names us to the master; one naming someone else would have
    // every call refused (CLOUDAI_WRONG_WORKER), so it is a configuration error, said now. A worker
    // that uses its SPIFFE ID expects its master to use one too: it calls only a master whose
    // certificate names spiffe://cloudai/master.
    const own = auth.verifiesPeers ? auth.ownIdentity() : null
    if (own !== null && !(own.role === 'worker' && own.workerId === this.config.id)) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `--tls-cert names ${describeIdentity(own)}, but this is worker ${this.config.id}: give it a certificate whose URI SAN is ${workerSpiffeId(this.config.id)} (or none of cloudai's)`)
    }
    const masterCertificate = own !== null
    if (masterCertificate) log.info({ spiffeId: workerSpiffeId(this.config.id) }, `Worker certificate names ${workerSpiffeId(this.config.id)}: this worker calls only a master whose certificate names ${MASTER_SPIFFE_ID}`)
    // Before anything a master can call: a worker that cannot tell a deposed leader does not start.
    const epochs = new SeenEpoch(this.config.dataDir, log)
    const seen = epochs.open()
    this.epochs = epochs
    if (seen > 0) log.info({ epoch: seen }, `Master epoch ${seen} seen by an earlier run: calls with a lower epoch are refused`)
    const diskPath = this.deps.diskPath ?? process.cwd()
    const specs = readSpecs(diskPath)
    const sampler = new UsageSampler(diskPath, specs.gpu)

    const outbox = new Outbox(this.config.dataDir, log)
    let undelivered: number
    try {
      undelivered = outbox.open()
    } catch (err) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot use the data directory ${this.config.dataDir}: ${(err as Error).message}`)
    }
    const executor = new Executor({ dataDir: this.config.dataDir, log, killGraceMs: this.config.killGraceMs })
    const link = new MasterLink({
      workerId: this.config.id,
      advertise: () => this.advertise,
      specs: () => specs,
      usage: () => sampler.sample(),
      runningTasks: () => this.runningTasks(),
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
      joinMaxBackoffMs: this.config.joinMaxBackoffMs,
      onConnected: () => this.reporter?.connected(),
      auth,
      token: this.config.token ?? null,
      masterCertificate,
      log,
    })
    const reporter = new Reporter({ outbox, channel: link, log, retryBaseMs: Math.min(250, this.config.joinMaxBackoffMs), retryMaxMs: this.config.joinMaxBackoffMs })
    executor.on('finished', (outcome) => this.onFinished(outcome))
    executor.reapOrphans()
    const taskDirs = new TaskDirRetention({
      dataDir: this.config.dataDir,
      retentionMs: this.config.taskRetentionMs,
      log,
      inUse: (taskId, attempt) => executor.get(taskId)?.attempt === attempt || outbox.has(taskId, attempt),
    })
    // After the reaping: a directory whose process it killed is finished now.
    taskDirs.start()
    this.taskDirs = taskDirs
    this.outbox = outbox
    this.executor = executor
    this.logs = new TaskLogIndex(this.config.dataDir, (taskId) => executor.logOf(taskId))
    this.reporter = reporter
    this.link = link
    if (undelivered > 0) log.info({ undelivered }, `${undelivered} task result(s) from an earlier run are waiting in the outbox; they are reported once a master is connected`)

    // With a cluster token, a master without it can neither make us follow it nor give us tasks:
    // that check runs before any handler. Each handler then checks that the call is our master's
    // (its proof, or loopback without a token) before it looks at anything else in the call.
    // Keepalive pings close a connection whose master vanished within 20 s (src/shared/keepalive.ts).
    const idle = this.deps.limits?.idleTimeoutMs ?? WORKER_GRPC_LIMITS.idleTimeoutMs
    const maxAge = this.deps.limits?.maxAgeMs ?? WORKER_GRPC_LIMITS.maxAgeMs
    const server = new grpc.Server(auth.serverOptions({ log }, {
      ...serverKeepaliveOptions(),
      'grpc.max_connection_idle_ms': idle,
      'grpc.max_connection_age_ms': maxAge,
      'grpc.max_connection_age_grace_ms': 30_000,
      'grpc.max_concurrent_streams': 100,
    }))
    const check = this.masterCheck
    server.addService(loadProto().service, {
      MasterRegister: (call: grpc.ServerUnaryCall<MasterInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => this.answerCall(() => {
        check.check('MasterRegister', String(call.request.master_address ?? ''), call)
        return this.masterRegister(call.request, call)
      }, cb),
      AssignTask: (call: grpc.ServerUnaryCall<TaskMsg, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => this.answerCall(() => {
        check.check('AssignTask', assignSubject(call.request), call)
        this.admitEpoch('AssignTask', call.request.master_epoch, call)
        return this.assignTask(call.request)
      }, cb),
      CancelTask: (call: grpc.ServerUnaryCall<TaskIdMsg, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => this.answerCall(() => {
        check.check('CancelTask', String(call.request.task_id ?? ''), call)
        this.admitEpoch('CancelTask', call.request.master_epoch, call)
        return this.cancelTask(call.request)
      }, cb),
      StreamTaskLogs: (call: grpc.ServerWritableStream<TaskLogRequestMsg, LogChunkMsg>) => this.streamTaskLogs(call),
    })
    // Our listener in front of grpc-js (src/shared/grpc-listener.ts), as on the master: grpc-js
    // bounds neither how many connections a port takes nor how long one may stay silent, and
    // anyone who can reach the port could otherwise hold its descriptors until the master cannot
    // reach the worker. It also holds every socket, so that shutdown can cut a connection, which
    // grpc-js cannot (stopServer). TLS is terminated there; the injector itself is plaintext.
    const limits = { ...WORKER_GRPC_LIMITS, ...this.deps.limits }
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure())
    const listener = new GrpcListener({
      host: this.config.host,
      port: this.config.port,
      portFlag: '--port',
      maxConnections: limits.maxConnections,
      maxPerPeer: limits.maxPerPeer,
      limitName: `worker's ${limits.maxConnections}-connection`,
      prefaceTimeoutMs: limits.prefaceTimeoutMs,
      tls: auth.serverTlsOptions(),
      inject: (socket) => injector.injectConnection(socket),
      log,
    })
    // Held before it binds: a bind that fails part-way is closed with the rest.
    this.server = server
    this.listener = listener
    this.boundPort = await listener.start()
    this.warnAboutTokenFile()
    this.masterCheck.start()
    log.info({ workerId: this.config.id, grpcPort: this.boundPort, advertise: this.advertise, specs, dataDir: this.config.dataDir }, `Worker ${this.config.id} listening on ${bindAddress(this.config.host, this.boundPort)} (gRPC), advertised as ${this.advertise}`)
    const masters = this.config.masters
    if (masters.length > 0) {
      log.info({ masters }, masters.length === 1 ? `Joining master ${masters[0]}` : `Joining whichever of masters ${masters.join(', ')} leads`)
      link.join(masters)
    } else {
      log.info('Waiting for a master to call MasterRegister')
    }
  }

  /**
   * Fencing (issue 19): a call whose master epoch is below the highest seen is refused
   * (FAILED_PRECONDITION, CLOUDAI_STALE_EPOCH) before it changes anything; a higher one is on disk
   * before the call goes on. Runs after the master check: only a master's calls move the epoch.
   */
  private admitEpoch(method: EpochMethod, value: unknown, call: CallSource, master: string | null = null): void {
    const epochs = this.epochs
    if (!epochs || this.closed) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', `worker ${this.config.id} is shutting down`)
    const epoch = validateEpoch(value)
    try {
      epochs.admit(method, epoch, master)
    } catch (err) {
      if (isCloudaiError(err) && err.code === 'CLOUDAI_STALE_EPOCH') throw this.masterCheck.refuse(method, call, err.code, err.message)
      throw err
    }
  }

  /** Answers a call, keeping it in `answering` until the answer is given. */
  private answerCall<T>(handle: () => Promise<T>, cb: grpc.sendUnaryData<T>): void {
    const answered = answer(handle, cb)
    this.answering.add(answered)
    const settled = (): void => void this.answering.delete(answered)
    void answered.then(settled, settled)
  }

  /**
   * A task's output for its master (the same proof as CancelTask, bound to the task id): the lines
   * kept, then with `follow` the new ones until the attempt ends (src/worker/log-stream.ts).
   */
  private streamTaskLogs(call: grpc.ServerWritableStream<TaskLogRequestMsg, LogChunkMsg>): void {
    const refuse = (err: unknown): void => {
      const e = toCloudaiError(err)
      const metadata = new grpc.Metadata()
      metadata.set('cloudai-error-code', e.code)
      call.emit('error', { code: e.grpcStatus, details: `${e.message} (${e.code})`, metadata })
    }
    let taskId: string
    let found: ReturnType<TaskLogIndex['find']>
    try {
      this.masterCheck.check('StreamTaskLogs', String(call.request.task_id ?? ''), call)
      taskId = validateTaskId(call.request.task_id, 'task_id')
      if (this.closed || !this.logs) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', `worker ${this.config.id} is shutting down`)
      found = this.logs.find(taskId)
    } catch (err) {
      return refuse(err)
    }
    // A log in memory is served at once; one read from disk (a finished task's logs.json) after the read.
    const served = (async (): Promise<void> => {
      const log = await found
      if (call.cancelled) return
      if (!log) {
        call.write(notFoundChunk(taskId))
        call.end()
        return
      }
      const req = parseLogRequest(call.request, taskId)
      if (this.deps.log.isLevelEnabled('debug')) this.deps.log.debug({ taskId, attempt: log.attempt, follow: req.follow, fromSeq: req.fromSeq, tail: req.tail }, `StreamTaskLogs for task ${taskId} (attempt ${log.attempt})`)
      await serveLog(call, req, log)
    })().catch(refuse)
    this.answering.add(served)
    const settled = (): void => void this.answering.delete(served)
    void served.then(settled, settled)
  }

  /** A token file others can read is a token others can use: said once, at start. */
  private warnAboutTokenFile(): void {
    const file = this.config.tokenFile
    if (!file) return
    try {
      const mode = statSync(file).mode & 0o777
      if ((mode & 0o077) !== 0) {
        this.deps.log.warn({ tokenFile: file, mode: mode.toString(8) }, `--token-file ${file} can be read by other users (mode ${mode.toString(8)}): anyone who reads it can act as worker ${this.config.id}; chmod 600 it`)
      }
    } catch {
      // It was read when the config was built; a file gone since is not this check's business.
    }
  }

  private async masterRegister(req: MasterInfoMsg, call: grpc.ServerUnaryCall<MasterInfoMsg, RegisterAckMsg>): Promise<RegisterAckMsg> {
    const masterId = validateString(req.master_id, 'master_id', { max: 128 })
    const address = validateAddress(req.master_address, 'master_address')
    // Started with --master: those masters and no other, whoever asks (a master that advertises
    // another address for itself gets this too; the worker then comes back by joining on its own).
    const pinned = this.config.masters
    if (pinned.length > 0 && !pinned.includes(address)) {
      const which = pinned.length === 1 ? 'the master it was started with' : 'the masters it was started with'
      throw this.masterCheck.refuse('MasterRegister', call, 'CLOUDAI_WRONG_MASTER', `worker ${this.config.id} follows only ${which} (--master ${pinned.join(',')}); MasterRegister named ${address}`)
    }
    const link = this.link
    if (!link || this.closed) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'the worker is shutting down')
    // One of ours at an epoch at least the highest seen: followed, whichever of the list it is.
    this.admitEpoch('MasterRegister', req.master_epoch, call, address)
    const already = link.masterAddress === address && link.status === 'connected'
    if (!already) this.deps.log.info({ masterId, master: address }, `MasterRegister from ${masterId || 'a master'} at ${address}`)
    try {
      await link.follow(address)
    } catch (err) {
      return { success: false, message: `could not register with ${address}: ${(err as Error).message}` }
    }
    return { success: true, message: already ? `already connected to ${address}` : `registered with ${address}` }
  }

  /**
   * What heartbeats list: every task executing here (status "running", with the resources the
   * master gave it) and every result not yet delivered (its final status, nothing held), so that
   * the master does not requeue a task whose result is merely on its way.
   */
  private runningTasks(): RunningTaskMsg[] {
    const out: RunningTaskMsg[] = []
    for (const p of this.executor?.list() ?? []) {
      const a = this.allocations.get(p.taskId)
      out.push({ task_id: p.taskId, cpu_allocated: a?.cpu_allocated ?? 0, memory_allocated: a?.memory_allocated ?? 0, gpu_allocated: a?.gpu_allocated ?? 0, status: 'running', attempt: p.attempt })
    }
    for (const r of this.outbox?.list() ?? []) {
      out.push({ task_id: r.task_id, cpu_allocated: 0, memory_allocated: 0, gpu_allocated: 0, status: r.status, attempt: r.attempt })
    }
    // The master refuses a heartbeat with more; running tasks come first.
    return out.length > MAX_RUNNING_TASKS ? out.slice(0, MAX_RUNNING_TASKS) : out
  }

  private assignTask(req: TaskMsg): Promise<TaskAckMsg> {
    if (this.closed || !this.executor) return Promise.reject(new CloudaiError('CLOUDAI_SHUTTING_DOWN', `worker ${this.config.id} is shutting down`))
    const task = parseTask(req)
    // AssignTask may be retried: a call for the attempt being started joins the first call. Asked
    // for another attempt of a task that runs (or starts) here, the worker never claims it runs
    // that one: it refuses and names its own, so the master can keep the run that exists instead
    // of believing in one that never started (CloudAI's masters send no attempt: 0 is any).
    const pending = this.starting.get(task.taskId)
    if (pending && (pending.attempt === task.attempt || task.attempt === 0)) return pending.ack
    const running = this.executor.get(task.taskId)
    const here = running?.attempt ?? pending?.attempt
    if (here !== undefined) {
      // A run started without a number (by a CloudAI master: 0) is the one this master asks for.
      if (here === task.attempt || task.attempt === 0 || here === 0) return Promise.resolve({ success: true, message: 'already running', held_attempt: 0 })
      return Promise.resolve({ success: false, message: `attempt ${task.attempt} not started: this worker already runs attempt ${here} of task ${task.taskId}`, held_attempt: here })
    }
    if (this.outbox?.has(task.taskId, task.attempt) || (task.attempt === 0 && this.outbox?.list().some((r) => r.task_id === task.taskId))) {
      return Promise.resolve({ success: false, message: 'already finished; result pending delivery' })
    }
    // The same for an attempt that finished here and whose result is on its way: a finished attempt
    // is not run again next to its result (the master takes that result instead).
    const finished = task.attempt === 0 ? undefined : this.outbox?.list().find((r) => r.task_id === task.taskId && r.attempt > 0)
    if (finished) {
      return Promise.resolve({ success: false, message: `attempt ${task.attempt} not started: this worker holds the result of attempt ${finished.attempt} of task ${task.taskId}, not yet delivered`, held_attempt: finished.attempt })
    }
    const p = this.startTask(task).finally(() => {
      this.starting.delete(task.taskId)
      this.cancelledEarly.delete(task.taskId)
    })
    this.starting.set(task.taskId, { attempt: task.attempt, ack: p })
    return p
  }

  private async startTask(task: TaskInput): Promise<TaskAckMsg> {
    const { log } = this.deps
    const executor = this.executor!
    let spec: ProcessSpec
    if (task.dockerImage) {
      const docker = await this.docker.check()
      if (!docker.ok) {
        const message = `docker_image is set but no Docker engine answers on worker ${this.config.id}: ${docker.reason}`
        log.warn({ taskId: task.taskId, image: task.dockerImage, reason: docker.reason }, `Refused task ${task.taskId}: ${message}`)
        return { success: false, message }
      }
      const dockerPath = this.docker.dockerPath
      spec = {
        taskId: task.taskId,
        attempt: task.attempt,
        argv: dockerRunArgv({ taskId: task.taskId, image: task.dockerImage, command: task.command, envKeys: ['CLOUDAI_TASK_ID', ...Object.keys(task.env)], dockerPath }),
        env: task.env,
        timeoutMs: task.timeoutMs,
        onSignal: (signal) => {
          signalContainer(task.taskId, signal, dockerPath).catch((err: unknown) => log.warn({ taskId: task.taskId, signal, err }, `Could not forward ${signal} to the container of task ${task.taskId}`))
        },
      }
    } else {
      spec = { taskId: task.taskId, attempt: task.attempt, argv: shellArgv(task.command), env: task.env, timeoutMs: task.timeoutMs }
    }
    if (this.closed) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', `worker ${this.config.id} is shutting down`)
    if (this.cancelledEarly.has(task.taskId)) return { success: false, message: 'cancelled before it started' }
    this.allocations.set(task.taskId, { task_id: task.taskId, cpu_allocated: task.cpu, memory_allocated: task.memory, gpu_allocated: task.gpu, status: 'running', attempt: task.attempt })
    try {
      await executor.start(spec)
    } catch (err) {
      this.allocations.delete(task.taskId)
      if (isCloudaiError(err) && err.code === 'CLOUDAI_SHUTTING_DOWN') throw err
      const message = `could not start task ${task.taskId} on worker ${this.config.id}: ${(err as Error).message}`
      log.error({ taskId: task.taskId, err: (err as Error).message }, message)
      return { success: false, message }
    }
    return { success: true, message: `started on worker ${this.config.id}` }
  }

  private async cancelTask(req: TaskIdMsg): Promise<TaskAckMsg> {
    const id = validateTaskId(req.task_id, 'task_id')
    if (this.executor?.cancel(id)) {
      this.deps.log.info({ taskId: id }, `Cancelling task ${id}: SIGTERM to its process group, SIGKILL after ${this.config.killGraceMs}ms`)
      return { success: true, message: 'cancelling' }
    }
    if (this.starting.has(id)) {
      this.cancelledEarly.add(id)
      return { success: true, message: 'cancelled before it started' }
    }
    return { success: false, message: 'not running on this worker' }
  }

  /** A process ended: its result goes to the outbox (on disk) and then to the master. */
  private onFinished(o: TaskOutcome): void {
    this.allocations.delete(o.taskId)
    this.taskDirs?.taskFinished(o.taskId, o.attempt)
    this.logs?.keep(o.taskId, o.log)
    const result: TaskResultMsg = {
      task_id: o.taskId,
      worker_id: this.config.id,
      status: resultStatusWord(o.status),
      // The last lines as StreamTaskLogs numbers them, and how many there were: a master numbers
      // them as the worker did once the worker is gone (task-log-feeds.ts).
      logs: utf8Tail(o.log.tailText(), MAX_REPORT_LOG_BYTES),
      log_lines: o.log.nextSeq - 1,
      result_location: o.logFile,
      output_files: [],
      exit_code: o.exitCode ?? 0,
      has_exit_code: o.exitCode !== null,
      duration_ms: o.durationMs,
      started_at: o.startedAt,
      finished_at: o.finishedAt,
      attempt: o.attempt,
      reason: o.reason,
    }
    this.reporter?.submit(result)
  }

  /**
   * Stops taking tasks, cancels the running ones (they end as cancelled and go to the outbox),
   * gives their results one short delivery round, then leaves the master and stops the server.
   * Idempotent: every call waits for the same shutdown.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    try {
      await this.stopParts()
    } finally {
      this.dirLock?.release()
    }
  }

  private async stopParts(): Promise<void> {
    this.closed = true
    const { log } = this.deps
    const running = this.executor?.size ?? 0
    if (running > 0) log.info({ running }, `Stopping: cancelling ${running} running task(s)`)
    await this.executor?.close()
    this.taskDirs?.close()
    await this.reporter?.close(SHUTDOWN_REPORT_MS)
    this.link?.close()
    await this.stopServer()
    this.masterCheck.close()
    log.info({ workerId: this.config.id }, `Worker ${this.config.id} stopped`)
  }

  /**
   * Stops the gRPC server without depending on its peers: no new connections; the calls under way
   * (every new one is refused by now) get SERVER_DRAIN_MS to be answered, and are cancelled after
   * that; forceShutdown sends every peer a GOAWAY; a peer that has not closed its connection
   * CONNECTION_CLOSE_MS later is cut off (one that is there closes it within a round trip).
   *
   * grpc-js alone cannot do the last step: tryShutdown and forceShutdown both close each HTTP/2
   * session gracefully, and Node then keeps the socket open until the peer closes its end. A
   * master's dial thread sleeps between dials with its last MasterRegister connection open, so a
   * worker that master had dialled stayed up until the master dialled it again, a heartbeat timeout
   * after it had stopped.
   */
  private async stopServer(): Promise<void> {
    const { server, listener } = this
    this.server = null
    this.listener = null
    if (!server || !listener) return
    listener.stopAccepting()
    await settledWithin([...this.answering], SERVER_DRAIN_MS)
    server.forceShutdown()
    // Resolves once every connection it accepted is closed.
    await listener.closeWithin(CONNECTION_CLOSE_MS)
  }
}

/** Waits until every promise has settled or `ms` have passed, whichever comes first. */
async function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  if (promises.length === 0) return
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))
  await Promise.race([Promise.allSettled(promises), expired])
  clearTimeout(timer)
}

/**
 * Answers a unary call; a refusal (thrown or rejected) is a gRPC status with `<message> (<CODE>)` in
 * details. Resolves once the answer is handed to grpc-js.
 */
function answer<T>(handle: () => Promise<T>, cb: grpc.sendUnaryData<T>): Promise<void> {
  let p: Promise<T>
  try {
    p = handle()
  } catch (err) {
    p = Promise.reject(err)
  }
  return p.then(
    (res) => cb(null, res),
    (err: unknown) => {
      const e = toCloudaiError(err)
      const metadata = new grpc.Metadata()
      metadata.set('cloudai-error-code', e.code)
      cb({ code: e.grpcStatus, details: `${e.message} (${e.code})`, metadata })
    },
  )
}

function wholeNumber(value: unknown, field: string, max: number): number {
  const n = value ?? 0
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > max) {
    throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a whole number from 0 to ${max}, got ${String(n)}`)
  }
  return n
}

/** Every field of an AssignTask, checked before anything runs. */
function parseTask(req: TaskMsg): TaskInput {
  const taskId = validateTaskId(req.task_id, 'task_id')
  // The same check of what runs as the master's submission (src/shared/validation.ts).
  const { dockerImage, command, env } = validateTaskSpec(req)

  const target = validateString(req.target_worker_id, 'target_worker_id', { max: 64 })
  if (target) validateWorkerId(target, 'target_worker_id')
  for (const f of ['user_id', 'task_name', 'task_type'] as const) validateString(req[f], f, { max: 256 })
  validateAmount(req.sla_multiplier ?? 0, 'sla_multiplier', 1e6)
  validateAmount(req.submitted_at ?? 0, 'submitted_at', Number.MAX_SAFE_INTEGER)
  validateAmount(req.req_storage ?? 0, 'req_storage', MAX_TASK_REQUEST.storage)

  return {
    taskId,
    attempt: wholeNumber(req.attempt, 'attempt', 2 ** 31 - 1),
    command,
    dockerImage,
    env,
    timeoutMs: wholeNumber(req.timeout_ms, 'timeout_ms', Number.MAX_SAFE_INTEGER),
    cpu: validateAmount(req.req_cpu ?? 0, 'req_cpu', MAX_TASK_REQUEST.cpu),
    memory: validateAmount(req.req_memory ?? 0, 'req_memory', MAX_TASK_REQUEST.memory),
    gpu: validateAmount(req.req_gpu ?? 0, 'req_gpu', MAX_TASK_REQUEST.gpu),
  }
}
