import { type Static, Type } from '@sinclair/typebox'
import { Nullable, Time } from './common.js'
import { TaskStatusSchema } from './tasks.js'

// The master's own state: GET /api/status and GET /healthz.

/** Issue 19's leadership fields, on /api/status and /healthz (optional until every master has them). */
const Leadership = {
  role: Type.Optional(Type.Union([Type.Literal('leader'), Type.Literal('standby')], { description: 'leader: this master acts; standby: it answers 503 CLOUDAI_NOT_LEADER to what would change anything' })),
  epoch: Type.Optional(Type.Integer({ minimum: 0, description: 'the lease epoch this master holds or last saw (0: none yet)' })),
  leader_api: Type.Optional(Nullable(Type.String({ description: "the leader's HTTP API address, when known" }))),
  leader_grpc: Type.Optional(Nullable(Type.String({ description: "the leader's gRPC address, when known" }))),
}

const taskCounts = Type.Object(
  { queued: Type.Integer(), assigned: Type.Integer(), running: Type.Integer(), completed: Type.Integer(), failed: Type.Integer(), cancelled: Type.Integer() },
  { additionalProperties: false },
)

export const ReconnectMonitorSchema = Type.Union([Type.Literal('running'), Type.Literal('disabled'), Type.Literal('stopped')], { $id: 'ReconnectMonitorState' })

export const ClusterStatusSchema = Type.Object(
  {
    workers: Type.Integer({ minimum: 0 }),
    active: Type.Integer({ minimum: 0 }),
    inactive: Type.Integer({ minimum: 0 }),
    reconnect_monitor: ReconnectMonitorSchema,
    tasks: taskCounts,
    store: Type.Object({ kind: Type.String(), healthy: Type.Boolean(), pending_writes: Type.Integer({ minimum: 0 }), last_error: Nullable(Type.String()) }, { additionalProperties: false }),
    grpc_address: Type.String(),
    worker_auth: Type.Optional(Type.Union([Type.Literal('token'), Type.Literal('none')], { description: '`none`: worker calls without a token are accepted from anywhere (--worker-auth none)' })),
    started_at: Time(),
    uptime_s: Type.Integer({ minimum: 0 }),
    ...Leadership,
  },
  { $id: 'ClusterStatus', additionalProperties: false },
)

export const HealthCheckSchema = Type.Union([Type.Literal('reconnect-monitor'), Type.Literal('reconnect-latency'), Type.Literal('inactive-workers'), Type.Literal('store')])

export const HealthReportSchema = Type.Object(
  {
    status: Type.Union([Type.Literal('healthy'), Type.Literal('degraded'), Type.Literal('unhealthy')], {
      description: '`degraded` (HTTP 200) when only the store is down: the master works from memory; `unhealthy` (503) for the other checks',
    }),
    reasons: Type.Array(
      Type.Object(
        {
          check: HealthCheckSchema,
          message: Type.String(),
          worker_ids: Type.Optional(Type.Array(Type.String())),
          count: Type.Optional(Type.Integer({ description: 'how many workers fail the check (worker_ids lists at most 100 of them)' })),
        },
        { additionalProperties: false },
      ),
    ),
    warnings: Type.Optional(Type.Array(Type.Object({ check: Type.Literal('worker-auth'), message: Type.String() }, { additionalProperties: false }), { description: 'configured weaknesses; they never change status' })),
    store: Type.Object(
      {
        kind: Type.String(),
        status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
        backlog: Type.Integer({ minimum: 0 }),
        degraded_since: Nullable(Time()),
        last_error: Nullable(Type.String()),
      },
      { additionalProperties: false },
    ),
    reconnect_monitor: ReconnectMonitorSchema,
    workers: Type.Object({ total: Type.Integer(), active: Type.Integer(), inactive: Type.Integer() }, { additionalProperties: false, description: '`inactive` leaves out drained workers that are stopped' }),
    thresholds: Type.Object({ max_inactive_ms: Type.Number(), reconnect_within_ms: Type.Number() }, { additionalProperties: false }),
    ...Leadership,
  },
  { $id: 'HealthReport', additionalProperties: false },
)

export type ClusterStatusT = Static<typeof ClusterStatusSchema>
export type HealthReportT = Static<typeof HealthReportSchema>
export { TaskStatusSchema }
