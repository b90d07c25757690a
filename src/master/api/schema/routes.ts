import { type TSchema, Type } from '@sinclair/typebox'
import type { ErrorCode } from '../../../shared/errors.js'
import { LOG_TAIL_MAX, TASK_LIST_MAX_LIMIT } from '../query.js'
import { TASK_ID_PATTERN_TEXT } from './common.js'
import { ClusterStatusSchema, HealthReportSchema } from './status.js'
import { CancelTaskResponseSchema, LogEventSchema, SubmitTaskBodySchema, SubmitTaskResponseSchema, TaskListSchema, TaskViewSchema } from './tasks.js'
import {
  AnyObjectBodySchema,
  DrainBodySchema,
  EmptyBodySchema,
  RegisterWorkerBodySchema,
  RegisterWorkerResponseSchema,
  TokenIssuedResponseSchema,
  UnregisterWorkerResponseSchema,
  WorkerChangeResponseSchema,
  WorkerId,
  WorkerListSchema,
  WorkerMetricsViewSchema,
  WorkerViewSchema,
} from './workers.js'

// Every operation of the HTTP API, in one table: the document (document.ts) is built from it, and
// HttpApi refuses to start with a route it does not list, or without one it lists. Which errors an
// operation can answer is said here too; the groups below are where each comes from.

export type Method = 'get' | 'post' | 'delete'

export interface QueryParam {
  name: string
  schema: TSchema
  description: string
}

export interface Answer {
  description: string
  /** The body's schema; with `contentType` other than JSON, a description of its items at most. */
  schema?: TSchema
  /** Default application/json. */
  contentType?: string
  /** Other media types of the same answer (content negotiation), with their schemas. */
  alternatives?: Record<string, TSchema | undefined>
  headers?: Record<string, string>
}

export interface Operation {
  method: Method
  /** The OpenAPI path: `{id}` where uWS has `:id`. */
  path: string
  operationId: string
  summary: string
  description?: string
  tags: string[]
  /** Served without the API token (see guard.ts and http.ts). */
  open?: boolean
  /** A standby master answers it too, with its role (issue 19); every other operation answers a standby's 503. */
  standby?: true
  /** The `{id}` path parameter. */
  id?: 'worker' | 'task'
  query?: QueryParam[]
  headers?: QueryParam[]
  body?: TSchema
  /** Its successful answers by status. */
  answers: Record<number, Answer>
  /** The error codes the operation itself can answer (the groups below are added by `errors`). */
  errors: ErrorCode[]
}

/** Refused by the guard before any route runs (guard.ts), on every path. */
export const GUARD_ERRORS: readonly ErrorCode[] = ['CLOUDAI_BAD_FRAMING', 'CLOUDAI_URI_TOO_LONG', 'CLOUDAI_HEADERS_TOO_LARGE', 'CLOUDAI_BAD_HOST', 'CLOUDAI_BAD_ORIGIN']
/** Every route that needs the API token, when the master has one. */
export const TOKEN_ERRORS: readonly ErrorCode[] = ['CLOUDAI_UNAUTHORIZED']
/** A standby master (issue 19) refuses every operation but those marked `standby`, naming the leader. */
export const LEADER_ERRORS: readonly ErrorCode[] = ['CLOUDAI_NOT_LEADER']
/** A JSON body (body.ts). */
export const BODY_ERRORS: readonly ErrorCode[] = ['CLOUDAI_BAD_JSON', 'CLOUDAI_BAD_REQUEST', 'CLOUDAI_BODY_TOO_LARGE', 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE']
const WORKER_ID_ERRORS: ErrorCode[] = ['CLOUDAI_BAD_WORKER_ID', 'CLOUDAI_UNKNOWN_WORKER']
const TASK_ID_ERRORS: ErrorCode[] = ['CLOUDAI_BAD_TASK_ID', 'CLOUDAI_UNKNOWN_TASK', 'CLOUDAI_AMBIGUOUS_TASK_ID']

/** Every error code an operation can answer. */
export function operationErrors(op: Operation): ErrorCode[] {
  const codes = new Set<ErrorCode>([...GUARD_ERRORS, ...(op.open ? [] : TOKEN_ERRORS), ...(op.standby ? [] : LEADER_ERRORS), ...(op.body ? BODY_ERRORS : [])])
  if (op.id === 'worker') for (const c of WORKER_ID_ERRORS) codes.add(c)
  if (op.id === 'task') for (const c of TASK_ID_ERRORS) codes.add(c)
  for (const c of op.errors) codes.add(c)
  return [...codes]
}

const token = 'application/json; the answer carries a worker token: cache-control: no-store'
const noStore = { 'cache-control': 'no-store' }

const status: QueryParam = {
  name: 'status',
  schema: Type.Union(['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'pending'].map((s) => Type.Literal(s))),
  description: 'only tasks in this state (`pending` is CloudAI\'s name of queued)',
}
const wholeNumber = (min: number, max?: number) => Type.String({ pattern: '^\\d{1,15}$', description: max === undefined ? `a whole number, ${min} or more` : `a whole number from ${min} to ${max}` })

const SSE = 'text/event-stream'
const NDJSON = 'application/x-ndjson'

/** The dashboard's files (static.ts), open: the page asks for the token itself. */
const DASHBOARD_FILES: readonly [string, string, string][] = [
  ['/', 'getDashboard', 'text/html'],
  ['/dashboard.js', 'getDashboardScript', 'text/javascript'],
  ['/dashboard.css', 'getDashboardStyle', 'text/css'],
  ['/favicon.svg', 'getFavicon', 'image/svg+xml'],
]

export const OPERATIONS: readonly Operation[] = [
  ...DASHBOARD_FILES.map(([path, operationId, contentType]): Operation => ({
    method: 'get',
    path,
    operationId,
    summary: path === '/' ? 'The dashboard page' : `The dashboard's ${path.slice(1)}`,
    description: 'Open: served without the API token (the page asks for it). cache-control: no-cache.',
    tags: ['dashboard'],
    open: true,
    answers: { 200: { description: 'the file', contentType } },
    errors: [],
  })),
  {
    method: 'get',
    path: '/ws',
    operationId: 'openWebSocket',
    summary: 'The WebSocket of live changes (upgrade)',
    description: [
      'Answers 101 and speaks WebSocket. The master sends WsServerMessage: a WsSnapshot first, then every WsEvent on the topics the connection holds (workers and tasks from the start, and metrics);',
      'the client may send WsClientMessage (subscribe / unsubscribe) and gets WsSubscribed or, for a refused message, WsError (the subscriptions stay as they were).',
      'With an API token, the upgrade needs Authorization: Bearer <token> or, from a browser, ?token=<token>. Schemas: #/components/schemas/WsServerMessage and #/components/schemas/WsClientMessage.',
    ].join(' '),
    tags: ['live'],
    query: [{ name: 'token', schema: Type.String(), description: 'the API token, for a browser (which cannot set headers on a WebSocket)' }],
    answers: { 101: { description: 'switching to WebSocket' } },
    errors: ['CLOUDAI_TOO_MANY_CONNECTIONS', 'CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'get',
    path: '/healthz',
    operationId: 'getHealth',
    summary: "The master's health by the CloudAI guide's criteria",
    description: 'Open: served without the API token, for load balancers and probes. 200 healthy or degraded (only the store is down: the master works from memory), 503 unhealthy with the reasons.',
    tags: ['master'],
    open: true,
    standby: true,
    answers: { 200: { description: 'healthy or degraded', schema: HealthReportSchema }, 503: { description: 'unhealthy: `reasons` says why and names the workers', schema: HealthReportSchema } },
    errors: [],
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'getOpenApi',
    summary: 'This document',
    description: 'Open: served without the API token, and by a standby too. It says what the API is, not what the master holds, as the dashboard page does.',
    tags: ['master'],
    open: true,
    standby: true,
    answers: { 200: { description: 'the OpenAPI 3.1 document of this API', schema: Type.Object({ openapi: Type.Literal('3.1.0') }) } },
    errors: [],
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'getMetrics',
    summary: 'Prometheus metrics',
    tags: ['master'],
    answers: { 200: { description: 'the Prometheus text exposition format', contentType: 'text/plain; version=0.0.4' } },
    errors: [],
  },
  {
    method: 'get',
    path: '/api/status',
    operationId: 'getStatus',
    summary: 'Counts of workers and tasks, the store, the gRPC address; on a standby its role and the leader',
    tags: ['master'],
    standby: true,
    answers: { 200: { description: 'the cluster', schema: ClusterStatusSchema } },
    errors: [],
  },
  {
    method: 'get',
    path: '/api/workers',
    operationId: 'listWorkers',
    summary: 'Every registered worker',
    tags: ['workers'],
    answers: { 200: { description: 'the workers', schema: WorkerListSchema } },
    errors: [],
  },
  {
    method: 'post',
    path: '/api/workers',
    operationId: 'registerWorker',
    summary: 'Register a worker (it may be offline: it is dialled until it answers)',
    description: 'The same id and address again is a no-op (200, no token); the same id with another address is 409.',
    tags: ['workers'],
    body: RegisterWorkerBodySchema,
    answers: {
      200: { description: 'already registered at this address: nothing changed, no token', schema: RegisterWorkerResponseSchema },
      201: { description: `registered; its token is shown here only (${token})`, schema: RegisterWorkerResponseSchema, headers: noStore },
    },
    errors: ['CLOUDAI_BAD_WORKER_ID', 'CLOUDAI_BAD_ADDRESS', 'CLOUDAI_WORKER_EXISTS', 'CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'get',
    path: '/api/workers/{id}',
    operationId: 'getWorker',
    summary: 'One worker',
    tags: ['workers'],
    id: 'worker',
    answers: { 200: { description: 'the worker', schema: WorkerViewSchema } },
    errors: [],
  },
  {
    method: 'delete',
    path: '/api/workers/{id}',
    operationId: 'unregisterWorker',
    summary: 'Unregister a worker: its token stops at once, what it ran goes back to the queue',
    tags: ['workers'],
    id: 'worker',
    answers: { 200: { description: 'unregistered', schema: UnregisterWorkerResponseSchema } },
    errors: ['CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'post',
    path: '/api/workers/{id}/token',
    operationId: 'rotateWorkerToken',
    summary: 'Issue the worker a new token (the old one works until the worker presents the new one, or --token-grace)',
    tags: ['workers'],
    id: 'worker',
    body: AnyObjectBodySchema,
    answers: { 201: { description: `the new token, shown once (${token})`, schema: TokenIssuedResponseSchema, headers: noStore } },
    errors: ['CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'post',
    path: '/api/workers/{id}/cordon',
    operationId: 'cordonWorker',
    summary: 'No new placements on the worker (tasks that target it wait); idempotent',
    tags: ['workers'],
    id: 'worker',
    body: EmptyBodySchema,
    answers: { 200: { description: 'cordoned', schema: WorkerChangeResponseSchema } },
    errors: ['CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'post',
    path: '/api/workers/{id}/uncordon',
    operationId: 'uncordonWorker',
    summary: 'End a cordon, and a drain under way with it',
    tags: ['workers'],
    id: 'worker',
    body: EmptyBodySchema,
    answers: { 200: { description: 'uncordoned', schema: WorkerChangeResponseSchema } },
    errors: ['CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'post',
    path: '/api/workers/{id}/drain',
    operationId: 'drainWorker',
    summary: 'Cordon the worker and let what runs there finish; at the deadline cancel and requeue the rest',
    description: 'A drain survives a master restart. The answer says `Worker drained` when nothing was left to wait for, else `Worker draining`.',
    tags: ['workers'],
    id: 'worker',
    body: DrainBodySchema,
    answers: { 200: { description: 'draining, or drained at once', schema: WorkerChangeResponseSchema } },
    errors: ['CLOUDAI_BAD_FIELD', 'CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'delete',
    path: '/api/workers/{id}/drain',
    operationId: 'stopDrain',
    summary: 'Stop a drain; the worker stays cordoned',
    tags: ['workers'],
    id: 'worker',
    answers: { 200: { description: 'drain stopped', schema: WorkerChangeResponseSchema } },
    errors: ['CLOUDAI_NOT_DRAINING', 'CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'get',
    path: '/api/workers/{id}/metrics',
    operationId: 'getWorkerMetrics',
    summary: "A worker's telemetry: latest usage, averages and peaks over 1m/5m/15m/1h, history",
    tags: ['workers'],
    id: 'worker',
    query: [
      {
        name: 'since',
        schema: Type.String(),
        description: 'history from this time on: an ISO 8601 time (2026-11-28T10:00:00Z), epoch milliseconds, or a duration back from now (15m, 1h; at most 7 days)',
      },
    ],
    answers: { 200: { description: 'the telemetry (`has_data: false` for a worker that never connected)', schema: WorkerMetricsViewSchema } },
    errors: ['CLOUDAI_BAD_REQUEST'],
  },
  {
    method: 'get',
    path: '/api/tasks',
    operationId: 'listTasks',
    summary: 'Tasks, newest first',
    tags: ['tasks'],
    query: [
      status,
      { name: 'limit', schema: wholeNumber(1, TASK_LIST_MAX_LIMIT), description: `at most this many (1 to ${TASK_LIST_MAX_LIMIT}, default 100)` },
      { name: 'offset', schema: wholeNumber(0), description: 'skip this many (default 0)' },
    ],
    answers: { 200: { description: 'a page of tasks and the total', schema: TaskListSchema } },
    errors: ['CLOUDAI_BAD_REQUEST'],
  },
  {
    method: 'post',
    path: '/api/tasks',
    operationId: 'submitTask',
    summary: 'Submit a task',
    description:
      'Queued at once; a task no registered worker could ever fit is still queued, and its `reason` says so. 201 once durable; 202 when kept in memory only (the store is down and the master runs with --accept-while-degraded); 503 CLOUDAI_STORE_DEGRADED when the store is down without it.',
    tags: ['tasks'],
    body: SubmitTaskBodySchema,
    answers: {
      201: { description: 'queued and durable', schema: SubmitTaskResponseSchema },
      202: { description: 'queued in memory only: the store is down', schema: SubmitTaskResponseSchema },
    },
    errors: ['CLOUDAI_BAD_FIELD', 'CLOUDAI_BAD_WORKER_ID', 'CLOUDAI_UNKNOWN_WORKER', 'CLOUDAI_STORE_DEGRADED', 'CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'get',
    path: '/api/tasks/{id}',
    operationId: 'getTask',
    summary: 'One task, with all the output the master keeps (--task-output-tail); any unique prefix of its id',
    tags: ['tasks'],
    id: 'task',
    answers: { 200: { description: 'the task', schema: TaskViewSchema } },
    errors: [],
  },
  {
    method: 'delete',
    path: '/api/tasks/{id}',
    operationId: 'cancelTask',
    summary: 'Cancel a queued or running task',
    tags: ['tasks'],
    id: 'task',
    answers: { 200: { description: 'cancelled', schema: CancelTaskResponseSchema } },
    errors: ['CLOUDAI_TASK_FINISHED', 'CLOUDAI_STORE_DEGRADED', 'CLOUDAI_SHUTTING_DOWN'],
  },
  {
    method: 'get',
    path: '/api/tasks/{id}/logs',
    operationId: 'getTaskLogs',
    summary: "A task's output: Server-Sent Events (the default) or NDJSON (Accept: application/x-ndjson)",
    description: [
      'Each event is a LogEvent. As Server-Sent Events, `id:` is the line\'s sequence number, so an EventSource that reconnects sends Last-Event-ID and gets exactly the rest;',
      'a gap is `event: gap`, the end `event: end` with id `end`; a reconnection with Last-Event-ID `end` is answered 204, which stops an EventSource.',
      'As NDJSON, one LogEvent per line. Blank lines (NDJSON) and comments (SSE) every 15 s keep proxies from closing a quiet stream.',
      'Without follow the answer ends after the lines kept now; with follow it ends with the task.',
    ].join(' '),
    tags: ['tasks'],
    id: 'task',
    query: [
      { name: 'follow', schema: Type.Union(['1', 'true', '0', 'false'].map((v) => Type.Literal(v))), description: 'follow the output live until the task ends' },
      { name: 'tail', schema: wholeNumber(1, LOG_TAIL_MAX), description: `the last N lines (1 to ${LOG_TAIL_MAX})` },
      { name: 'after', schema: wholeNumber(0), description: 'the lines after this sequence number (an SSE id)' },
      {
        name: 'since',
        schema: Type.String({ pattern: '^(\\d{1,12}(\\.\\d{1,6})?(ms|s|m|h|d)|\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2}))$' }),
        description: 'only lines of this time or later: a duration back from now (90s, 10m, 2h, 1d; at most 366d) or an RFC 3339 time with its offset; lines the master serves from its stored tail carry the task\'s finish time',
      },
    ],
    headers: [
      { name: 'Last-Event-ID', schema: Type.String({ pattern: '^(\\d{1,15}|end)$' }), description: "an EventSource's resume point (wins over after); `end`: it had the end event (204)" },
      { name: 'Accept', schema: Type.String(), description: 'application/x-ndjson for NDJSON; anything else gets Server-Sent Events' },
    ],
    answers: {
      200: { description: 'the output, streamed (cache-control: no-store)', contentType: SSE, schema: LogEventSchema, alternatives: { [NDJSON]: LogEventSchema } },
      204: { description: 'Last-Event-ID was `end`: nothing to resume' },
    },
    errors: ['CLOUDAI_BAD_REQUEST', 'CLOUDAI_NOT_FOUND', 'CLOUDAI_TOO_MANY_CONNECTIONS', 'CLOUDAI_SHUTTING_DOWN'],
  },
]

/** The `{id}` parameter's schema by what it names. */
export const ID_SCHEMAS = { worker: WorkerId, task: Type.String({ pattern: TASK_ID_PATTERN_TEXT, description: 'a task id, or any unique prefix of one' }) } as const

/** `/api/workers/{id}` as uWS writes it: `/api/workers/:id`. */
export function uwsPattern(path: string): string {
  return path.replace(/\{(\w+)\}/g, ':$1')
}
