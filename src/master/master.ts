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
import { NO_EPOCH } from '../shared/leadership.js'
import type { Store } from '../store/store.js'
import { createStore } from '../store/select.js'
import { StoreJournal } from '../store/journal.js'
import { HttpApi } from './api/http.js'
import { loadDashboard } from './api/static.js'
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
import { SuspectProbes } from './suspects.js'
import { Registry } from './registry.js'
import { WorkerAuth } from './worker-auth.js'

export interface MasterDeps {
  log: Logger
  /** Defaults to SQLite under config.dataDir. */
  store?: Store
  /** Defaults to the Piscina dial pool. */
  dialer?: Dialer
}

type Phase = 'new' | 'starting' | 'running' | 'closing' | 'closed'

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
  /** The operator's control service (MasterControl): what the HTTP API, the prompt and tests call. */
  readonly control: ControlService
  /** The master's secret: workers' tokens derive from it; its proofs to workers are made with it. */
  private readonly key: MasterKey
  private readonly keyFile: { path: string; created: boolean }
  private readonly workerAuth: WorkerAuth
  private readonly grpcBudget: ConnectionBudget
  /** Held from the start of start() to the end of close(); none when nothing of ours is in --data-dir. */
  private dirLock: DataDirLock | null = null
  private phase: Phase = 'new'
  private closing: Promise<void> | null = null
  private startedAt = 0
  private advertised = ''

  constructor(private readonly config: MasterConfig, deps: MasterDeps) {
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
    this.journal = new StoreJournal(this.store, this.registry, { log: this.log, limit: config.storeJournalLimit, heartbeatFlushMs: config.storeHeartbeatIntervalMs, onLateOpen: () => this.loadLate() })
    this.tasks = new TaskTable(this.journal, Date.now, { retentionMs: config.taskRetentionMs, maxFinished: config.maxFinishedTasks, outputTailBytes: config.taskOutputTailBytes })
    this.pruner = new TaskPruner({ tasks: this.tasks, retentionMs: config.taskRetentionMs, log: this.log })
    this.journal.on('tasks-written', (ids) => this.tasks.markDurable(ids))
    // The epoch every MasterRegister, AssignTask and CancelTask carries (issue 19).
    const epoch = (): number => NO_EPOCH
    const clients = new WorkerClients(auth, key, epoch)
    this.logFeeds = new TaskLogFeeds({ clients, task: (id) => this.tasks.get(id), worker: (id) => this.registry.get(id), log: this.log, counters: this.counters })
    this.tasks.on('task-changed', (t) => this.logFeeds.taskChanged(t.id))
    this.queue = new QueueProcessor({ tasks: this.tasks, registry: this.registry, clients, log: this.log, heartbeatTimeoutMs: config.heartbeatTimeoutMs, requeueAfterMs: config.requeueAfterMs ?? config.heartbeatTimeoutMs, counters: this.counters, storeRecovered: this.journal, onReleased: (id) => this.drains.released(id) })
    this.drains = new WorkerDrains({ registry: this.registry, tasks: this.tasks, evict: (id, why) => this.queue.evict(id, why), busyOn: (id) => this.queue.busyOn(id), log: this.log })
    this.liveness = new Liveness(this.registry, { timeoutMs: config.heartbeatTimeoutMs, log: this.log })
    this.monitor = new ReconnectMonitor(this.registry, this.dialer, {
      intervalMs: config.reconnectIntervalMs,
      dialTimeoutMs: config.dialTimeoutMs,
      masterId: config.masterId,
      masterAddress: () => this.advertised,
      epoch,
      log: this.log,
      counters: this.counters,
      fastWindowMs: config.reconnectFastWindowMs,
      ratePerSec: config.reconnectRatePerSec,
      maxInflight: config.reconnectMaxInflight,
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
    this.grpc = new MasterGrpcServer({
      registry: this.registry,
      tasks: this.queue,
      telemetry: this.telemetry,
      counters: this.counters,
      host: config.grpcHost,
      port: config.grpcPort,
      log: this.log,
      auth,
      workerAuth: this.workerAuth,
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
    })
    this.live = new LiveFeed({ registry: this.registry, tasks: this.tasks, telemetry: this.telemetry, status: () => this.control.status() })
    this.http = new HttpApi({
      control: this.control,
      host: config.httpHost,
      port: config.httpPort,
      log: this.log,
      live: this.live,
      counters: this.counters,
      ws: { maxBufferBytes: config.wsMaxBufferBytes, maxConnections: config.wsMaxConnections },
      apiToken: config.apiToken,
      allowHosts: config.apiAllowHosts,
      allowOrigins: config.apiAllowOrigins,
      dashboard: loadDashboard(),
    })
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

  /**
   * The control service's guard: operators' actions are refused (CLOUDAI_SHUTTING_DOWN) unless the
   * master is running. The one place that decides whether the master may act on a request.
   */
  private assertRunning(): void {
    if (this.phase !== 'running') throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', `the master is ${this.phase === 'closing' || this.phase === 'closed' ? 'shutting down' : 'starting'}`)
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
      if (this.config.store.kind === 'sqlite' || this.config.masterKeyFile === null) this.dirLock = DataDirLock.acquire(this.config.dataDir, 'master')
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

      const grpcPort = await this.grpc.start()
      this.advertised = this.config.advertise ?? `${advertiseHost(this.config.grpcHost)}:${grpcPort}`
      const { limits } = this.grpc
      log.info(
        { step: 6, grpcPort, advertise: this.advertised, maxConnections: limits.maxConnections, fdLimit: this.grpcBudget.fdLimit, fdReserve: this.grpcBudget.reserve, idleTimeoutMs: limits.idleTimeoutMs, prefaceTimeoutMs: limits.prefaceTimeoutMs, maxConcurrentStreams: limits.maxConcurrentStreams, streamSilenceMs: limits.streamSilenceMs, keepalive: limits.keepalive },
        `gRPC server listening on ${this.config.grpcHost}:${grpcPort} (workers call back on ${this.advertised}); at most ${limits.maxConnections} connections`,
      )
      if (this.grpcBudget.warning) log.warn({ fdLimit: this.grpcBudget.fdLimit, maxConnections: limits.maxConnections }, `gRPC connections: ${this.grpcBudget.warning}`)
      // With --worker-auth none: the warning now, and every minute while the master runs.
      this.workerAuth.start()

      const httpPort = await this.http.start()
      log.info({ step: 7, httpPort, allowedHosts: this.http.allowedHosts, allowedOrigins: this.config.apiAllowOrigins }, `HTTP API listening on http://${this.config.httpHost}:${httpPort}`)

      this.startedAt = Date.now()
      this.phase = 'running'
      log.info({ step: 8, workers: this.registry.size }, `Sending MasterRegister to ${this.registry.size} registered worker(s)`)
      this.monitor.runPass().catch((err: unknown) => log.error({ err }, 'The first reconnection pass failed; the monitor runs the next one on its interval'))
    } catch (err) {
      // A typed refusal (a port in use, a locked data directory) is the operator's to fix: its code
      // and reason; anything else with its stack.
      log.error(isCloudaiError(err) ? { code: err.code, reason: err.message } : { err }, 'master failed to start; shutting down what started')
      await this.close()
      throw err
    }
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
    const added = this.registry.load(records)
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

  private async loadLate(): Promise<void> {
    const { workers, tasks } = await this.loadFromStore()
    this.log.info({ store: this.store.kind, workers, tasks }, `Store ${this.store.kind} answered: merged ${workers} worker(s) and ${tasks} task(s) it held into memory`)
    this.drains.rearm()
    if (this.phase !== 'running') return
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
    await this.http.close()
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
    await this.store.close()
    this.phase = 'closed'
    log.info('Master stopped')
  }
}
