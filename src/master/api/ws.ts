import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_socket_context_t } from 'uWebSockets.js'
import { C, type Counters } from '../counters.js'
import { CloudaiError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { validateWorkerId } from '../../shared/validation.js'
import type { LiveEvents, LiveMessage, LiveSnapshot, LiveTopic } from '../live.js'
import { Reply } from './respond.js'
import { WS_MAX_TOPICS } from './schema/ws.js'
import type { ApiToken } from './token.js'

/** What the WebSocket needs of the master: the current state, then every change. */
export interface LiveSource {
  snapshot(): LiveSnapshot
  on(event: 'message', listener: (...args: LiveEvents['message']) => void): unknown
  off(event: 'message', listener: (...args: LiveEvents['message']) => void): unknown
  /**
   * Told when the first watcher of a worker's telemetry (`*`: of everyone's) arrives and when the
   * last one goes, so that telemetry is summarized only for what somebody watches.
   */
  want?(workerId: string, on: boolean): void
}

export interface LiveSocketOptions {
  source: LiveSource
  log: Logger
  counters?: Counters
  /**
   * A client whose unsent data passes half of this gets no telemetry until it catches up; past
   * all of it, it is closed (1013). Worker and task events are never dropped for a client that
   * stays: one that cannot take them is closed, and gets a fresh snapshot when it reconnects.
   */
  maxBufferBytes: number
  maxConnections: number
  /** Largest message a client may send (subscriptions); larger closes the connection (1009). */
  maxMessageBytes: number
  /**
   * When set, an upgrade needs `Authorization: Bearer <token>` or, since a browser cannot set
   * headers on a WebSocket, `?token=<token>`.
   */
  token?: ApiToken | null
  /**
   * The API's checks of framing, size, Host and Origin (an upgrade from another site's page is a
   * 403): true when it refused the upgrade, and answered it.
   */
  screen?: (res: HttpResponse, req: HttpRequest, reply: Reply) => boolean
}

interface SocketState {
  topics: Set<LiveTopic>
  /** Telemetry topics given up while the client was backed up, restored when it drains. */
  paused: LiveTopic[] | null
  closedByUs: boolean
  /** Its telemetry topics no longer count as watchers (it closed, or is being closed). */
  released: boolean
}

type Socket = WebSocket<SocketState>

const DEFAULT_TOPICS: readonly LiveTopic[] = ['workers', 'tasks', 'metrics']
const MAX_TOPICS = WS_MAX_TOPICS
// Backed-up sockets are looked at this often, and telemetry is sent in one batch per check.
const CHECK_MS = 250
const rfc3339 = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')

/**
 * `/ws`: watchers get a snapshot, then every worker and task change and throttled telemetry, routed
 * by uWS pub/sub topics. A slow client never slows the master: telemetry to it is paused while it
 * is backed up, and it is closed if it backs up past the limit.
 */
export class LiveSockets {
  private app: TemplatedApp | null = null
  private readonly sockets = new Set<Socket>()
  private readonly pendingMetrics = new Map<string, string>()
  /** Watchers per telemetry interest: `*` (topic metrics) or a worker id (metrics/<id>). */
  private readonly watchers = new Map<string, number>()
  private timer: NodeJS.Timeout | null = null
  /** Listening to the source: only while a client is connected, so that no message is built for nobody. */
  private listening = false
  private checkSoon: NodeJS.Immediate | null = null
  private closed = false
  private readonly onMessage = (topic: LiveTopic, message: LiveMessage): void => this.publish(topic, message)

  constructor(private readonly opts: LiveSocketOptions) {}

  get connections(): number {
    return this.sockets.size
  }

  mount(app: TemplatedApp): void {
    this.app = app
    app.ws<SocketState>('/ws', {
      maxPayloadLength: this.opts.maxMessageBytes,
      // uWS's own limit is a backstop well above ours, so that ours (checked after every burst of
      // events) acts first; a burst big enough to reach it in one turn is caught in closed1().
      maxBackpressure: this.opts.maxBufferBytes * 4 + 1024 * 1024,
      closeOnBackpressureLimit: 1,
      idleTimeout: 120,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => this.upgrade(res, req, context),
      open: (ws) => this.open(ws),
      message: (ws, data) => this.message(ws, data),
      drain: (ws) => this.resumeIfDrained(ws),
      close: (ws, code, message) => this.closed1(ws, code, Buffer.from(message).toString('utf8')),
    })
  }

  /**
   * What exists only while there is a client: the backlog check's timer (an idle master has none
   * here) and the listener on the source (no message is built for nobody). Called as clients come
   * and go, before a new client's snapshot is taken.
   */
  private syncClients(): void {
    const any = this.sockets.size > 0 && !this.closed
    if (any !== this.listening) {
      this.listening = any
      if (any) this.opts.source.on('message', this.onMessage)
      else this.opts.source.off('message', this.onMessage)
    }
    if (any) {
      if (this.timer) return
      this.timer = setInterval(() => this.check(), CHECK_MS)
      this.timer.unref()
    } else if (this.timer) {
      clearInterval(this.timer)
      this.timer = null
      this.pendingMetrics.clear()
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.syncClients()
    if (this.checkSoon) clearImmediate(this.checkSoon)
    this.checkSoon = null
    for (const ws of [...this.sockets]) {
      ws.getUserData().closedByUs = true
      this.release(ws)
      ws.end(1001, 'master shutting down')
    }
    this.sockets.clear()
    this.app = null
  }

  private upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void {
    const reply = new Reply(res, this.opts.log, 'GET', '/ws', Date.now())
    if (this.closed) return reply.error(new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'the master is shutting down'))
    // CORS does not cover WebSockets: any page the operator opens may open one and read every
    // message. Without a token, the Origin is all that tells the dashboard from another site's page.
    if (this.opts.screen?.(res, req, reply)) return
    const token = this.opts.token
    if (token && !token.acceptsHeader(req.getHeader('authorization')) && !token.accepts(new URLSearchParams(req.getQuery() ?? '').get('token') ?? '')) {
      this.opts.counters?.add(C.HTTP_UNAUTHORIZED)
      return reply.error(new CloudaiError('CLOUDAI_UNAUTHORIZED', 'this master requires its API token: send Authorization: Bearer <token>, or ?token=<token> from a browser'), {
        headers: { 'www-authenticate': 'Bearer realm="cloudai"' },
      })
    }
    if (this.sockets.size >= this.opts.maxConnections) {
      this.opts.counters?.add(C.WS_REFUSED_FULL)
      return reply.error(new CloudaiError('CLOUDAI_TOO_MANY_CONNECTIONS', `the master already serves ${this.opts.maxConnections} WebSocket connections (--ws-max-connections)`))
    }
    const key = req.getHeader('sec-websocket-key')
    const protocol = req.getHeader('sec-websocket-protocol')
    const extensions = req.getHeader('sec-websocket-extensions')
    if (!reply.open) return
    const state: SocketState = { topics: new Set(), paused: null, closedByUs: false, released: false }
    res.cork(() => res.upgrade(state, key, protocol, extensions, context))
  }

  private open(ws: Socket): void {
    if (this.closed) {
      ws.end(1001, 'master shutting down')
      return
    }
    this.sockets.add(ws)
    this.syncClients()
    this.opts.counters?.add(C.WS_OPENED)
    // Subscribed before the snapshot is taken: an event after it is delivered, one before is in it.
    for (const topic of DEFAULT_TOPICS) this.subscribe(ws, topic)
    ws.send(JSON.stringify(this.opts.source.snapshot()))
  }

  private message(ws: Socket, data: ArrayBuffer): void {
    let msg: unknown
    try {
      msg = JSON.parse(Buffer.from(data).toString('utf8'))
    } catch {
      return this.refuse(ws, new CloudaiError('CLOUDAI_BAD_JSON', 'a message must be a JSON object: {"type":"subscribe","topics":["metrics/worker-1"]}'))
    }
    try {
      const { type, topics } = (typeof msg === 'object' && msg !== null ? msg : {}) as { type?: unknown; topics?: unknown }
      if (type !== 'subscribe' && type !== 'unsubscribe') throw new CloudaiError('CLOUDAI_BAD_REQUEST', `type must be subscribe or unsubscribe, got ${JSON.stringify(String(type)).slice(0, 60)}`)
      if (!Array.isArray(topics) || topics.length === 0 || topics.length > MAX_TOPICS) throw new CloudaiError('CLOUDAI_BAD_REQUEST', `topics must be a list of 1 to ${MAX_TOPICS} topics`)
      const wanted = topics.map(parseTopic)
      const state = ws.getUserData()
      // Judged on the whole message before anything changes: a refused message leaves the
      // connection's subscriptions exactly as they were.
      const next = type === 'subscribe' ? topicsAfterSubscribe(state.topics, wanted) : new Set([...state.topics].filter((t) => !wanted.includes(t)))
      if (next.size > MAX_TOPICS) throw new CloudaiError('CLOUDAI_BAD_REQUEST', `at most ${MAX_TOPICS} topics per connection (this message would make ${next.size})`)
      for (const t of [...state.topics]) if (!next.has(t)) this.unsubscribe(ws, t)
      for (const t of next) if (!state.topics.has(t)) this.subscribe(ws, t)
      ws.send(JSON.stringify({ type: 'subscribed', topics: [...ws.getUserData().topics].sort(), timestamp: rfc3339(Date.now()) }))
    } catch (err) {
      this.refuse(ws, err)
    }
  }

  private refuse(ws: Socket, err: unknown): void {
    this.opts.counters?.add(C.WS_BAD_MESSAGES)
    const e = err instanceof CloudaiError ? err : new CloudaiError('CLOUDAI_BAD_REQUEST', String(err))
    ws.send(JSON.stringify({ type: 'error', code: e.code, message: e.message, timestamp: rfc3339(Date.now()) }))
  }

  private subscribe(ws: Socket, topic: LiveTopic): void {
    const state = ws.getUserData()
    if (!state.topics.has(topic) && !state.released) this.watch(topic, 1)
    state.topics.add(topic)
    if (!state.paused || !isTelemetry(topic)) ws.subscribe(topic)
    else state.paused.push(topic)
  }

  private unsubscribe(ws: Socket, topic: LiveTopic): void {
    const state = ws.getUserData()
    if (state.topics.has(topic) && !state.released) this.watch(topic, -1)
    state.topics.delete(topic)
    if (state.paused) state.paused = state.paused.filter((t) => t !== topic)
    ws.unsubscribe(topic)
  }

  private publish(topic: LiveTopic, message: LiveMessage): void {
    // Nobody to send to: no JSON, no backlog check (a client that opens gets a snapshot).
    if (!this.app || this.closed || this.sockets.size === 0) return
    if (message.type === 'worker_metrics') {
      // Telemetry goes out in the next batch; a newer summary of a worker replaces an unsent one.
      this.pendingMetrics.set(message.worker_id, JSON.stringify(message))
      return
    }
    this.app.publish(topic, JSON.stringify(message))
    // Backed-up clients are dealt with after this burst of events, not a timer tick later.
    this.checkSoon ??= setImmediate(() => {
      this.checkSoon = null
      this.checkBacklogs()
    })
  }

  /** Counts a watcher of a telemetry topic in or out; the source hears of the first and the last. */
  private watch(topic: LiveTopic, delta: 1 | -1): void {
    if (!isTelemetry(topic)) return
    const key = topic === 'metrics' ? '*' : topic.slice('metrics/'.length)
    const before = this.watchers.get(key) ?? 0
    const after = before + delta
    if (after <= 0) this.watchers.delete(key)
    else this.watchers.set(key, after)
    if (before === 0 && after > 0) this.opts.source.want?.(key, true)
    else if (before > 0 && after <= 0) this.opts.source.want?.(key, false)
  }

  /** A closing client stops counting as a watcher (once, however it closes). */
  private release(ws: Socket): void {
    const state = ws.getUserData()
    if (state.released) return
    for (const t of state.topics) this.watch(t, -1)
    state.released = true
  }

  private closed1(ws: Socket, code: number, reason: string): void {
    this.sockets.delete(ws)
    this.syncClients()
    this.release(ws)
    const state = ws.getUserData()
    // 1006 from uWS itself on a client we had seen backed up: its backstop closed it.
    if (!state.closedByUs && code === 1006 && state.paused !== null) this.closedSlow(null)
    // uWS cuts a connection whose message is over maxPayloadLength (1006, with this reason).
    if (code === 1009 || reason === 'Received too big message') {
      this.opts.counters?.add(C.WS_MESSAGE_TOO_LARGE)
      this.opts.log.warn({ code, limit: this.opts.maxMessageBytes }, `Closed a WebSocket client that sent a message over ${this.opts.maxMessageBytes} bytes`)
    }
  }

  private closedSlow(buffered: number | null): void {
    this.opts.counters?.add(C.WS_SLOW_CLOSED)
    const limit = this.opts.maxBufferBytes
    this.opts.log.warn({ buffered, limit }, `Closed a WebSocket client that fell ${buffered ?? 'too many'} bytes behind (limit ${limit})`)
  }

  /** Every CHECK_MS while a client is connected: deal with backlogs, then send the telemetry batch. */
  private check(): void {
    this.checkBacklogs()
    this.flushMetrics()
  }

  /** Closes clients past the limit, pauses telemetry to those past half of it, resumes drained ones. */
  private checkBacklogs(): void {
    const limit = this.opts.maxBufferBytes
    for (const ws of this.sockets) {
      const buffered = ws.getBufferedAmount()
      const state = ws.getUserData()
      if (buffered > limit) {
        this.closedSlow(buffered)
        state.closedByUs = true
        this.sockets.delete(ws)
        this.syncClients()
        this.release(ws)
        ws.end(1013, 'too slow: the client fell too far behind')
      } else if (buffered > limit / 2 && !state.paused) {
        state.paused = [...state.topics].filter(isTelemetry)
        for (const t of state.paused) ws.unsubscribe(t)
      } else {
        this.resumeIfDrained(ws)
      }
    }
  }

  private flushMetrics(): void {
    if (this.pendingMetrics.size === 0 || !this.app) return
    for (const ws of this.sockets) {
      const paused = ws.getUserData().paused
      if (!paused) continue
      let missed = 0
      for (const id of this.pendingMetrics.keys()) if (paused.includes('metrics') || paused.includes(`metrics/${id}`)) missed++
      if (missed > 0) this.opts.counters?.add(C.WS_TELEMETRY_DROPPED, missed)
    }
    for (const [id, json] of this.pendingMetrics) {
      this.app.publish('metrics', json)
      this.app.publish(`metrics/${id}`, json)
    }
    this.pendingMetrics.clear()
  }

  private resumeIfDrained(ws: Socket): void {
    const state = ws.getUserData()
    if (!state.paused || ws.getBufferedAmount() > this.opts.maxBufferBytes / 4) return
    for (const t of state.paused) ws.subscribe(t)
    state.paused = null
  }
}

function isTelemetry(topic: LiveTopic): boolean {
  return topic === 'metrics' || topic.startsWith('metrics/')
}

function parseTopic(value: unknown): LiveTopic {
  if (value === 'workers' || value === 'tasks' || value === 'metrics') return value
  if (typeof value === 'string' && value.startsWith('metrics/')) {
    return `metrics/${validateWorkerId(value.slice('metrics/'.length), 'topic worker id')}`
  }
  throw new CloudaiError('CLOUDAI_BAD_REQUEST', `unknown topic ${JSON.stringify(String(value)).slice(0, 80)}: use workers, tasks, metrics or metrics/<worker-id>`)
}

/**
 * The topics a connection holds once it has subscribed to `wanted`, in order. `metrics` and
 * `metrics/<id>` overlap; a connection holds one or the other so that it never gets a worker's
 * telemetry twice: narrowing to one worker drops `metrics`, and the reverse.
 */
export function topicsAfterSubscribe(current: ReadonlySet<LiveTopic>, wanted: readonly LiveTopic[]): Set<LiveTopic> {
  const next = new Set(current)
  for (const topic of wanted) {
    if (topic === 'metrics') {
      for (const t of next) if (t.startsWith('metrics/')) next.delete(t)
    } else if (topic.startsWith('metrics/')) {
      next.delete('metrics')
    }
    next.add(topic)
  }
  return next
}
