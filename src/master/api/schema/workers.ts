import { type Static, Type } from '@sinclair/typebox'
import { MAX_DRAIN_DEADLINE_S } from '../../../shared/worker-scheduling.js'
import { ERROR_CODE_KEYWORD, Nullable, Time, WORKER_ID_PATTERN_TEXT } from './common.js'

// Workers as the API shows them and the bodies that change them. CloudAI's field names are kept
// where they exist (worker_id, worker_ip, is_active, total_*), so CloudAI clients read them.

export const WorkerId = Type.String({ pattern: WORKER_ID_PATTERN_TEXT, description: '1 to 64 characters of A-Z a-z 0-9 . _ -', [ERROR_CODE_KEYWORD]: 'CLOUDAI_BAD_WORKER_ID' })

export const SchedulingStateSchema = Type.Union([Type.Literal('eligible'), Type.Literal('cordoned'), Type.Literal('draining'), Type.Literal('drained')], {
  description: '`cordoned`/`draining`/`drained`: an operator took the worker out of placement (cordon, drain); `eligible`: it takes tasks',
})

export const DrainViewSchema = Type.Object(
  {
    started_at: Time(),
    deadline: Nullable(Time('when what still runs is cancelled and requeued; null: no deadline')),
    force: Type.Boolean(),
    drained_at: Nullable(Time()),
  },
  { $id: 'DrainView', additionalProperties: false },
)

export const CredentialViewSchema = Type.Object(
  {
    issued_at: Time(),
    presented_at: Nullable(Time('null until the worker has called with this token')),
    required: Type.Boolean({ description: 'true once the worker has presented a token: calls for it without one are refused, from loopback too' }),
    previous_valid_until: Nullable(Time('during a rotation, when the old token stops at the latest')),
  },
  { $id: 'CredentialView', additionalProperties: false },
)

export const UsageSchema = Type.Object({ cpu: Type.Number(), memory: Type.Number(), storage: Type.Number(), gpu: Type.Number() }, { $id: 'Usage', additionalProperties: false })

export const RunningTaskSchema = Type.Object(
  { task_id: Type.String(), cpu: Type.Number(), memory: Type.Number(), gpu: Type.Number(), status: Type.String() },
  { $id: 'RunningTask', additionalProperties: false },
)

export const WorkerViewSchema = Type.Object(
  {
    worker_id: Type.String(),
    worker_ip: Type.String({ description: 'host:port the master dials (CloudAI\'s name; the same as address)' }),
    address: Type.String(),
    is_active: Type.Boolean(),
    status: Type.Union([Type.Literal('active'), Type.Literal('inactive')]),
    suspect: Type.Boolean({ description: 'active, but its last AssignTask got no answer: no tasks are placed on it until it answers again' }),
    suspect_since: Nullable(Time()),
    suspect_reason: Nullable(Type.String()),
    scheduling: SchedulingStateSchema,
    cordoned: Type.Boolean(),
    drain: Nullable(DrainViewSchema),
    total_cpu: Nullable(Type.Number()),
    total_memory: Nullable(Type.Number()),
    total_storage: Nullable(Type.Number()),
    total_gpu: Nullable(Type.Number()),
    usage: Nullable(UsageSchema),
    running_tasks: Type.Array(RunningTaskSchema),
    reported_address: Nullable(Type.String()),
    last_heartbeat: Nullable(Time()),
    registered_at: Time(),
    connected_at: Nullable(Time()),
    disconnected_at: Nullable(Time()),
    reconnects: Type.Integer({ minimum: 0 }),
    credential: Nullable(CredentialViewSchema),
  },
  { $id: 'WorkerView', additionalProperties: false },
)

export const WorkerListSchema = Type.Object({ workers: Type.Array(WorkerViewSchema) }, { $id: 'WorkerList', additionalProperties: false })

// --- telemetry: GET /api/workers/{id}/metrics ------------------------------------------------------

const Windowed = <T extends Parameters<typeof Nullable>[0]>(stats: T) =>
  Type.Object({ '1m': Nullable(stats), '5m': Nullable(stats), '15m': Nullable(stats), '1h': Nullable(stats) }, { additionalProperties: false })

const UsageProps = { cpu: Type.Number(), memory: Type.Number(), storage: Type.Number(), gpu: Type.Number() }

export const WorkerMetricsViewSchema = Type.Object(
  {
    worker_id: Type.String(),
    is_active: Type.Boolean(),
    has_data: Type.Boolean({ description: 'false for a worker that never connected' }),
    uptime_s: Nullable(Type.Number({ description: 'seconds since the worker connected, while it is active' })),
    last_heartbeat: Nullable(Time()),
    since_last_heartbeat_ms: Nullable(Type.Number()),
    reconnects: Type.Integer({ minimum: 0 }),
    registered_at: Time(),
    connected_at: Nullable(Time()),
    disconnected_at: Nullable(Time()),
    latest: Nullable(Type.Object({ at: Time(), ...UsageProps, running_tasks: Type.Number() }, { additionalProperties: false })),
    averages: Windowed(Type.Object({ ...UsageProps, running_tasks: Type.Number(), samples: Type.Integer() }, { additionalProperties: false })),
    peaks: Windowed(UsageSchema),
    samples_processed: Type.Integer({ minimum: 0 }),
    samples_dropped: Type.Integer({ minimum: 0 }),
    summarized_at: Nullable(Time('when the telemetry thread computed the averages (they trail the heartbeats by at most a second)')),
    history_step_ms: Type.Number(),
    history: Type.Array(
      Type.Object(
        {
          at: Time(),
          step_ms: Type.Optional(Type.Number({ description: "a point's width (absent from masters that kept one resolution)" })),
          samples: Type.Integer(),
          ...UsageProps,
          running_tasks: Type.Number(),
          cpu_peak: Type.Number(),
          memory_peak: Type.Number(),
          storage_peak: Type.Number(),
          gpu_peak: Type.Number(),
        },
        { additionalProperties: false },
      ),
      { description: 'points of history_step_ms for the last 6 minutes, of about a minute before' },
    ),
  },
  { $id: 'WorkerMetricsView', additionalProperties: false },
)

// --- request bodies ----------------------------------------------------------------------------------

const ADDRESS_TEXT = 'host:port (a DNS name, an IPv4 address or a bracketed IPv6 address; port 1 to 65535)'

/**
 * POST /api/workers. `address` is an alias of worker_ip (not both with different values); that one
 * of them is there, the host:port grammar and the port's range are checked by the control
 * (CLOUDAI_BAD_ADDRESS), which a schema would say less clearly. Other
 * fields are ignored, as CloudAI's clients send more.
 */
export const RegisterWorkerBodySchema = Type.Object(
  {
    worker_id: WorkerId,
    worker_ip: Type.Optional(Type.String({ minLength: 1, maxLength: 262, description: ADDRESS_TEXT, [ERROR_CODE_KEYWORD]: 'CLOUDAI_BAD_ADDRESS' })),
    address: Type.Optional(Type.String({ minLength: 1, maxLength: 262, description: `alias of worker_ip: ${ADDRESS_TEXT}`, [ERROR_CODE_KEYWORD]: 'CLOUDAI_BAD_ADDRESS' })),
  },
  { $id: 'RegisterWorkerBody', description: 'worker_ip (or its alias address) is required: the control refuses a body without either with CLOUDAI_BAD_ADDRESS' },
)

/** POST /api/workers/{id}/drain: both optional. */
export const DrainBodySchema = Type.Object(
  {
    deadline_s: Type.Optional(
      Nullable(Type.Number({ exclusiveMinimum: 0, maximum: MAX_DRAIN_DEADLINE_S, description: `seconds until what still runs is cancelled and requeued, above 0 and at most ${MAX_DRAIN_DEADLINE_S} (a week); absent or null: no deadline` })),
    ),
    force: Type.Optional(Type.Boolean({ description: 'cancel and requeue what runs at once' })),
  },
  { $id: 'DrainBody', additionalProperties: false },
)

/** POST cordon / uncordon: `{}` (a JSON body like every POST, so that a page elsewhere cannot send it without a CORS preflight). */
export const EmptyBodySchema = Type.Object({}, { $id: 'EmptyBody', additionalProperties: false })

/** POST /api/workers/{id}/token: a JSON object; its fields are ignored. */
export const AnyObjectBodySchema = Type.Object({}, { $id: 'AnyObjectBody', additionalProperties: true })

// --- answers -----------------------------------------------------------------------------------------

export const RegisterWorkerResponseSchema = Type.Object(
  {
    message: Type.String(),
    worker: WorkerViewSchema,
    persisted: Type.Boolean({ description: 'false while the store is failing: the registration holds in memory and is written when the store answers' }),
    token: Type.Optional(Nullable(Type.String({ description: 'the new worker\'s token, shown only in this answer (201); the master keeps its hash' }))),
  },
  { $id: 'RegisterWorkerResponse', additionalProperties: false },
)

export const TokenIssuedResponseSchema = Type.Object(
  {
    message: Type.String(),
    worker_id: Type.String(),
    token: Type.String({ description: 'shown once, here' }),
    previous_valid_until: Nullable(Time('when the token it replaced stops working at the latest; null: at once, or there was none')),
    persisted: Type.Boolean(),
  },
  { $id: 'TokenIssuedResponse', additionalProperties: false },
)

export const WorkerChangeResponseSchema = Type.Object({ message: Type.String(), worker: WorkerViewSchema, persisted: Type.Boolean() }, { $id: 'WorkerChangeResponse', additionalProperties: false })

export const UnregisterWorkerResponseSchema = Type.Object(
  {
    message: Type.String(),
    worker_id: Type.String(),
    persisted: Type.Boolean(),
    tasks_requeued: Type.Optional(Type.Array(Type.String(), { description: 'the tasks it ran, back in the queue (absent: none)' })),
  },
  { $id: 'UnregisterWorkerResponse', additionalProperties: false },
)

export type WorkerViewT = Static<typeof WorkerViewSchema>
export type DrainViewT = Static<typeof DrainViewSchema>
export type CredentialViewT = Static<typeof CredentialViewSchema>
export type WorkerMetricsViewT = Static<typeof WorkerMetricsViewSchema>
export type SchedulingStateT = Static<typeof SchedulingStateSchema>
