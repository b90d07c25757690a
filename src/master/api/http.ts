import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js'
import { C, type Counters } from '../counters.js'
import { CloudaiError, type ErrorCode } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { loadUws, type Uws } from './uws.js'
import type { MasterControl } from '../control.js'
import { BodyAborted, type BodyLimits, DEFAULT_DRAIN_BYTES, DEFAULT_DRAIN_MS, DEFAULT_MAX_BODY_BYTES, readJsonObject, refuseUnframed } from './body.js'
import { closesConnection, countRefusal, type MachineNames, RequestGuard } from './guard.js'
import { parseLogQuery, parseMetricsQuery, parseTaskQuery } from './query.js'
import { serveTaskLogs } from './task-logs.js'
import { Reply } from './respond.js'
import type { DashboardFiles } from './static.js'
import { ApiToken } from './token.js'
import { buildOpenApiDocument } from './schema/document.js'
import { OPERATIONS, uwsPattern } from './schema/routes.js'
import { SubmitTaskBodySchema } from './schema/tasks.js'
import { BodyValidator } from './schema/validate.js'
import { AnyObjectBodySchema, DrainBodySchema, EmptyBodySchema, RegisterWorkerBodySchema } from './schema/workers.js'
import { LiveSockets, type LiveSource } from './ws.js'

/** Answers that carry a worker token: no cache, a proxy's included, may keep them. */
const NO_STORE = { headers: { 'cache-control': 'no-store' } } as const

export interface HttpApiOptions {
  control: MasterControl
  host: string
  /** 0 means any free port; start() resolves with the one bound. */
  port: number
  log: Logger
  /** Largest request body accepted (413 above it). Defaults to 1 MiB. */
  maxBodyBytes?: number
  /**
   * A body refused before it has all arrived (413, 415) is answered at once, and the rest is read
   * and dropped before the connection is closed, up to `maxBytes` of it and for `maxMs` after the
   * answer; past either the connection is cut. Defaults: 4 MiB, 5 s.
   */
  bodyDrain?: { maxBytes?: number; maxMs?: number }
  /** The WebSocket's source of events; without it there is no /ws. */
  live?: LiveSource
  counters?: Counters
  /** Required as `Authorization: Bearer` on every route but /healthz and the dashboard's files. */
  apiToken?: string | null
  /** The dashboard's files, served at `/`, `/dashboard.js` and `/dashboard.css`. */
  dashboard?: DashboardFiles
  /** WebSocket limits (see LiveSockets); defaults: 1 MiB behind, 1000 connections, 16 KiB messages. */
  ws?: { maxBufferBytes?: number; maxConnections?: number; maxMessageBytes?: number }
  /** Host names and addresses requests may carry in Host besides the defaults (see RequestGuard). */
  allowHosts?: readonly string[]
  /** Origins, besides the master's own, whose pages may call the API and open /ws. */
  allowOrigins?: readonly string[]
  /** The machine's names for a wildcard bind; defaults to the real ones (tests pass their own). */
  machine?: MachineNames
  /**
   * While this master does not lead (a standby, a deposed leader): the refusal (503
   * CLOUDAI_NOT_LEADER naming the leader) of every route but /healthz and /api/status, and of /ws.
   */
  notLeader?: () => CloudaiError | null
}

type Handler = (reply: Reply, req: HttpRequest, res: HttpResponse) => void | Promise<void>

interface Route {
  method: 'get' | 'post' | 'del'
  pattern: string
  handle: Handler
  /** Served without the API token: the health check, and the dashboard page (it asks for the token). */
  open?: boolean
  /** Served by a standby too (they say who leads); every other route answers it 503 CLOUDAI_NOT_LEADER. */
  standby?: boolean
}

const ALLOW_NAMES = { get: 'GET', post: 'POST', del: 'DELETE' } as const

// Members the native uWS build has that its docs/index.d.ts leaves out.
type ListenExclusive = (host: string, port: number, options: number, cb: (socket: us_listen_socket | false) => void) => TemplatedApp
interface NativeExtras {
  /** Closes the listen sockets and every open connection of the app (keep-alive ones too). */
  close?: () => void
}
// Without it uSockets sets SO_REUSEPORT, and a second master on the same port would silently
// share (and split) the traffic instead of failing to start.
const LISTEN_EXCLUSIVE_PORT = 1

/**
 * The master's REST API on uWebSockets.js: a thin JSON front end of MasterControl. It holds no
 * state of its own; a body is checked against its schema (schema/, the same that /openapi.json
 * shows) and then by the control, so a bad request changes nothing.
 */
export class HttpApi {
  private readonly control: MasterControl
  private readonly log: Logger
  private readonly bodyLimits: BodyLimits
  private uws: Uws | null = null
  private app: TemplatedApp | null = null
  private listenSocket: us_listen_socket | null = null
  private sockets: LiveSockets | null = null
  private readonly token: ApiToken | null
  private readonly guard: RequestGuard
  private boundPort = 0
  private phase: 'new' | 'listening' | 'closed' = 'new'
  /** The operations' body schemas, each compiled at its first request. */
  private readonly bodies = new BodyValidator()
  /** GET /openapi.json, rendered once: the same for the life of the process. */
  private readonly openapi = JSON.stringify(buildOpenApiDocument())

  constructor(private readonly opts: HttpApiOptions) {
    this.control = opts.control
    this.log = opts.log
    this.bodyLimits = {
      maxBytes: opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      drainBytes: opts.bodyDrain?.maxBytes ?? DEFAULT_DRAIN_BYTES,
      drainMs: opts.bodyDrain?.maxMs ?? DEFAULT_DRAIN_MS,
    }
    this.token = opts.apiToken ? new ApiToken(opts.apiToken) : null
    this.guard = new RequestGuard({
      bindHost: opts.host,
      port: () => this.boundPort,
      ...(opts.allowHosts ? { allowHosts: opts.allowHosts } : {}),
      ...(opts.allowOrigins ? { allowOrigins: opts.allowOrigins } : {}),
      ...(opts.machine ? { machine: opts.machine } : {}),
    })
  }

  /** The Host names requests may carry (the defaults and --api-allow-host). */
  get allowedHosts(): string[] {
    return this.guard.allowedHosts
  }

  /** Open WebSocket connections. */
  get wsConnections(): number {
    return this.sockets?.connections ?? 0
  }

  /** The bound port (0 before start). */
  get port(): number {
    return this.boundPort
  }

  async start(): Promise<number> {
    if (this.phase !== 'new') throw new Error('an HttpApi can be started once')
    const uws = loadUws()
    const app = uws.App()
    if (this.opts.live) {
      this.sockets = new LiveSockets({
        source: this.opts.live,
        log: this.log,
        ...(this.opts.counters ? { counters: this.opts.counters } : {}),
        maxBufferBytes: this.opts.ws?.maxBufferBytes ?? 1024 * 1024,
        maxConnections: this.opts.ws?.maxConnections ?? 1000,
        maxMessageBytes: this.opts.ws?.maxMessageBytes ?? 16 * 1024,
        token: this.token,
        screen: (res, req, reply) => this.screen(res, req, reply) || this.refuseNotLeader(reply),
      })
      this.sockets.mount(app)
    }
    this.mount(app)
    const { host, port } = this.opts
    // uWS calls back synchronously from listen().
    let socket = false as us_listen_socket | false
    ;(app.listen as unknown as ListenExclusive).call(app, host, port, LISTEN_EXCLUSIVE_PORT, (s) => {
      socket = s
    })
    if (socket === false) {
      this.sockets?.close()
      ;(app as NativeExtras).close?.()
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot listen for HTTP on ${host}:${port}: port ${port} is in use (choose another with --http-port, or stop what holds it), or --http-host ${host} is not an address of this machine`)
    }
    this.uws = uws
    this.app = app
    this.listenSocket = socket
    this.boundPort = uws.us_socket_local_port(socket)
    this.phase = 'listening'
    return this.boundPort
  }

  /** Stops listening and closes open connections (keep-alive too); requests in flight are aborted. */
  close(): Promise<void> {
    if (this.phase === 'closed') return Promise.resolve()
    this.phase = 'closed'
    // WebSockets first, with a close frame each: app.close() would cut them without one.
    this.sockets?.close()
    // The listen socket first: app.close() would close it as well, but closing it twice is a
    // use-after-free in uSockets, and the listen socket alone is enough if app.close() is missing.
    if (this.listenSocket && this.uws) this.uws.us_listen_socket_close(this.listenSocket)
    this.listenSocket = null
    ;(this.app as NativeExtras | null)?.close?.()
    this.app = null
    return Promise.resolve()
  }

  // --- routing ---------------------------------------------------------------------------------

  private routes(): Route[] {
    const dashboard: Route[] = [...(this.opts.dashboard?.files ?? [])].map(([path, file]) => ({
      method: 'get',
      pattern: path,
      // The page changes with the master's version only; a reload after an upgrade gets the new one.
      handle: (reply) => reply.text(200, file.contentType, file.body, { headers: { 'cache-control': 'no-cache' } }),
      open: true,
    }))
    return [
      ...dashboard,
      { method: 'get', pattern: '/healthz', handle: (reply) => this.healthz(reply), open: true, standby: true },
      // Open, like the dashboard page: it says what the API is, not what the master holds; a
      // standby serves it too, since it is the same API.
      { method: 'get', pattern: '/openapi.json', handle: (reply) => reply.rawJson(200, this.openapi, { headers: { 'cache-control': 'no-cache' } }), open: true, standby: true },
      { method: 'get', pattern: '/metrics', handle: (reply) => this.metrics(reply) },
      { method: 'get', pattern: '/api/status', handle: (reply) => reply.json(200, this.control.status()), standby: true },
      { method: 'get', pattern: '/api/workers', handle: (reply) => this.listWorkers(reply) },
      { method: 'post', pattern: '/api/workers', handle: (reply, req, res) => this.registerWorker(reply, req, res) },
      { method: 'get', pattern: '/api/workers/:id', handle: (reply, req) => reply.json(200, this.control.getWorker(pathId(req))) },
      { method: 'del', pattern: '/api/workers/:id', handle: (reply, req) => this.unregisterWorker(reply, req) },
      { method: 'post', pattern: '/api/workers/:id/token', handle: (reply, req, res) => this.rotateWorkerToken(reply, req, res) },
      { method: 'post', pattern: '/api/workers/:id/cordon', handle: (reply, req, res) => this.scheduling(reply, req, res, 'cordon') },
      { method: 'post', pattern: '/api/workers/:id/uncordon', handle: (reply, req, res) => this.scheduling(reply, req, res, 'uncordon') },
      { method: 'post', pattern: '/api/workers/:id/drain', handle: (reply, req, res) => this.scheduling(reply, req, res, 'drain') },
      { method: 'del', pattern: '/api/workers/:id/drain', handle: (reply, req) => this.stopDrain(reply, req) },
      {
        method: 'get',
        pattern: '/api/workers/:id/metrics',
        handle: (reply, req) => reply.json(200, this.control.workerMetrics(pathId(req), parseMetricsQuery(req.getQuery() ?? '', Date.now()))),
      },
      { method: 'get', pattern: '/api/tasks', handle: (reply, req) => reply.json(200, this.control.listTasks(parseTaskQuery(req.getQuery() ?? ''))) },
      { method: 'post', pattern: '/api/tasks', handle: (reply, req, res) => this.submitTask(reply, req, res) },
      { method: 'get', pattern: '/api/tasks/:id', handle: (reply, req) => reply.json(200, this.control.getTask(pathId(req, 'CLOUDAI_BAD_TASK_ID', 'task id'))) },
      { method: 'del', pattern: '/api/tasks/:id', handle: (reply, req) => this.cancelTask(reply, req) },
      {
        method: 'get',
        pattern: '/api/tasks/:id/logs',
        handle: (reply, req) => serveTaskLogs(this.control, reply, pathId(req, 'CLOUDAI_BAD_TASK_ID', 'task id'), parseLogQuery(req.getQuery() ?? '', req.getHeader('last-event-id')), req.getHeader('accept')),
      },
    ]
  }

  private mount(app: TemplatedApp): void {
    const allowed = new Map<string, string[]>()
    const routes = this.routes()
    assertDocumented(routes, { dashboard: this.opts.dashboard !== undefined })
    for (const route of routes) {
      app[route.method](route.pattern, this.wrap(route.handle, route.open === true, route.standby === true))
      allowed.set(route.pattern, [...(allowed.get(route.pattern) ?? []), ALLOW_NAMES[route.method]])
    }
    // uWS prefers a method's own handler over `any` on the same pattern, and any static pattern
    // over the catch-all, so these only see what nothing above took.
    for (const [pattern, methods] of allowed) {
      const allow = methods.join(', ')
      app.any(
        pattern,
        this.wrap((reply) => reply.error(new CloudaiError('CLOUDAI_METHOD_NOT_ALLOWED', `${reply.method} is not allowed on ${pattern}; use ${allow}`), { headers: { allow } })),
      )
    }
    app.any('/*', this.wrap((reply) => reply.error(new CloudaiError('CLOUDAI_NOT_FOUND', `no route for ${reply.method} ${reply.url.slice(0, 200)}`))))
  }

  /**
   * Every handler runs inside this: nothing thrown may reach uWS (it would take the process down).
   * Every request, on every route, first passes the guard (framing, size, Host, Origin). With an API
   * token, only `open` routes answer without it; the rest, unknown paths included (so that routes
   * cannot be probed), answer 401.
   */
  private wrap(handle: Handler, open = false, standby = false): (res: HttpResponse, req: HttpRequest) => void {
    return (res, req) => {
      const reply = new Reply(res, this.log, req.getCaseSensitiveMethod(), req.getUrl(), Date.now())
      if (this.screen(res, req, reply)) return
      if (!open && this.token && !this.token.acceptsHeader(req.getHeader('authorization'))) {
        this.opts.counters?.add(C.HTTP_UNAUTHORIZED)
        reply.error(new CloudaiError('CLOUDAI_UNAUTHORIZED', 'this master requires its API token: send Authorization: Bearer <token> (the CLI reads CLOUDAI_API_TOKEN or --api-token)'), {
          headers: { 'www-authenticate': 'Bearer realm="cloudai"' },
        })
        return
      }
      if (!standby && this.refuseNotLeader(reply)) return
      try {
        const pending = handle(reply, req, res)
        if (pending) pending.catch((err: unknown) => this.fail(reply, err))
      } catch (err) {
        this.fail(reply, err)
      }
    }
  }

  /** Runs the guard (see guard.ts); a refused request is counted and answered here. True if refused. */
  private screen(res: HttpResponse, req: HttpRequest, reply: Reply): boolean {
    const refusal = this.guard.check(req)
    if (!refusal) return false
    countRefusal(this.opts.counters, refusal)
    if (closesConnection(refusal)) refuseUnframed(res, reply, this.bodyLimits, refusal)
    else reply.error(refusal)
    return true
  }

  /** Answers 503 CLOUDAI_NOT_LEADER while this master does not lead; true if it did. */
  private refuseNotLeader(reply: Reply): boolean {
    const refusal = this.opts.notLeader?.()
    if (!refusal) return false
    reply.error(refusal)
    return true
  }

  private fail(reply: Reply, err: unknown): void {
    if (err instanceof BodyAborted) return
    if (err instanceof CloudaiError && err.code === 'CLOUDAI_BODY_TOO_LARGE') this.opts.counters?.add(C.HTTP_BODY_TOO_LARGE)
    countRefusal(this.opts.counters, err)
    reply.error(err)
  }

  // --- handlers --------------------------------------------------------------------------------

  private healthz(reply: Reply): void {
    const report = this.control.health()
    reply.json(report.status === 'unhealthy' ? 503 : 200, report)
  }

  /** Rendered in turns: the client may go away (or the API close) before the list is ready. */
  private async listWorkers(reply: Reply): Promise<void> {
    const body = await this.control.listWorkersBody(() => reply.open && this.phase !== 'closed')
    if (body) reply.list(200, body)
  }

  private async metrics(reply: Reply): Promise<void> {
    const { contentType, body } = await this.control.metrics()
    reply.text(200, contentType, body)
  }

  private async registerWorker(reply: Reply, req: HttpRequest, res: HttpResponse): Promise<void> {
    // Runs synchronously up to the first await, so req is still valid when the body reader reads it.
    const body = this.bodies.check(RegisterWorkerBodySchema, await readJsonObject(res, req, reply, this.bodyLimits), 'a worker registration')
    const { worker, created, persisted, token } = await this.control.registerWorker(body)
    if (!created) {
      reply.json(200, { message: 'Worker already registered', worker, persisted })
      return
    }
    const message = worker.is_active ? 'Worker registered (already connected and active)' : 'Worker registered (offline, will reconnect automatically)'
    // The token appears here only: the master keeps its hash.
    reply.json(201, { message, worker, persisted, token }, NO_STORE)
  }

  private async rotateWorkerToken(reply: Reply, req: HttpRequest, res: HttpResponse): Promise<void> {
    const id = pathId(req)
    // A JSON body (`{}`) like every other POST: without application/json a page on another site
    // could send it with no CORS preflight.
    this.bodies.check(AnyObjectBodySchema, await readJsonObject(res, req, reply, this.bodyLimits), 'a token rotation')
    const issued = await this.control.rotateWorkerToken(id)
    reply.json(201, { message: 'New worker token issued (shown once)', ...issued }, NO_STORE)
  }

  /** Cordon, uncordon, drain: a JSON body like every POST (`{}`; a drain's `{deadline_s, force}`). */
  private async scheduling(reply: Reply, req: HttpRequest, res: HttpResponse, what: 'cordon' | 'uncordon' | 'drain'): Promise<void> {
    const id = pathId(req)
    const raw = await readJsonObject(res, req, reply, this.bodyLimits)
    const body = what === 'drain' ? this.bodies.check(DrainBodySchema, raw, 'a drain request') : this.bodies.check(EmptyBodySchema, raw, `a ${what} request`)
    const { worker, persisted } = what === 'cordon' ? await this.control.cordonWorker(id) : what === 'uncordon' ? await this.control.uncordonWorker(id) : await this.control.drainWorker(id, body)
    const message = what === 'cordon' ? 'Worker cordoned' : what === 'uncordon' ? 'Worker uncordoned' : worker.scheduling === 'drained' ? 'Worker drained' : 'Worker draining'
    reply.json(200, { message, worker, persisted })
  }

  private async stopDrain(reply: Reply, req: HttpRequest): Promise<void> {
    const { worker, persisted } = await this.control.stopDrain(pathId(req))
    reply.json(200, { message: 'Drain stopped (the worker stays cordoned)', worker, persisted })
  }

  private async unregisterWorker(reply: Reply, req: HttpRequest): Promise<void> {
    const id = pathId(req)
    const { worker_id, persisted, tasks_requeued } = await this.control.unregisterWorker(id)
    reply.json(200, { message: 'Worker unregistered', worker_id, persisted, ...(tasks_requeued ? { tasks_requeued } : {}) })
  }

  private async submitTask(reply: Reply, req: HttpRequest, res: HttpResponse): Promise<void> {
    const body = this.bodies.check(SubmitTaskBodySchema, await readJsonObject(res, req, reply, this.bodyLimits), 'a task submission')
    const task = await this.control.submitTask(body)
    // CloudAI clients read task_id / status / message. `status` says what the submission did (the
    // task was queued); `task` is its state now, which the scheduler may already have moved on.
    // 202, not 201, for a task kept in memory only (the store is down): accepted, not yet durable.
    if (!task.durable) reply.json(202, { task_id: task.task_id, status: 'queued', durable: false, message: 'Task queued in memory only: the store is down; it is written when the store answers, and lost if the master stops first', task })
    else reply.json(201, { task_id: task.task_id, status: 'queued', durable: true, message: 'Task queued', task })
  }

  private async cancelTask(reply: Reply, req: HttpRequest): Promise<void> {
    const task = await this.control.cancelTask(pathId(req, 'CLOUDAI_BAD_TASK_ID', 'task id'))
    reply.json(200, { message: 'Task cancelled', task })
  }
}

const UWS_METHODS = { get: 'get', post: 'post', del: 'delete' } as const

/**
 * The routes mounted and the operations the document lists must be the same: a route added
 * without its operation (or the reverse) stops the API from starting, so every test catches it.
 */
function assertDocumented(routes: readonly Route[], has: { dashboard: boolean }): void {
  const key = (method: string, pattern: string): string => `${method.toUpperCase()} ${pattern}`
  const documented = new Set(OPERATIONS.map((op) => key(op.method, uwsPattern(op.path))))
  const mounted = new Set(routes.map((r) => key(UWS_METHODS[r.method], r.pattern)))
  const dashboardPaths = new Set(OPERATIONS.filter((op) => op.tags.includes('dashboard')).map((op) => key(op.method, op.path)))
  const missing = [...mounted].filter((k) => !documented.has(k))
  // /ws is LiveSockets' (mounted only with a live source), the dashboard's files only with them.
  const gone = [...documented].filter((k) => !mounted.has(k) && k !== 'GET /ws' && !(dashboardPaths.has(k) && !has.dashboard))
  if (missing.length > 0 || gone.length > 0) {
    throw new Error(`the HTTP routes and the OpenAPI operations (src/master/api/schema/routes.ts) differ: not documented ${missing.join(', ') || 'none'}; documented, not mounted ${gone.join(', ') || 'none'}`)
  }
}

/** The `:id` path segment, percent-decoded; validating it is the control's job. */
function pathId(req: HttpRequest, code: ErrorCode = 'CLOUDAI_BAD_WORKER_ID', what = 'worker id'): string {
  const raw = req.getParameter(0)
  try {
    return decodeURIComponent(raw)
  } catch {
    throw new CloudaiError(code, `${what} ${JSON.stringify(raw.slice(0, 80))} is not valid percent-encoding`)
  }
}
