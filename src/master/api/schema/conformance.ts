import type { Static } from '@sinclair/typebox'
import type { TokenIssued } from '../../control.js'
import type { HealthReport } from '../../health.js'
import type { LiveMessage, LiveSnapshot, LiveTopic } from '../../live.js'
import type { LogEvent } from '../../task-log-feeds.js'
import type { HealthReportT } from './status.js'
import type { LogEventT } from './tasks.js'
import type { WsClientMessageSchema, WsEventT, WsSnapshotT } from './ws.js'
import type { TokenIssuedResponseSchema } from './workers.js'

// Compile-time checks of the types that live beside their producers (health.ts, live.ts,
// task-log-feeds.ts, control.ts) against the schemas the document shows: what the code builds must
// fit what the document promises. Each line fails `tsc` when the two drift apart. (The views of
// views.ts need none: their types are their schemas'.)

type Assert<T extends true> = T
type Fits<A, B> = [A] extends [B] ? true : false

export type SchemaConformance = [
  Assert<Fits<HealthReport, HealthReportT>>,
  Assert<Fits<LiveMessage, WsEventT>>,
  Assert<Fits<LiveSnapshot, WsSnapshotT>>,
  Assert<Fits<LogEvent, LogEventT>>,
  Assert<Fits<TokenIssued & { message: string }, Static<typeof TokenIssuedResponseSchema>>>,
  Assert<Fits<LiveTopic, Static<typeof WsClientMessageSchema>['topics'][number]>>,
]
