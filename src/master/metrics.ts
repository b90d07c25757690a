import { Registry as PromRegistry, collectDefaultMetrics } from 'prom-client'
import { C, CounterReader, type CounterName, type Counters, type HistogramName } from './counters.js'
import type { TaskStatus, WorkerRecord } from '../shared/types.js'
import type { MonitorState, PassReport, ReconnectStats } from './reconnect/monitor.js'
import type { Registry } from './registry.js'
import type { TelemetryHub } from './telemetry/hub.js'
import type { JournalStatus } from '../store/journal.js'
import { openFds } from './open-fds.js'

// GET /metrics: the Prometheus text format, rendered by prom-client. The hot counters are not
// prom-client counters (those live in one thread's heap): they are read from the shared counters
// at scrape time, so a scrape shows what every thread counted, and counting costs the counting
// thread one Atomics.add.

export interface MetricsSources {
  counters: Counters
  registry: Registry
  telemetry: TelemetryHub
  monitor: () => MonitorState
  /** Reconnection passes that dialled anything, and the latest of them. */
  passes?: () => { count: number; last: PassReport | null }
  /** The reconnection monitor's schedule and budget. */
  reconnect?: () => ReconnectStats
  taskCounts: () => Record<TaskStatus, number>
  wsConnections?: () => number
  /** The store journal's state (see src/store/journal.ts). */
  store?: () => JournalStatus
  /** gRPC connections open now, and the most allowed (--grpc-max-connections). */
  grpc?: () => { open: number; max: number }
  now?: () => number
}

type Labels = Record<string, string | number>
type Kind = 'counter' | 'gauge' | 'histogram'
/** A sample as prom-client's registry formats it; `metricName` names a histogram's series. */
interface MetricValue {
  value: number
  labels: Labels
  metricName?: string
}

/** A metric whose values are computed at scrape time; prom-client formats it. */
class ScrapeMetric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: Kind,
    private readonly values: () => MetricValue[],
  ) {}

  // The shape prom-client's Registry reads from any registered metric.
  get(): Promise<{ name: string; help: string; type: Kind; aggregator: 'sum'; values: MetricValue[] }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: 'sum', values: this.values() })
  }
}

const one = (value: number, labels: Labels = {}): MetricValue[] => [{ value, labels }]

/** Bounds of the shared histograms are in ms or µs; Prometheus wants seconds. */
const HISTOGRAM_UNIT_S: Record<HistogramName, number> = { dialMs: 1e-3, reconnectMs: 1e-3, firstConnectMs: 1e-3, heartbeatDelayUs: 1e-6 }

const UPTIME = 'cloudai_worker_uptime_seconds'

// Counter polling keeps the 32-bit shared slots from wrapping unseen between scrapes.
const POLL_MS = 5_000
/** The resolution of prom-client's event-loop lag gauges (`cloudai_process_nodejs_eventloop_lag_*`). */
const EVENT_LOOP_SAMPLE_MS = 100

export class MasterMetrics {
  readonly prom = new PromRegistry()
  private readonly reader: CounterReader
  private readonly now: () => number
  private poller: NodeJS.Timeout | null = null
  private scraping = false
  private scrapeCounts: ReturnType<Registry['counts']> | null = null
  private readonly onActive = (w: WorkerRecord, meta: { reconnect: boolean }): void => this.observeConnect(w, meta.reconnect)

  constructor(private readonly src: MetricsSources) {
    this.reader = new CounterReader(src.counters)
    this.now = src.now ?? Date.now
    this.define()
  }

  get contentType(): string {
    return this.prom.contentType
  }

  start(): void {
    if (this.poller) return
    this.src.registry.on('worker-active', this.onActive)
    this.poller = setInterval(() => this.reader.poll(), POLL_MS)
    this.poller.unref()
  }

  close(): void {
    this.src.registry.off('worker-active', this.onActive)
    if (this.poller) clearInterval(this.poller)
    this.poller = null
  }

  async text(): Promise<string> {
    // prom-client reads every metric synchronously inside metrics() and only then awaits them:
    // the counts are shared by that one synchronous call, never by two scrapes.
    this.scraping = true
    let text: Promise<string>
    try {
      text = this.prom.metrics()
    } finally {
      this.scraping = false
      this.scrapeCounts = null
    }
    return `${await text}\n${this.uptimeText()}`
  }

  /**
   * The registry's counts, walked once per scrape: six gauges read them, and each walk is a pass
   * over every worker (15 ms of main-thread CPU for two scrapes at 5,000 workers, in a profile).
   * Outside a scrape's synchronous part (text()), walked at each call.
   */
  private workerCounts(): ReturnType<Registry['counts']> {
    if (!this.scraping) return this.src.registry.counts()
    this.scrapeCounts ??= this.src.registry.counts()
    return this.scrapeCounts
  }

  /**
   * cloudai_worker_uptime_seconds{worker_id}: a sample per active worker, written here rather than
   * by prom-client, whose per-sample label formatting and escaping made it most of a scrape at
   * 5,000 workers (tens of ms on the main thread). A worker id needs no escaping in a label value:
   * it is 1 to 64 of A-Z a-z 0-9 . _ - (validateWorkerId).
   */
  private uptimeText(): string {
    const now = this.now()
    const lines = [`# HELP ${UPTIME} Time since each active worker connected.`, `# TYPE ${UPTIME} gauge`]
    for (const w of this.src.registry.values()) {
      if (w.isActive && w.connectedAt !== null) lines.push(`${UPTIME}{worker_id="${w.id}"} ${Math.max(0, now - w.connectedAt) / 1000}`)
    }
    lines.push('')
    return lines.join('\n')
  }

  private observeConnect(w: WorkerRecord, reconnect: boolean): void {
    const at = w.connectedAt ?? this.now()
    if (reconnect) {
      this.src.counters.add(C.RECONNECTS)
      // Unknown after a master restart that found the worker already gone: no observation then.
      if (w.disconnectedAt !== null && w.disconnectedAt <= at) this.src.counters.observe('reconnectMs', at - w.disconnectedAt)
    } else {
      this.src.counters.add(C.FIRST_CONNECTS)
      this.src.counters.observe('firstConnectMs', Math.max(0, at - w.registeredAt))
    }
  }

  private define(): void {
    const reg = (m: ScrapeMetric): void => this.prom.registerMetric(m as never)
    const count = (name: string, help: string, counter: CounterName): void => reg(new ScrapeMetric(name, help, 'counter', () => one(this.reader.get(counter))))
    const gauge = (name: string, help: string, values: () => MetricValue[]): void => reg(new ScrapeMetric(name, help, 'gauge', values))
    const histogram = (name: string, help: string, h: HistogramName): void =>
      reg(new ScrapeMetric(name, help, 'histogram', () => {
        const snap = this.reader.histogram(h)
        const unit = HISTOGRAM_UNIT_S[h]
        const values: MetricValue[] = snap.bounds.map((b, i) => ({ metricName: `${name}_bucket`, labels: { le: +(b * unit).toPrecision(6) }, value: snap.cumulative[i]! }))
        values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: snap.cumulative[snap.bounds.length]! })
        values.push({ metricName: `${name}_sum`, labels: {}, value: snap.sum * unit })
        values.push({ metricName: `${name}_count`, labels: {}, value: snap.count })
        return values
      }))
    const { registry, telemetry } = this.src

    gauge('cloudai_workers_registered', 'Workers registered with this master.', () => one(registry.size))
    gauge('cloudai_workers_active', 'Workers connected and heartbeating.', () => one(this.workerCounts().active))
    gauge('cloudai_workers_suspect', 'Active workers whose last AssignTask got no answer: no tasks are placed on them until they answer a probe or a heartbeat.', () => one(this.workerCounts().suspect))
    gauge('cloudai_workers_inactive', 'Registered workers that are not connected (the reconnection monitor dials them), drained ones left out: a worker stopped after its drain is no outage.', () => one(this.workerCounts().inactive))
    gauge('cloudai_workers_cordoned', 'Workers cordoned (no new tasks), not draining.', () => one(this.workerCounts().cordoned))
    gauge('cloudai_workers_draining', 'Workers being drained (cordoned, waiting for what runs there).', () => one(this.workerCounts().draining))
    gauge('cloudai_workers_drained', 'Workers drained (nothing runs there; they may be stopped), active or not.', () => one(this.workerCounts().drained))
    gauge('cloudai_reconnect_monitor_up', '1 while the reconnection monitor runs.', () => one(this.src.monitor() === 'running' ? 1 : 0))

    count('cloudai_reconnect_attempts_total', 'MasterRegister dials started by the reconnection monitor and the probes of suspect workers.', 'DIAL_ATTEMPTS')
    count('cloudai_reconnect_successes_total', 'Dials the worker accepted, and dials cancelled because their worker turned active meanwhile (cloudai_reconnect_active_during_dial_total).', 'DIAL_SUCCESS')
    reg(new ScrapeMetric('cloudai_reconnect_failures_total', 'Dials that failed, by outcome.', 'counter', () => {
      const c = this.reader.all()
      return [
        { labels: { outcome: 'refused' }, value: c.DIAL_REFUSED },
        { labels: { outcome: 'timeout' }, value: c.DIAL_TIMEOUT },
        { labels: { outcome: 'rejected' }, value: c.DIAL_REJECTED },
        { labels: { outcome: 'error' }, value: c.DIAL_ERROR },
      ]
    }))
    count('cloudai_reconnect_cancelled_total', 'Dials cancelled (worker unregistered, master shutting down, or the worker turned active meanwhile: see cloudai_reconnect_active_during_dial_total).', 'DIAL_CANCELLED')
    const rc = this.src.reconnect
    if (rc) {
      reg(new ScrapeMetric('cloudai_reconnect_active_during_dial_total', 'Dials cancelled because their worker turned active while they were in flight (by that dial, or by joining on its own): successes, not failures.', 'counter', () => one(rc().activeDuringDial)))
      gauge('cloudai_reconnect_fast_workers', 'Inactive workers inside their fast re-dial window (--reconnect-fast-window).', () => one(rc().fastWorkers))
      gauge('cloudai_reconnect_pass_backlog', 'Dials of the current reconnection pass waiting for the budget (--reconnect-rate, --reconnect-max-inflight).', () => one(rc().passBacklog))
      gauge('cloudai_reconnect_budget_short', '1 while the reconnection budget cannot dial every inactive worker once per interval.', () => one(rc().budgetShort ? 1 : 0))
    }
    gauge('cloudai_reconnect_success_ratio', 'Successful dials over finished dials (no sample before the first).', () => {
      const c = this.reader.all()
      const finished = c.DIAL_SUCCESS + c.DIAL_REFUSED + c.DIAL_TIMEOUT + c.DIAL_REJECTED + c.DIAL_ERROR
      return finished === 0 ? [] : one(c.DIAL_SUCCESS / finished)
    })
    histogram('cloudai_reconnect_dial_duration_seconds', 'Time of one MasterRegister dial.', 'dialMs')
    const passes = this.src.passes
    if (passes) {
      reg(new ScrapeMetric('cloudai_reconnect_passes_total', 'Reconnection passes that dialled at least one worker.', 'counter', () => one(passes().count)))
      // No sample before the first pass: a 0 would read as a pass that took no time.
      // Nor for a delay the pass did not sample (null): none measured is not a delay of 0.
      const lastPass = (name: string, help: string, pick: (p: PassReport) => number | null): void =>
        gauge(name, help, () => {
          const last = passes().last
          const v = last === null ? null : pick(last)
          return v === null ? [] : one(v)
        })
      lastPass('cloudai_reconnect_last_pass_start_time_seconds', 'When the latest reconnection pass started (Unix time).', (p) => p.startedAt / 1000)
      lastPass('cloudai_reconnect_last_pass_duration_seconds', 'From the start of the latest reconnection pass to its last dial settling.', (p) => p.durationMs / 1000)
      lastPass('cloudai_reconnect_last_pass_dials', 'Workers the latest reconnection pass dialled.', (p) => p.dials)
      lastPass('cloudai_reconnect_last_pass_event_loop_delay_p99_seconds', "The main thread's event-loop delay p99 during the latest reconnection pass.", (p) => (p.loopDelayP99Ms === null ? null : p.loopDelayP99Ms / 1000))
      lastPass('cloudai_reconnect_last_pass_event_loop_delay_max_seconds', "The main thread's longest event-loop delay during the latest reconnection pass.", (p) => (p.loopDelayMaxMs === null ? null : p.loopDelayMaxMs / 1000))
    }
    count('cloudai_worker_reconnects_total', 'Workers that turned active again after having been connected before.', 'RECONNECTS')
    histogram('cloudai_time_to_reconnect_seconds', 'From a worker turning inactive to it being active again.', 'reconnectMs')
    count('cloudai_worker_heartbeat_timeouts_total', 'Workers marked inactive because no heartbeat came within --heartbeat-timeout.', 'HEARTBEAT_TIMEOUTS')
    count('cloudai_worker_first_connections_total', 'Workers that connected for the first time after their registration.', 'FIRST_CONNECTS')
    histogram('cloudai_time_to_first_connection_seconds', 'From the operator registering a worker to its first connection.', 'firstConnectMs')

    count('cloudai_heartbeats_received_total', 'Heartbeats received (unary and streamed).', 'HEARTBEATS_RECEIVED')
    count('cloudai_heartbeats_refused_total', 'Heartbeats refused (bad fields, unknown or inactive worker).', 'HEARTBEATS_REFUSED')
    count('cloudai_heartbeats_processed_total', 'Heartbeats processed by the telemetry threads.', 'HEARTBEATS_PROCESSED')
    count('cloudai_telemetry_dropped_samples_total', 'Heartbeats dropped because a lane fell a whole ring behind.', 'HEARTBEATS_DROPPED')
    histogram('cloudai_heartbeat_processing_delay_seconds', 'From a heartbeat arriving to its processing on a telemetry thread.', 'heartbeatDelayUs')
    count('cloudai_heartbeat_streams_opened_total', 'Heartbeat streams opened by workers.', 'HEARTBEAT_STREAMS_OPENED')
    count('cloudai_heartbeat_streams_ended_total', 'Heartbeat streams the worker ended cleanly.', 'HEARTBEAT_STREAMS_ENDED')
    count('cloudai_heartbeat_streams_broken_total', 'Heartbeat streams that broke (worker gone, connection reset).', 'HEARTBEAT_STREAMS_BROKEN')

    const grpcConns = this.src.grpc
    if (grpcConns) {
      gauge('cloudai_grpc_connections', 'gRPC connections open now (awaiting their HTTP/2 preface or served).', () => one(grpcConns().open))
      gauge('cloudai_grpc_max_connections', 'gRPC connections allowed at once (--grpc-max-connections, or the file-descriptor budget).', () => one(grpcConns().max))
    }
    count('cloudai_grpc_connections_total', 'gRPC connections accepted (below the limit).', 'GRPC_CONNECTIONS_ACCEPTED')
    reg(new ScrapeMetric('cloudai_grpc_connections_refused_total', 'gRPC connections closed before grpc-js served them, by reason.', 'counter', () => {
      const c = this.reader.all()
      return [
        { labels: { reason: 'max_connections' }, value: c.GRPC_REFUSED_MAX_CONNECTIONS },
        { labels: { reason: 'preface_timeout' }, value: c.GRPC_REFUSED_PREFACE_TIMEOUT },
        { labels: { reason: 'bad_preface' }, value: c.GRPC_REFUSED_BAD_PREFACE },
        { labels: { reason: 'tls_handshake' }, value: c.GRPC_REFUSED_TLS_HANDSHAKE },
      ]
    }))
    count('cloudai_heartbeat_unknown_tasks_total', 'Task ids heartbeats listed as running that this master never assigned to that worker (left alone).', 'HEARTBEAT_UNKNOWN_TASKS')
    count('cloudai_stale_task_cancels_total', 'CancelTask calls sent because a heartbeat listed a task that is no longer that worker\'s to run.', 'STALE_TASK_CANCELS')

    gauge('cloudai_telemetry_threads', 'Telemetry threads running.', () => one(telemetry.threadCount))
    gauge('cloudai_telemetry_lanes', 'Workers with a telemetry lane.', () => one(telemetry.laneCount))
    count('cloudai_telemetry_thread_restarts_total', 'Telemetry threads restarted after dying.', 'TELEMETRY_THREAD_RESTARTS')
    gauge('cloudai_telemetry_queue_depth', 'Lanes with heartbeats waiting in their telemetry thread\'s queue, per thread.', () =>
      telemetry.queueDepths().map((q) => ({ labels: { thread: q.thread }, value: q.depth })))

    gauge('cloudai_task_queue_depth', 'Tasks queued, waiting for a worker.', () => one(this.src.taskCounts().queued))
    gauge('cloudai_tasks', 'Tasks by status.', () => Object.entries(this.src.taskCounts()).map(([status, value]) => ({ labels: { status }, value })))

    gauge('cloudai_ws_connections', 'WebSocket clients connected.', () => one(this.src.wsConnections?.() ?? 0))
    const store = this.src.store
    if (store) {
      gauge('cloudai_store_up', '1 while the store takes writes; 0 during an outage (the master runs from memory).', () => one(store().healthy ? 1 : 0))
      gauge('cloudai_store_backlog', 'Changes journalled and not yet in the store.', () => one(store().backlog))
      gauge('cloudai_store_outage_seconds', 'Length of the current store outage (0 while the store answers).', () => {
        const s = store()
        return one(s.degradedSince === null ? 0 : (this.now() - s.degradedSince) / 1000)
      })
      reg(new ScrapeMetric('cloudai_store_outages_total', 'Store outages since the master started.', 'counter', () => one(store().outages)))
      reg(new ScrapeMetric('cloudai_store_outage_seconds_total', 'Time the store has been down since the master started.', 'counter', () => one(store().outageMs / 1000)))
    }
    count('cloudai_task_log_readers_refused_total', 'Task log readers (GET /api/tasks/{id}/logs) refused because 256 were served at once.', 'LOG_READERS_REFUSED')
    count('cloudai_ws_connections_total', 'WebSocket connections accepted.', 'WS_OPENED')
    count('cloudai_ws_refused_total', 'WebSocket upgrades refused because --ws-max-connections were open.', 'WS_REFUSED_FULL')
    count('cloudai_ws_bad_messages_total', 'WebSocket messages from clients that were refused.', 'WS_BAD_MESSAGES')
    count('cloudai_ws_slow_clients_closed_total', 'WebSocket clients closed for falling more than --ws-max-buffer behind.', 'WS_SLOW_CLOSED')
    count('cloudai_http_unauthorized_total', 'HTTP requests and WebSocket upgrades refused for a missing or wrong API token.', 'HTTP_UNAUTHORIZED')
    count('cloudai_http_body_too_large_total', 'HTTP requests refused with 413 for a body over the limit.', 'HTTP_BODY_TOO_LARGE')
    reg(new ScrapeMetric('cloudai_http_refused_total', 'HTTP requests and WebSocket upgrades refused for their framing, size, Host, Origin or content type, by reason.', 'counter', () => {
      const c = this.reader.all()
      return [
        { labels: { reason: 'framing' }, value: c.HTTP_REFUSED_FRAMING },
        { labels: { reason: 'uri_too_long' }, value: c.HTTP_REFUSED_URI_TOO_LONG },
        { labels: { reason: 'headers_too_large' }, value: c.HTTP_REFUSED_HEADERS_TOO_LARGE },
        { labels: { reason: 'host' }, value: c.HTTP_REFUSED_HOST },
        { labels: { reason: 'origin' }, value: c.HTTP_REFUSED_ORIGIN },
        { labels: { reason: 'media_type' }, value: c.HTTP_REFUSED_MEDIA_TYPE },
      ]
    }))
    count('cloudai_ws_message_too_large_total', 'WebSocket connections cut for a client message over 16 KiB.', 'WS_MESSAGE_TOO_LARGE')
    count('cloudai_ws_telemetry_dropped_total', 'Telemetry messages not sent to backed-up WebSocket clients.', 'WS_TELEMETRY_DROPPED')

    // prom-client samples the event loop with a timer at this resolution (its default, 10 ms, woke
    // an idle master's main thread 100 times a second: most of what an empty master cost). At
    // 100 ms a stall of 100 ms or more always shows in the lag gauges and shorter ones in part;
    // the reconnect pass samples at 1 ms itself while it is heavy.
    collectDefaultMetrics({ register: this.prom, prefix: 'cloudai_process_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS })
    // The same gauge without listing every descriptor on each scrape (see open-fds.ts).
    if (this.prom.getSingleMetric('cloudai_process_process_open_fds')) {
      this.prom.removeSingleMetric('cloudai_process_process_open_fds')
      gauge('cloudai_process_process_open_fds', 'Number of open file descriptors.', () => {
        const n = openFds()
        return n === null ? [] : one(n)
      })
    }
    // prom-client names three gauges with a counter's `_total` suffix, which Prometheus' own
    // linter (promtool check metrics) rejects: a `sum()` of the by-type gauge gives the same.
    // (Each also listed every handle once more per scrape: 10,000 sockets.) The handles and
    // requests gauges go too: they walk process._getActiveHandles() / _getActiveRequests(), which
    // can abort Node itself (`AsyncWrap::GetOwner`, `!obj.IsEmpty()`) when a scrape lands while
    // sockets of a failed dial are torn down; the OpenAPI fuzz run hit it about one run in three.
    // `cloudai_process_nodejs_active_resources{type}` (process.getActiveResourcesInfo(), names
    // only, no objects) counts the same handles and requests, by type.
    for (const name of ['cloudai_process_nodejs_active_handles_total', 'cloudai_process_nodejs_active_requests_total', 'cloudai_process_nodejs_active_resources_total', 'cloudai_process_nodejs_active_handles', 'cloudai_process_nodejs_active_requests']) {
      if (this.prom.getSingleMetric(name)) this.prom.removeSingleMetric(name)
    }
  }
}
