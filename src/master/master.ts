import { statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { MasterConfig } from '../config.js'
import type { Logger } from '../shared/log.js'
import { advertiseHost } from '../shared/advertise.js'
import { CloudaiError, isCloudaiError } from '../shared/errors.js'
import { DataDirLock } from '../shared/data-dir-lock.js'
import { Counters } from './counters.js'
import { clusterAuthOf } from '../shared/cluster-auth.js'
import { loadUws } from './api/uws.js'
import { MasterKey } from '../shared/worker-credential.js'
import type { Store } from '../store/store.js'
import { createStore } from '../store/select.js'
import { StoreJournal } from '../store/journal.js'
import { HttpApi } from './api/http.js'
import type { LiveSource } from './api/ws.js'
import { loadDashboard } from './api/static.js'
import type { MasterControl } from './control.js'
import { ControlService } from './control-service.js'
import { InlineDialer, PoolDialer, type Dialer } from './reconnect/dialer.js'
import { grpcConnectionBudget, type ConnectionBudget } from './connection-budget.js'
import { MasterGrpcServer } from './grpc.js'
import { LiveFeed } from './live.js'
import { Liveness } from './liveness.js'
import { MasterMetrics } from './metrics.js'
import { autoTelemetryThreads, TelemetryHub } from './telemetry/hub.js'
import { QueueProcessor } from './queue.js'
import { WorkerDrains } from './drains.js'
import { TaskTable } from './tasks.js'
import { TaskPruner } from './task-retention.js'
import { formatLongDuration } from '../shared/duration.js'
import { WorkerClients } from './worker-clients.js'
import { TaskLogFeeds } from './task-log-feeds.js'
import { ReconnectMonitor } from './reconnect/monitor.js'
import { Leadership, leaseStoreOf } from './leadership.js'
import { LeaderRole, leaseHeldError, type MasterPhase } from './leader-role.js'
import { TakeoverGrace } from './takeover-grace.js'
import { SuspectProbes } from './suspects.js'
import { Registry } from './registry.js'
import { WorkerAuth } from './worker-auth.js'

export interface MasterDeps {
  log: Logger
  /** Defaults to SQLite under config.dataDir. */
  store?: Store
  /** Defaults to the Piscina dial pool. */
  dialer?: Dialer
  /**
   * A master process over several masters (standby-cycle.ts): the HTTP API they all serve on (a
   * deposed master's API, listening, for the standby that follows it; uWebSockets.js cannot bind
   * the port again in the same process), or what the first one builds it with; the data
   * directory's lock, held already; and the call once this master, deposed, has stopped acting.
   */
  cycle?: { http?: HttpApi; front?: { control: MasterControl; live: LiveSource; notLeader: () => CloudaiError | null }; dirLock?: DataDirLock | null; onDeposed: () => void }
}

/** `standby`: waiting for the lease (--standby); `deposed`: it lost the lease and stopped acting (leader-role.ts). */
type Phase = MasterPhase

/**
 * The composition root: builds the master's parts, starts them in the CloudAI order and stops
 * them in the CloudAI shutdown order. What an operator can ask of it is its control service
 * (control-service.ts), which it hands to the HTTP API and the prompt.
 */
export class Master {
  readonly registry = new Registry()
  readonly tasks: TaskTable
  /** The hot counters in shared memory: every thread counts here; /metrics and the bench read them. */
  readonly counters = new Counters()
  readonly telemetry: TelemetryHub
  private readonly metricsView: MasterMetrics
  /** Worker, task and telemetry events for the WebSocket. */
  readonly live: LiveFeed
  /** The operator's control service (MasterControl): what the HTTP API, the prompt and tests call. */
  readonly control: ControlService
  private readonly queue: QueueProcessor
  /** Cordons and drains (drains.ts). */
  private readonly drains: WorkerDrains
  /** Task output for the API: one StreamTaskLogs per followed task (src/master/task-log-feeds.ts). */
  private readonly logFeeds: TaskLogFeeds
  /** Removes finished tasks past --task-retention or --max-finished-tasks. */
  private readonly pruner: TaskPruner
  private readonly log: Logger
  private readonly store: Store
  private readonly journal: StoreJournal
  private readonly dialer: Dialer
  private readonly liveness: Liveness
  private readonly monitor: ReconnectMonitor
  /** Dials suspect workers (an AssignTask got no answer) until they answer or go inactive. */
  private readonly suspects: SuspectProbes
  private readonly grpc: MasterGrpcServer
  private readonly http: HttpApi
  /** The master's secret: workers' tokens derive from it; its proofs to workers are made with it. */
  private readonly key: MasterKey
  private readonly keyFile: { path: string; created: boolean }
  private readonly workerAuth: WorkerAuth
  private readonly grpcBudget: ConnectionBudget
  /** Held from the start of start() to the end of close(); none when nothing of ours is in --data-dir. */
  private dirLock: DataDirLock | null = null
  /** Handed over to the master that follows this one (handOver): not closed with this one. */
  private keepHttp = false
  private phase: Phase = 'new'
  private closing: Promise<void> | null = null
  private startedAt = 0
  private advertised = ''
  /**
   * Workers the last load heard of a moment ago (a takeover, a restart), most recently active
   * first: dialled at once by dialLoadedAlive.
   */
  private loadedAlive: string[] = []
  /** The store's lease (issue 19); null for a store masters cannot share. */
  private readonly leadership: Leadership | null
  /** What the API and gRPC answer while this master does not lead, and the stop when it is deposed. */
  private readonly role: LeaderRole
  /** The heartbeats' reconcile, held back for a heartbeat timeout after a takeover (takeover-grace.ts). */
  private readonly grace: TakeoverGrace

  constructor(private readonly config: MasterConfig, private readonly deps: MasterDeps) {
    this.log = deps.log
    // The key before anything else that needs it, and before the store opens: the store alone
    // (or a backup of it) must never be enough to act as a worker or as this master.
    const keyPath = resolve(config.masterKeyFile ?? join(config.dataDir, 'master.key'))
    const { key, created } = MasterKey.loadOrCreate(keyPath)
    this.key = key
    this.keyFile = { path: keyPath, created }
    // First, before anything that holds resources: CLOUDAI_BAD_CONFIG when --grpc-max-connections
    // asks for more than the file-descriptor limit allows.
    this.grpcBudget = grpcConnectionBudget(config.grpcMaxConnections, config.wsMaxConnections)
    this.store = deps.store ?? createStore(config)
    const auth = clusterAuthOf(config)
    this.dialer = deps.dialer ?? (config.dialer === 'inline' ? new InlineDialer({ auth, masterKey: key }) : new PoolDialer({ threads: config.dialThreads, auth, masterKey: key }))
    this.dialer.counters = this.counters.buffer
    const lease = leaseStoreOf(this.store)
    this.leadership = lease === null ? null : new Leadership({ lease, masterId: config.masterId, renewMs: config.leaseRenewMs, timeoutMs: config.leaseTimeoutMs, log: this.log, address: () => this.addresses() })
    this.journal = new StoreJournal(this.store, this.registry, { log: this.log, limit: config.storeJournalLimit, heartbeatFlushMs: config.storeHeartbeatIntervalMs, onLateOpen: () => this.loadLate() })
    this.tasks = new TaskTable(this.journal, Date.now, { retentionMs: config.taskRetentionMs, maxFinished: config.maxFinishedTasks, outputTailBytes: config.taskOutputTailBytes })
    this.pruner = new TaskPruner({ tasks: this.tasks, retentionMs: config.taskRetentionMs, log: this.log })
    this.journal.on('tasks-written', (ids) => this.tasks.markDurable(ids))
    // The epoch every MasterRegister, AssignTask and CancelTask carries (issue 19): read as each
    // call goes out, so a deposed master's calls carry its old epoch and workers refuse them.
    const epoch = (): number => this.epoch
    const clients = new WorkerClients(auth, key, epoch)
    this.logFeeds = new TaskLogFeeds({ clients, task: (id) => this.tasks.get(id), worker: (id) => this.registry.get(id), log: this.log, counters: this.counters })
    this.tasks.on('task-changed', (t) => this.logFeeds.taskChanged(t.id))
    this.queue = new QueueProcessor({ tasks: this.tasks, registry: this.registry, clients, log: this.log, heartbeatTimeoutMs: config.heartbeatTimeoutMs, requeueAfterMs: config.requeueAfterMs ?? config.heartbeatTimeoutMs, counters: this.counters, storeRecovered: this.journal, onReleased: (id) => this.drains.released(id) })
    this.drains = new WorkerDrains({ registry: this.registry, tasks: this.tasks, evict: (id, why) => this.queue.evict(id, why), busyOn: (id) => this.queue.busyOn(id), log: this.log })
    this.liveness = new Liveness(this.registry, { timeoutMs: config.heartbeatTimeoutMs, log: this.log, counters: this.counters })
    this.monitor = new ReconnectMonitor(this.registry, this.dialer, {
      intervalMs: config.reconnectIntervalMs,
      dialTimeoutMs: config.dialTimeoutMs,
      masterId: config.masterId,
      masterAddress: () => this.advertised,
      log: this.log,
      counters: this.counters,
      fastWindowMs: config.reconnectFastWindowMs,
      ratePerSec: config.reconnectRatePerSec,
      maxInflight: config.reconnectMaxInflight,
      epoch,
    })
    this.suspects = new SuspectProbes(this.registry, this.dialer, { masterId: config.masterId, masterAddress: () => this.advertised, epoch, dialTimeoutMs: config.dialTimeoutMs, log: this.log })
    this.telemetry = new TelemetryHub(this.registry, {
      placement: config.telemetryThreads === 'auto' ? autoTelemetryThreads() : config.telemetryThreads,
      counters: this.counters,
      log: this.log,
      historyMs: config.telemetryHistoryMs,
      stepMs: config.telemetryStepMs,
      summaryMs: Math.min(1000, config.telemetryStepMs),
    })
    this.metricsView = new MasterMetrics({
      counters: this.counters,
      registry: this.registry,
      telemetry: this.telemetry,
      monitor: () => this.monitor.status,
      passes: () => ({ count: this.monitor.passCount, last: this.monitor.lastPass }),
      reconnect: () => this.monitor.stats,
      taskCounts: () => this.tasks.counts(),
      wsConnections: () => this.http.wsConnections,
      store: () => this.journal.status(),
      grpc: () => ({ open: this.grpc.connections, max: this.grpcBudget.max }),
    })
    // With --tls-ca a worker's client certificate may name it (spiffe://cloudai/worker/<id>).
    this.workerAuth = new WorkerAuth({ registry: this.registry, mode: config.workerAuth, certificates: auth.verifiesPeers, log: this.log })
    this.grace = new TakeoverGrace(this.queue, config.heartbeatTimeoutMs)
    this.grpc = new MasterGrpcServer({
      registry: this.registry,
      tasks: this.grace,
      telemetry: this.telemetry,
      counters: this.counters,
      host: config.grpcHost,
      port: config.grpcPort,
      log: this.log,
      auth,
      workerAuth: this.workerAuth,
      notLeader: () => this.role.refusal(),
      // A heartbeat stream silent for the heartbeat timeout speaks for an inactive worker: ended.
      limits: { maxConnections: this.grpcBudget.max, idleTimeoutMs: config.grpcIdleTimeoutMs, streamSilenceMs: config.heartbeatTimeoutMs },
    })
    this.control = new ControlService({
      registry: this.registry,
      tasks: this.tasks,
      queue: this.queue,
      drains: this.drains,
      logFeeds: this.logFeeds,
      journal: this.journal,
      storeKind: this.store.kind,
      key,
      monitor: this.monitor,
      telemetry: this.telemetry,
      metrics: this.metricsView,
      workerAuth: this.workerAuth,
      config,
      log: this.log,
      guard: () => this.assertRunning(),
      startedAt: () => this.startedAt,
      advertised: () => this.advertised,
      role: () => ({ ...this.role.status(), acting: this.phase === 'running' && this.role.refusal() === null }),
    })
    this.live = new LiveFeed({ registry: this.registry, tasks: this.tasks, telemetry: this.telemetry, status: () => this.control.status() })
    const front = deps.cycle?.front
    this.http = deps.cycle?.http ?? new HttpApi({
      control: front?.control ?? this.control,
      host: config.httpHost,
      port: config.httpPort,
      log: this.log,
      live: front?.live ?? this.live,
      counters: this.counters,
      ws: { maxBufferBytes: config.wsMaxBufferBytes, maxConnections: config.wsMaxConnections },
      apiToken: config.apiToken,
      allowHosts: config.apiAllowHosts,
      allowOrigins: config.apiAllowOrigins,
      dashboard: loadDashboard(),
      notLeader: front?.notLeader ?? (() => this.role.refusal()),
    })
    this.role = new LeaderRole({
      leadership: this.leadership,
      phase: () => this.phase,
      log: this.log,
      retryMs: config.leaseRenewMs,
      onDeposed: (reason) => this.deposed(reason),
    })
    // A write the store refused as a deposed holder's: the lease is lost, whatever the timers say.
    this.journal.on('fenced', (epoch, current) => this.leadership?.lose(`the store refused a write at epoch ${epoch} as stale (the lease is at epoch ${current ?? 'none'}): another master holds the lease`))
  }

  /** Null while this master leads; else what the API and gRPC refuse with (leader-role.ts). */
  notLeader(): CloudaiError | null {
    return this.role.refusal()
  }

  /** The epoch this master acts under (NO_EPOCH without a lease): what its calls to workers carry. */
  get epoch(): number {
    return this.role.epoch
  }

  get grpcPort(): number {
    return this.grpc.port
  }

  get httpPort(): number {
    return this.http.port
  }

  /** The gRPC address workers are told to call back on. */
  get advertiseAddress(): string {
    return this.advertised
  }

  get reconnectMonitor(): ReconnectMonitor {
    return this.monitor
  }

  async start(): Promise<void> {
    if (this.phase !== 'new') throw new Error('a Master can be started once')
    this.phase = 'starting'
    const log = this.log
    try {
      // First of all, before the store opens, a port is bound or a worker is dialled: the data
      // directory is this master's alone, and writable (CLOUDAI_DATA_DIR_LOCKED / _READONLY, exit
      // code 2). The key was read or created in the constructor, whole or not at all (a second
      // master reads the first one's key, then is refused here; a read-only directory is refused
      // there with the same code).
      // A standby shares the leader's directory (its store, its key) under a lock of its own.
      if (this.deps.cycle?.dirLock) this.dirLock = this.deps.cycle.dirLock
      else if (this.config.store.kind === 'sqlite' || this.config.masterKeyFile === null) this.dirLock = DataDirLock.acquire(this.config.dataDir, this.config.standby ? 'standby' : 'master')
      // First: a Node.js or platform the HTTP API's uWebSockets.js cannot run on stops the start
      // before the store opens or a port is bound. The HTTP API gets the same module later.
      loadUws()
      const { path, created } = this.keyFile
      log.info({ masterKeyFile: path, created }, created
        ? `Master key created at ${path} (mode 0600): back it up apart from the store; without it every worker needs a new token`
        : `Master key loaded from ${path}`)
      const mode = statSync(path).mode & 0o777
      if ((mode & 0o077) !== 0) {
        log.warn({ masterKeyFile: path, mode: mode.toString(8) }, `The master key ${path} can be read by other users (mode ${mode.toString(8)}): whoever reads it and the store can act as every worker; chmod 600 it`)
      }
      log.info({ step: 1, store: this.store.kind, location: this.store.location }, `Opening ${this.store.kind} store at ${this.store.location}`)
      const opened = await this.openStore()

      log.info({ step: 2, masterId: this.config.masterId }, `Master ${this.config.masterId} created`)
      if (this.config.standby) return await this.startStandby(opened)
      // Before anything is loaded or written: the lease, or the refusal naming who holds it.
      // A store that opened but cannot take the lease now (another process holds SQLite's write
      // lock) is treated as one that did not answer: this master leads unfenced until it can.
      const taken = this.leadership && opened ? await this.leadership.acquire().catch((err: unknown) => ({ err })) : null
      if (taken && 'acquired' in taken && !taken.acquired) throw leaseHeldError(taken.lease)
      if (this.leadership && (taken === null || 'err' in taken)) {
        const why = taken && 'err' in taken ? (taken.err as Error).message : 'it did not answer'
        log.warn({ store: this.store.kind, err: why }, `The store cannot give this master the lease now (${why}): it leads unfenced, and takes the lease (or stops, if another master holds it) once the store answers`)
        if (opened) await this.leadership.adoptOwnEpoch()
        this.role.runUnfenced()
      }
      await this.startParts(opened)

      const grpcPort = await this.grpc.start()
      this.advertised = this.config.advertise ?? `${advertiseHost(this.config.grpcHost)}:${grpcPort}`
      this.logGrpcListening(grpcPort)

      const httpPort = this.http.port > 0 ? this.http.port : await this.http.start()
      log.info({ step: 7, httpPort, allowedHosts: this.http.allowedHosts, allowedOrigins: this.config.apiAllowOrigins }, `HTTP API listening on http://${this.config.httpHost}:${httpPort}`)

      this.startedAt = Date.now()
      this.phase = 'running'
      log.info({ step: 8, workers: this.registry.size, atOnce: this.loadedAlive.length }, `Sending MasterRegister to ${this.registry.size} registered worker(s)${this.loadedAlive.length > 0 ? `, at once to the ${this.loadedAlive.length} heard of a moment ago` : ''}`)
      this.dialLoadedAlive()
      this.monitor.runPass().catch((err: unknown) => log.error({ err }, 'The first reconnection pass failed; the monitor runs the next one on its interval'))
      // The addresses a standby names, now that the ports are bound.
      if (taken && 'acquired' in taken) await this.role.publish()
    } catch (err) {
      // A typed refusal (a port in use, a locked data directory) is the operator's to fix: its code
      // and reason; anything else with its stack.
      log.error(isCloudaiError(err) ? { code: err.code, reason: err.message } : { err }, 'master failed to start; shutting down what started')
      await this.close()
      throw err
    }
  }

  /**
   * --standby: the servers answer as a standby (leader-role.ts), nothing is loaded, and the lease
   * is polled every --lease-renew; once it is taken, takeOver() loads and leads.
   */
  private async startStandby(opened: boolean): Promise<void> {
    const log = this.log
    if (!this.leadership || !opened) throw new CloudaiError('CLOUDAI_STORE_FAILED', `a standby needs a store it can share that answers now (${this.store.kind} at ${this.store.location}${opened ? ' has no lease' : ' is not answering'})`)
    this.phase = 'standby'
    const grpcPort = await this.grpc.start()
    this.advertised = this.config.advertise ?? `${advertiseHost(this.config.grpcHost)}:${grpcPort}`
    this.logGrpcListening(grpcPort)
    const httpPort = this.http.port > 0 ? this.http.port : await this.http.start()
    log.info({ step: 7, httpPort, allowedHosts: this.http.allowedHosts, allowedOrigins: this.config.apiAllowOrigins }, `HTTP API listening on http://${this.config.httpHost}:${httpPort}`)
    this.leadership.on('acquired', (epoch) => {
      this.takeOver(epoch).catch((err: unknown) => {
        log.error({ err }, 'The takeover failed; shutting down')
        // A master that holds the lease and cannot lead must let it go: the next standby leads.
        this.close().catch(() => undefined)
      })
    })
    await this.leadership.refresh()
    this.leadership.waitForLease()
    const holder = this.leadership.leader()
    log.info({ role: 'standby', leaderApi: holder.api, leaderGrpc: holder.grpc, epoch: holder.epoch, leaseRenewMs: this.config.leaseRenewMs }, `Standby: waiting for the lease${holder.holder ? ` held by ${holder.holder} (${holder.api ?? 'address unknown'})` : ''}, polled every ${this.config.leaseRenewMs}ms`)
  }

  /** A standby that took the lease (fenced already): loads the store and starts acting. */
  private async takeOver(epoch: number): Promise<void> {
    if (this.phase !== 'standby') return
    const log = this.log
    const started = performance.now()
    this.phase = 'taking-over'
    await this.startParts(true)
    await this.role.publish()
    if (this.phase !== 'taking-over') return
    this.startedAt = Date.now()
    this.grace.begin()
    this.phase = 'running'
    log.info({ role: 'leader', epoch, reconcileAfterMs: this.config.heartbeatTimeoutMs, workers: this.registry.size, atOnce: this.loadedAlive.length, tookMs: Math.round(performance.now() - started) }, `Took over as leader (epoch ${epoch}): sending MasterRegister to ${this.registry.size} registered worker(s), most recently active first${this.loadedAlive.length > 0 ? `, at once to the ${this.loadedAlive.length} heard of a moment ago` : ''}`)
    this.dialLoadedAlive()
    this.monitor.runPass().catch((err: unknown) => log.error({ err }, 'The first reconnection pass after the takeover failed; the monitor runs the next one on its interval'))
  }

  /** The lease is lost (leader-role.ts has closed the gates already): every part that acts stops. */
  private async deposed(reason: string): Promise<void> {
    if (this.phase === 'closing' || this.phase === 'closed') return
    this.phase = 'deposed'
    this.log.warn({ reason }, 'Stopping the queue, the reconnection monitor, the probes and the heartbeat checks: this master no longer leads; it answers as a standby naming the new leader')
    this.logFeeds.close()
    this.drains.close()
    this.pruner.close()
    this.liveness.close()
    await this.queue.close()
    await this.monitor.close()
    await this.suspects.close()
    this.deps.cycle?.onDeposed()
  }

  /**
   * A deposed master's HTTP API and data-directory lock, for the standby that follows it in the
   * same process (standby-cycle.ts): its close then leaves both as they are.
   */
  handOver(): { http: HttpApi; dirLock: DataDirLock | null } {
    this.keepHttp = true
    const dirLock = this.dirLock
    this.dirLock = null
    return { http: this.http, dirLock }
  }

  private logGrpcListening(grpcPort: number): void {
    const { limits } = this.grpc
    this.log.info(
      { step: 6, grpcPort, advertise: this.advertised, maxConnections: limits.maxConnections, fdLimit: this.grpcBudget.fdLimit, fdReserve: this.grpcBudget.reserve, idleTimeoutMs: limits.idleTimeoutMs, prefaceTimeoutMs: limits.prefaceTimeoutMs, maxConcurrentStreams: limits.maxConcurrentStreams, streamSilenceMs: limits.streamSilenceMs, keepalive: limits.keepalive },
      `gRPC server listening on ${this.config.grpcHost}:${grpcPort} (workers call back on ${this.advertised}); at most ${limits.maxConnections} connections`,
    )
    if (this.grpcBudget.warning) this.log.warn({ fdLimit: this.grpcBudget.fdLimit, maxConnections: limits.maxConnections }, `gRPC connections: ${this.grpcBudget.warning}`)
  }

  /** Where this master answers, as a client reaches it: what the lease names for standbys. */
  private addresses(): { api: string | null; grpc: string | null } {
    const http = this.http?.port ?? 0
    return { api: http > 0 ? `http://${advertiseHost(this.config.httpHost)}:${http}` : null, grpc: this.advertised || null }
  }

  /** Everything that acts, from the load to the reconnection monitor: at start, or at a takeover. */
  private async startParts(opened: boolean): Promise<void> {
    const log = this.log
    this.journal.start(opened)
    if (opened) {
      const { workers, tasks } = await this.loadFromStore()
      const c = this.tasks.counts()
      log.info({ step: 3, workers, tasks: c }, `Loaded ${workers} worker(s) (inactive until they connect) and ${tasks} task(s) (${c.queued} queued, ${c.assigned + c.running} on workers) from the store`)
    }

    // Tasks loaded past their retention or their count go before the queue looks at anything.
    this.pruner.start()
    this.suspects.start()
    this.queue.start()
    // After the queue and after the load (a deadline passed while the master was down is acted on as each worker turns active).
    this.drains.start()
    const queued = this.tasks.counts().queued
    log.info({ step: 4, queued }, `Queue processor started (${queued} task(s) queued)`)

    this.liveness.start()
    this.telemetry.start()
    this.metricsView.start()
    this.live.start()
    const placement = this.telemetry.placement
    log.info(
      { telemetryThreads: placement, historyMs: this.config.telemetryHistoryMs, stepMs: this.config.telemetryStepMs },
      placement === 'per-worker' ? 'Telemetry started: one thread per connected worker' : `Telemetry started on ${placement} thread(s)`,
    )
    // Logs "Worker reconnection monitor started" (or the warning that it is disabled).
    this.monitor.start()
    // With --worker-auth none: the warning now, and every minute while the master runs.
    this.workerAuth.start()
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  /**
   * False when the store cannot be reached now (CLOUDAI_STORE_UNAVAILABLE): the master then starts
   * on an empty registry and the journal loads the store once it answers. Any other failure (a bad
   * path, a newer schema) stops the start.
   */
  private async openStore(): Promise<boolean> {
    try {
      await this.store.open()
      return true
    } catch (err) {
      if (!isCloudaiError(err) || err.code !== 'CLOUDAI_STORE_UNAVAILABLE') throw err
      this.log.warn(
        { step: 3, store: this.store.kind, location: this.store.location, err: err.message },
        `Store ${this.store.kind} at ${this.store.location} is not answering (${err.message}): starting on an empty registry; its workers and tasks are loaded and merged once it answers`,
      )
      return false
    }
  }

  /** Loads workers and tasks the store holds that memory does not (memory has the newer state). */
  private async loadFromStore(): Promise<{ workers: number; tasks: number }> {
    const records = (await this.store.loadWorkers()).map((w) => {
      if (!w.credential) return w
      const { credential, changed } = this.key.rehash(w.id, w.credential)
      if (changed) {
        this.log.warn({ workerId: w.id }, `The stored credential of worker ${w.id} does not match this master's key (the store was written by someone else, or the key was replaced): its token hash is recomputed from the key; if worker ${w.id} is now refused, run \`cloudai token rotate ${w.id}\``)
      }
      return { ...w, credential }
    })
    // Most recently active first: the first reconnection pass (a takeover's MasterRegister to
    // every worker) dials in the registry's order among workers never dialled.
    records.sort((x, y) => (y.lastHeartbeat ?? 0) - (x.lastHeartbeat ?? 0))
    const added = this.registry.load(records)
    // Heard of a moment ago: a heartbeat (or the activation, which sets it) that the master before
    // saw within a heartbeat timeout plus the store's heartbeat flush before now. Not "active in
    // the store": nothing writes workers inactive at a stop or a crash, so a master started after
    // a week off would take a fleet long gone for alive and dial it all at once.
    const addedIds = new Set(added)
    const aliveSince = Date.now() - this.config.heartbeatTimeoutMs - this.config.storeHeartbeatIntervalMs
    this.loadedAlive = records.filter((w) => addedIds.has(w.id) && (w.lastHeartbeat ?? 0) >= aliveSince).map((w) => w.id)
    // The store may still say "active" for workers of a master that died: write them inactive.
    for (const id of added) this.journal.recordWorker(id)
    // Tasks past their retention are removed in the store, never loaded: a long history costs
    // one indexed delete at start instead of its whole output in memory.
    // A store that reads but cannot write now (another process holds SQLite's write lock) must not
    // stop the start: the tasks are then loaded, and the pruner removes the expired ones through
    // the journal, which writes their removal once the store takes writes again.
    const cutoff = Date.now() - this.config.taskRetentionMs
    let expired = 0
    try {
      expired = await this.store.deleteFinishedBefore(cutoff)
    } catch (err) {
      this.log.warn({ store: this.store.kind, err: (err as Error).message }, `Could not remove the tasks past their retention from the store at start (${(err as Error).message}); they are loaded and pruned through the journal instead`)
    }
    if (expired > 0) this.log.info({ removed: expired, taskRetentionMs: this.config.taskRetentionMs }, `Removed ${expired} finished task(s) older than the task retention (${formatLongDuration(this.config.taskRetentionMs)}) from the store`)
    // And past --max-finished-tasks, the same way: what is loaded is bounded by the count too.
    const max = this.config.maxFinishedTasks
    let beyond = 0
    try {
      beyond = await this.store.deleteFinishedBeyond(max)
    } catch (err) {
      this.log.warn({ store: this.store.kind, err: (err as Error).message }, `Could not remove the finished tasks past --max-finished-tasks (${max}) from the store at start (${(err as Error).message}); they are loaded and pruned through the journal instead`)
    }
    if (beyond > 0) this.log.info({ removed: beyond, maxFinishedTasks: max }, `Removed ${beyond} finished task(s) past the newest ${max} (--max-finished-tasks) from the store`)
    const tasks = this.tasks.load(await this.store.loadTasks())
    return { workers: added.length, tasks }
  }

  /**
   * Dials the workers the load heard of a moment ago at once, as an operator's registration is
   * (outside the rate, inside the in-flight cap: reconnect/monitor.ts, dialLoaded), ahead of the
   * pass. The rate bounds what dead workers cost, and at its 45 a second it held 500 workers of a
   * takeover back 11 s (the failover bench's kill -9: every worker active 15.2 s after, target
   * 15). Once per load, so a fleet that died just before costs one burst more, no more.
   */
  private dialLoadedAlive(): void {
    const ids = this.loadedAlive
    this.loadedAlive = []
    this.monitor.dialLoaded(ids)
  }

  private async loadLate(): Promise<void> {
    const { workers, tasks } = await this.loadFromStore()
    this.log.info({ store: this.store.kind, workers, tasks, atOnce: this.loadedAlive.length }, `Store ${this.store.kind} answered: merged ${workers} worker(s) and ${tasks} task(s) it held into memory`)
    this.drains.rearm()
    if (this.phase !== 'running') return
    this.dialLoadedAlive()
    if (workers > 0) this.monitor.runPass().catch((err: unknown) => this.log.error({ err }, 'Reconnection pass over the workers the store held failed; the monitor runs the next one on its interval'))
    if (tasks > 0) this.queue.kick()
  }

  private async shutdown(): Promise<void> {
    try {
      await this.stopParts()
    } finally {
      // Last: until everything above has stopped, a second master must not start on this store.
      this.dirLock?.release()
    }
  }

  private async stopParts(): Promise<void> {
    const log = this.log
    this.phase = 'closing'
    // A deposition's stop under way finishes first; a standby stops polling for the lease.
    await this.role.closing()
    // Before the queue closes the worker clients they stream on.
    this.logFeeds.close()
    log.info('Shutting down: stopping the queue processor')
    this.drains.close()
    await this.queue.close()
    this.pruner.close()
    log.info('Shutting down: stopping the reconnection monitor')
    await this.monitor.close()
    await this.suspects.close()
    await this.dialer.close()
    log.info('Shutting down: stopping the HTTP API and WebSocket')
    if (!this.keepHttp) await this.http.close()
    this.live.close()
    log.info('Shutting down: stopping heartbeat timeout checks')
    this.liveness.close()
    this.workerAuth.close()
    log.info({ graceMs: this.config.shutdownGraceMs }, 'Shutting down: stopping the gRPC server (draining in-flight calls)')
    await this.grpc.close(this.config.shutdownGraceMs)
    log.info('Shutting down: stopping the telemetry threads')
    this.metricsView.close()
    await this.telemetry.close()
    log.info('Shutting down: closing the store')
    const final = await this.journal.close()
    if (!final.healthy || final.backlog > 0) {
      log.error({ backlog: final.backlog, err: final.lastError }, `Store could not take the last ${final.backlog} journalled change(s) before shutdown: they are lost`)
    }
    // After the last write (a SIGTERM's): the lease lapses now, so that a standby leads at once.
    await this.role.release()
    await this.store.close()
    this.phase = 'closed'
    log.info('Master stopped')
  }

  /**
   * The control service's guard, the one place that decides whether the master may act on an
   * operator's request: a standby or deposed master refuses with CLOUDAI_NOT_LEADER (naming the
   * leader), one starting or stopping with CLOUDAI_SHUTTING_DOWN.
   */
  private assertRunning(): void {
    const refusal = this.role.refusal()
    if (refusal) throw refusal
    if (this.phase !== 'running') throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', `the master is ${this.phase === 'closing' || this.phase === 'closed' ? 'shutting down' : 'starting'}`)
  }
}
