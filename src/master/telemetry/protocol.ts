// The telemetry seam: what the hub (main thread, hub.ts) and a telemetry thread (thread.ts) say
// to each other. Both sides import this module and nothing else of the other. Heartbeats do not
// travel as messages: they are written into lanes (lane.ts) in the slab's chunks (slab.ts), and the
// lanes with work are named in the thread's queue (queue.ts), all in shared memory.
import type { LaneLayout, LaneSummary } from './lane.js'

export interface TelemetryThreadData {
  index: number
  /** The thread's queue of lanes with work (queue.ts). */
  queue: SharedArrayBuffer
  /** The slab's chunks so far; later ones come as `chunk` messages. */
  chunks: SharedArrayBuffer[]
  layout: LaneLayout
  counters: SharedArrayBuffer
  /** At most one summary per wanted lane per this interval goes back to the main thread. */
  summaryMs: number
  /** The queue is drained this often (sooner when it is half full). */
  tickMs: number
}

export type ToTelemetryThread = { type: 'chunk'; index: number; buffer: SharedArrayBuffer }

/** A summary of lane `lane` as it was in its generation `gen` (the hub drops it if the lane was reopened since). */
export interface LaneReport {
  lane: number
  gen: number
  summary: LaneSummary
}

export type FromTelemetryThread = { type: 'summaries'; items: LaneReport[] }
