import type { WorkerRecord } from '../shared/types.js'
import { lastHeartbeatView, runningTasksView, workerHeadView, workerTailView, workerUsageView } from './views.js'

// GET /api/workers is what operators poll, and it renders on the main thread: at 5,000 workers a
// fresh JSON.stringify of every view (ISO dates included) stalled the loop ~25 ms a request, in the
// middle of reconnection passes. Each record keeps its view rendered, in parts: under heartbeats
// every active worker changes between two polls, but only in its usage, running tasks and last
// heartbeat, so the rest (identity, specs, suspicion, connection times, credential: the bulk of
// the text) is rendered again only when one of the fields it shows changes.
//
// Change is seen by identity, not by a revision the registry would have to bump: the registry
// replaces `usage`, `runningTasks`, `specs`, `credential`, `suspect` and `scheduling` with new objects and never
// edits them in place, and every other field shown is a primitive. The text is byte for byte what
// JSON.stringify of the views gives (views.ts renders the same parts, in the same key order).

interface Rendered {
  /**
   * The parts joined, once a request found none of them changed since the one before: a worker
   * that stays as it is costs a request one copy. Null while they change (heartbeats).
   */
  json: string | null
  // `{"worker_id":…,"total_gpu":…,"usage":`
  head: string
  isActive: boolean
  address: string
  specs: WorkerRecord['specs']
  suspect: WorkerRecord['suspect']
  scheduling: WorkerRecord['scheduling']
  usageJson: string
  usage: WorkerRecord['usage']
  tasksJson: string
  runningTasks: WorkerRecord['runningTasks']
  // `,"reported_address":…,"last_heartbeat":…`
  mid: string
  reportedAddress: string | null
  lastHeartbeat: number | null
  // `,"registered_at":…,"credential":…}`
  tail: string
  registeredAt: number
  connectedAt: number | null
  disconnectedAt: number | null
  reconnects: number
  credential: WorkerRecord['credential']
}

const rendered = new WeakMap<WorkerRecord, Rendered>()
const NO_TASKS_JSON = '[]'

const renderHead = (w: WorkerRecord): string => `${JSON.stringify(workerHeadView(w)).slice(0, -1)},"usage":`
const renderTasks = (w: WorkerRecord): string => (w.runningTasks.length === 0 ? NO_TASKS_JSON : JSON.stringify(runningTasksView(w)))
const renderMid = (w: WorkerRecord): string => `,"reported_address":${JSON.stringify(w.reportedAddress)},"last_heartbeat":${JSON.stringify(lastHeartbeatView(w))}`
const renderTail = (w: WorkerRecord): string => `,${JSON.stringify(workerTailView(w)).slice(1)}`

function render(w: WorkerRecord): Rendered {
  return {
    json: null,
    head: renderHead(w), isActive: w.isActive, address: w.address, specs: w.specs, suspect: w.suspect, scheduling: w.scheduling,
    usageJson: JSON.stringify(workerUsageView(w)), usage: w.usage,
    tasksJson: renderTasks(w), runningTasks: w.runningTasks,
    mid: renderMid(w), reportedAddress: w.reportedAddress, lastHeartbeat: w.lastHeartbeat,
    tail: renderTail(w), registeredAt: w.registeredAt, connectedAt: w.connectedAt, disconnectedAt: w.disconnectedAt, reconnects: w.reconnects, credential: w.credential,
  }
}

/** A worker's parts, each rendered again only when something it shows changed. */
function current(w: WorkerRecord): Rendered {
  let r = rendered.get(w)
  if (r === undefined) {
    r = render(w)
    rendered.set(w, r)
    return r
  }
  let changed = false
  if (r.isActive !== w.isActive || r.address !== w.address || r.specs !== w.specs || r.suspect !== w.suspect || r.scheduling !== w.scheduling) {
    r.head = renderHead(w)
    r.isActive = w.isActive
    r.address = w.address
    r.specs = w.specs
    r.suspect = w.suspect
    r.scheduling = w.scheduling
    changed = true
  }
  if (r.usage !== w.usage) {
    r.usageJson = JSON.stringify(workerUsageView(w))
    r.usage = w.usage
    changed = true
  }
  if (r.runningTasks !== w.runningTasks) {
    r.tasksJson = renderTasks(w)
    r.runningTasks = w.runningTasks
    changed = true
  }
  if (r.lastHeartbeat !== w.lastHeartbeat || r.reportedAddress !== w.reportedAddress) {
    r.mid = renderMid(w)
    r.lastHeartbeat = w.lastHeartbeat
    r.reportedAddress = w.reportedAddress
    changed = true
  }
  if (r.connectedAt !== w.connectedAt || r.disconnectedAt !== w.disconnectedAt || r.reconnects !== w.reconnects || r.credential !== w.credential || r.registeredAt !== w.registeredAt) {
    r.tail = renderTail(w)
    r.connectedAt = w.connectedAt
    r.disconnectedAt = w.disconnectedAt
    r.reconnects = w.reconnects
    r.credential = w.credential
    r.registeredAt = w.registeredAt
    changed = true
  }
  if (changed) r.json = null
  else r.json ??= joined(r)
  return r
}

const RUNNING_TASKS_KEY = ',"running_tasks":'

const joined = (r: Rendered): string => [r.head, r.usageJson, RUNNING_TASKS_KEY, r.tasksJson, r.mid, r.tail].join('')

/** One worker's view as JSON. */
export function workerJson(w: WorkerRecord): string {
  const r = current(w)
  return r.json ?? joined(r)
}

/**
 * The body of GET /api/workers: `{"workers":[…]}`. The parts of every worker go into one join (a
 * text per worker first would be one more copy of it all, or a concatenation tree to walk).
 */
export function workerListJson(workers: Iterable<WorkerRecord>): string {
  const parts: string[] = ['{"workers":[']
  let first = true
  for (const w of workers) {
    const r = current(w)
    if (!first) parts.push(',')
    first = false
    if (r.json !== null) parts.push(r.json)
    else parts.push(r.head, r.usageJson, RUNNING_TASKS_KEY, r.tasksJson, r.mid, r.tail)
  }
  parts.push(']}')
  return parts.join('')
}
