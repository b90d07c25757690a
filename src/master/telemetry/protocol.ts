// The telemetry seam: what the hub (main thread, hub.ts) and a telemetry thread (thread.ts) say
// to each other. Both sides import this module and nothing else of the other.
import type { LaneInit, LaneSummary } from './lane.js'

export interface TelemetryThreadData {
  index: number
  /**
   * Int32 doorbell [rings, sleeping]: the main thread adds 1 to `rings` after each write and
   * notifies only when `sleeping` is 1, since notifying takes a lock and is wasted on an awake thread.
   */
  bell: SharedArrayBuffer
  counters: SharedArrayBuffer
  summaryMs: number
}

export type ToTelemetryThread = { type: 'open'; lane: LaneInit } | { type: 'close'; workerId: string }
export type FromTelemetryThread = { type: 'summaries'; items: LaneSummary[] }
