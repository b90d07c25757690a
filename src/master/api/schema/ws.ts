import { type Static, Type } from '@sinclair/typebox'
import { Nullable, Time } from './common.js'
import { ClusterStatusSchema } from './status.js'
import { TaskStatusSchema, TaskViewSchema } from './tasks.js'
import { UsageSchema, WorkerViewSchema } from './workers.js'

// The WebSocket at /ws, both ways. A client gets a snapshot, then every change on the topics it
// holds (workers and tasks from the start; telemetry once it subscribes to metrics or
// metrics/<worker-id>). It may send subscribe / unsubscribe messages; a refused one changes
// nothing and is answered with an error message.

/** Topics a connection may hold at once. */
export const WS_MAX_TOPICS = 1000

export const WsTopicSchema = Type.String({
  pattern: '^(workers|tasks|metrics|metrics/[A-Za-z0-9._-]{1,64})$',
  description: 'workers, tasks, metrics (every worker\'s telemetry) or metrics/<worker-id> (one worker\'s)',
})

// --- client to master --------------------------------------------------------------------------

export const WsClientMessageSchema = Type.Object(
  {
    type: Type.Union([Type.Literal('subscribe'), Type.Literal('unsubscribe')]),
    topics: Type.Array(WsTopicSchema, { minItems: 1, maxItems: WS_MAX_TOPICS }),
  },
  { $id: 'WsClientMessage', description: `at most ${WS_MAX_TOPICS} topics per connection; a message over the limit (16 KiB by default) closes the connection (1009)` },
)

// --- master to client --------------------------------------------------------------------------

const stamp = { timestamp: Time() }

export const WsSnapshotSchema = Type.Object(
  {
    type: Type.Literal('snapshot'),
    workers: Type.Array(WorkerViewSchema),
    tasks: Type.Array(TaskViewSchema, { description: 'every queued, assigned or running task, and the newest others' }),
    status: ClusterStatusSchema,
    ...stamp,
  },
  { $id: 'WsSnapshot', additionalProperties: false, description: 'the first message: the state the events start from' },
)

export const WsWorkerSchema = Type.Object({ type: Type.Literal('worker'), worker: WorkerViewSchema, ...stamp }, { $id: 'WsWorker', additionalProperties: false })

export const WsWorkerStatusSchema = Type.Object(
  { type: Type.Literal('worker_status'), worker_id: Type.String(), is_active: Type.Boolean(), ...stamp },
  { $id: 'WsWorkerStatus', additionalProperties: false, description: "CloudAI's message, in its shape (after the worker message with the full record)" },
)

export const WsWorkerRemovedSchema = Type.Object({ type: Type.Literal('worker_removed'), worker_id: Type.String(), ...stamp }, { $id: 'WsWorkerRemoved', additionalProperties: false })

export const WsTaskStatusSchema = Type.Object(
  {
    type: Type.Literal('task_status'),
    task_id: Type.String(),
    status: TaskStatusSchema,
    previous: Nullable(TaskStatusSchema),
    worker_id: Nullable(Type.String()),
    submitted_at: Time(),
    assigned_at: Nullable(Time()),
    started_at: Nullable(Time()),
    finished_at: Nullable(Time()),
    task: TaskViewSchema,
    ...stamp,
  },
  { $id: 'WsTaskStatus', additionalProperties: false },
)

const usage1m = Type.Object(
  { cpu: Type.Number(), memory: Type.Number(), storage: Type.Number(), gpu: Type.Number(), running_tasks: Type.Number(), samples: Type.Integer() },
  { additionalProperties: false },
)

export const WsWorkerMetricsSchema = Type.Object(
  {
    type: Type.Literal('worker_metrics'),
    worker_id: Type.String(),
    latest: Nullable(Type.Object({ at: Time(), cpu: Type.Number(), memory: Type.Number(), storage: Type.Number(), gpu: Type.Number(), running_tasks: Type.Number() }, { additionalProperties: false })),
    averages: Type.Object({ '1m': Nullable(usage1m) }, { additionalProperties: false }),
    peaks: Type.Object({ '1m': Nullable(UsageSchema) }, { additionalProperties: false }),
    samples_processed: Type.Integer(),
    samples_dropped: Type.Integer(),
    ...stamp,
  },
  { $id: 'WsWorkerMetrics', additionalProperties: false, description: 'telemetry, at most every 250 ms per worker, on metrics and metrics/<worker-id>' },
)

export const WsSubscribedSchema = Type.Object(
  { type: Type.Literal('subscribed'), topics: Type.Array(Type.String(), { description: 'every topic the connection holds now, sorted' }), ...stamp },
  { $id: 'WsSubscribed', additionalProperties: false },
)

export const WsErrorSchema = Type.Object(
  { type: Type.Literal('error'), code: Type.String({ description: 'CLOUDAI_BAD_JSON, CLOUDAI_BAD_REQUEST or CLOUDAI_BAD_WORKER_ID' }), message: Type.String(), ...stamp },
  { $id: 'WsError', additionalProperties: false, description: 'a refused client message: the subscriptions are as they were' },
)

/** A change the master pushes (src/master/live.ts's LiveMessage). */
export const WsEventSchema = Type.Union([WsWorkerSchema, WsWorkerStatusSchema, WsWorkerRemovedSchema, WsTaskStatusSchema, WsWorkerMetricsSchema], { $id: 'WsEvent' })

export const WsServerMessageSchema = Type.Union([WsSnapshotSchema, WsWorkerSchema, WsWorkerStatusSchema, WsWorkerRemovedSchema, WsTaskStatusSchema, WsWorkerMetricsSchema, WsSubscribedSchema, WsErrorSchema], {
  $id: 'WsServerMessage',
})

export type WsClientMessageT = Static<typeof WsClientMessageSchema>
export type WsEventT = Static<typeof WsEventSchema>
export type WsSnapshotT = Static<typeof WsSnapshotSchema>
export type WsServerMessageT = Static<typeof WsServerMessageSchema>
