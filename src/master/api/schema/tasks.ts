import { type Static, Type } from '@sinclair/typebox'
import { MAX_COMMAND_BYTES, MAX_ENV_ENTRIES, MAX_TASK_REQUEST } from '../../../shared/validation.js'
import { ERROR_CODE_KEYWORD, Nullable, Time } from './common.js'

// Tasks as the API shows them, the submission body, and a task's output events.

export const TaskStatusSchema = Type.Union(
  [Type.Literal('queued'), Type.Literal('assigned'), Type.Literal('running'), Type.Literal('completed'), Type.Literal('failed'), Type.Literal('cancelled')],
  { $id: 'TaskStatus' },
)

export const TaskViewSchema = Type.Object(
  {
    task_id: Type.String(),
    name: Type.String(),
    command: Type.String(),
    docker_image: Type.String(),
    status: TaskStatusSchema,
    worker_id: Nullable(Type.String()),
    target_worker_id: Nullable(Type.String()),
    req_cpu: Type.Number(),
    req_memory: Type.Number(),
    req_storage: Type.Number(),
    req_gpu: Type.Number(),
    timeout_s: Type.Number(),
    max_attempts: Type.Integer(),
    attempts: Type.Integer({ minimum: 0, description: 'runs that started on a worker (what max_attempts bounds)' }),
    attempt: Type.Integer({
      minimum: 0,
      description: "the number of the task's latest placement (0: never placed); placements that never reached a worker are numbered too, so it may be above attempts",
    }),
    submitted_at: Time(),
    assigned_at: Nullable(Time()),
    started_at: Nullable(Time()),
    finished_at: Nullable(Time()),
    exit_code: Nullable(Type.Integer()),
    reason: Nullable(Type.String({ description: 'why it failed, or why it waits (no registered worker is large enough…)' })),
    logs: Type.String({ description: 'last part of the output (the full log stays on the worker: GET /api/tasks/{id}/logs)' }),
    history: Type.Array(Type.Object({ status: TaskStatusSchema, at: Time(), worker_id: Nullable(Type.String()), reason: Nullable(Type.String()) }, { additionalProperties: false })),
    durable: Type.Boolean({ description: 'false for a task accepted while the store was down (--accept-while-degraded), until it is written' }),
  },
  { $id: 'TaskView', additionalProperties: false },
)

export const TaskListSchema = Type.Object(
  { tasks: Type.Array(TaskViewSchema), total: Type.Integer({ minimum: 0 }), limit: Type.Integer({ minimum: 1 }), offset: Type.Integer({ minimum: 0 }) },
  { $id: 'TaskList', additionalProperties: false },
)

// --- POST /api/tasks -------------------------------------------------------------------------------

const amount = (max: number, description: string) => Type.Optional(Type.Number({ minimum: 0, maximum: max, description }))
const text = (max: number, description: string) => Type.Optional(Nullable(Type.String({ maxLength: max, description })))

/**
 * A task submission. CloudAI's clients send cpu_required / memory_required / gpu_required /
 * storage_required, ours req_*: both are accepted (not both with different values, which the
 * control refuses). Other fields are ignored, so that CloudAI clients' extra fields do not break
 * them. What a schema cannot say is checked by the control, with the same code: a command of at
 * most 64 KiB in UTF-8 without NUL, required unless docker_image is set; docker_image a reference
 * `docker run` takes; env values of at most 32 KiB.
 */
export const SubmitTaskBodySchema = Type.Object(
  {
    command: Type.Optional(Nullable(Type.String({ maxLength: MAX_COMMAND_BYTES, description: 'a shell command; required (non-empty) unless docker_image is set' }))),
    name: text(128, 'a label'),
    docker_image: text(512, "[registry[:port]/]name[:tag][@digest]; empty or absent: a shell task"),
    req_cpu: amount(MAX_TASK_REQUEST.cpu, 'cores'),
    req_memory: amount(MAX_TASK_REQUEST.memory, 'GB'),
    req_storage: amount(MAX_TASK_REQUEST.storage, 'GB'),
    req_gpu: amount(MAX_TASK_REQUEST.gpu, 'GPUs'),
    cpu_required: amount(MAX_TASK_REQUEST.cpu, "CloudAI's name of req_cpu"),
    memory_required: amount(MAX_TASK_REQUEST.memory, "CloudAI's name of req_memory"),
    storage_required: amount(MAX_TASK_REQUEST.storage, "CloudAI's name of req_storage"),
    gpu_required: amount(MAX_TASK_REQUEST.gpu, "CloudAI's name of req_gpu"),
    target_worker_id: Type.Optional(
      Nullable(Type.String({ pattern: '^(|[A-Za-z0-9._-]{1,64})$', description: 'the worker to run it on only, 1 to 64 characters of A-Z a-z 0-9 . _ -; null or empty: any', [ERROR_CODE_KEYWORD]: 'CLOUDAI_BAD_WORKER_ID' })),
    ),
    user_id: text(128, "CloudAI's user id, kept with the task"),
    timeout_s: Type.Optional(Type.Number({ minimum: 0, maximum: 7 * 24 * 3600, description: 'seconds; 0 (the default): none' })),
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'runs at most (default 3)' })),
    env: Type.Optional(
      Nullable(
        Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,255}$' }), Type.String(), {
          maxProperties: MAX_ENV_ENTRIES,
          additionalProperties: false,
          description: `at most ${MAX_ENV_ENTRIES} NAME: "value" strings, names of letters, digits and _, not starting with a digit`,
        }),
      ),
    ),
  },
  { $id: 'SubmitTaskBody' },
)

export const SubmitTaskResponseSchema = Type.Object(
  {
    task_id: Type.String(),
    status: Type.Literal('queued', { description: 'what the submission did; `task` is its state now, which the scheduler may already have moved on' }),
    durable: Type.Boolean({ description: 'false (HTTP 202): kept in memory only while the store is down' }),
    message: Type.String(),
    task: TaskViewSchema,
  },
  { $id: 'SubmitTaskResponse', additionalProperties: false },
)

export const CancelTaskResponseSchema = Type.Object({ message: Type.String(), task: TaskViewSchema }, { $id: 'CancelTaskResponse', additionalProperties: false })

// --- GET /api/tasks/{id}/logs ----------------------------------------------------------------------

/**
 * One event of a task's output, the `data:` of a Server-Sent Event or one NDJSON line: a line,
 * a gap (lines no longer kept), or the end (the task's final status and exit code; for a reader
 * that does not follow, `complete: false` and its status now).
 */
export const LogEventSchema = Type.Union(
  [
    Type.Object({ type: Type.Literal('line'), seq: Type.Integer({ minimum: 1 }), stream: Type.String({ description: 'stdout or stderr' }), timestamp: Type.String(), text: Type.String() }, { additionalProperties: false }),
    Type.Object({ type: Type.Literal('gap'), seq: Type.Integer(), missed: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
    Type.Object({ type: Type.Literal('end'), seq: Type.Integer(), complete: Type.Boolean(), status: Type.String(), exit_code: Nullable(Type.Integer()) }, { additionalProperties: false }),
  ],
  { $id: 'LogEvent' },
)

export type TaskViewT = Static<typeof TaskViewSchema>
export type TaskListT = Static<typeof TaskListSchema>
export type LogEventT = Static<typeof LogEventSchema>
