import { setImmediate as nextTurn } from 'node:timers/promises'
import { type ListBody, listBodyText } from './list-body.js'
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
//
// The list goes out as one text per worker (the parts concatenated: V8 keeps such a text as a
// pointer to its parts, no copy) with the UTF-8 size of each part counted once when it is
// rendered, so the reply announces its content-length and writes the list in chunks
// (api/list-body.ts) without a text of the whole list ever being made.

interface Rendered {
  /** The parts concatenated (a rope of them, not a copy); null once one changed, until the next request. */
  json: string | null
  /** UTF-8 bytes of the parts, each counted when rendered: the worker's share of the content-length. */
  headBytes: number
  usageBytes: number
  tasksBytes: number
  midBytes: number
  tailBytes: number
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

const utf8 = (text: string): number => Buffer.byteLength(text, 'utf8')

function render(w: WorkerRecord): Rendered {
  const r: Rendered = {
    json: null,
    headBytes: 0, usageBytes: 0, tasksBytes: 0, midBytes: 0, tailBytes: 0,
    head: renderHead(w), isActive: w.isActive, address: w.address, specs: w.specs, suspect: w.suspect, scheduling: w.scheduling,
    usageJson: JSON.stringify(workerUsageView(w)), usage: w.usage,
    tasksJson: renderTasks(w), runningTasks: w.runningTasks,
    mid: renderMid(w), reportedAddress: w.reportedAddress, lastHeartbeat: w.lastHeartbeat,
    tail: renderTail(w), registeredAt: w.registeredAt, connectedAt: w.connectedAt, disconnectedAt: w.disconnectedAt, reconnects: w.reconnects, credential: w.credential,
  }
  r.headBytes = utf8(r.head)
  r.usageBytes = r.usageJson.length // numbers and keys: ASCII
  r.tasksBytes = utf8(r.tasksJson)
  r.midBytes = utf8(r.mid)
  r.tailBytes = utf8(r.tail)
  return r
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
    r.headBytes = utf8(r.head)
    r.isActive = w.isActive
    r.address = w.address
    r.specs = w.specs
    r.suspect = w.suspect
    r.scheduling = w.scheduling
    changed = true
  }
  if (r.usage !== w.usage) {
    r.usageJson = JSON.stringify(workerUsageView(w))
    r.usageBytes = r.usageJson.length
    r.usage = w.usage
    changed = true
  }
  if (r.runningTasks !== w.runningTasks) {
    r.tasksJson = renderTasks(w)
    r.tasksBytes = utf8(r.tasksJson)
    r.runningTasks = w.runningTasks
    changed = true
  }
  if (r.lastHeartbeat !== w.lastHeartbeat || r.reportedAddress !== w.reportedAddress) {
    r.mid = renderMid(w)
    r.midBytes = utf8(r.mid)
    r.lastHeartbeat = w.lastHeartbeat
    r.reportedAddress = w.reportedAddress
    changed = true
  }
  if (r.connectedAt !== w.connectedAt || r.disconnectedAt !== w.disconnectedAt || r.reconnects !== w.reconnects || r.credential !== w.credential || r.registeredAt !== w.registeredAt) {
    r.tail = renderTail(w)
    r.tailBytes = utf8(r.tail)
    r.connectedAt = w.connectedAt
    r.disconnectedAt = w.disconnectedAt
    r.reconnects = w.reconnects
    r.credential = w.credential
    r.registeredAt = w.registeredAt
    changed = true
  }
  if (changed) r.json = null
  return r
}

const RUNNING_TASKS_KEY = ',"running_tasks":'
const RUNNING_TASKS_KEY_BYTES = RUNNING_TASKS_KEY.length

/** The worker's text: its parts concatenated, kept until one of them changes. */
function text(r: Rendered): string {
  r.json ??= r.head + r.usageJson + RUNNING_TASKS_KEY + r.tasksJson + r.mid + r.tail
  return r.json
}

const bytes = (r: Rendered): number => r.headBytes + r.usageBytes + RUNNING_TASKS_KEY_BYTES + r.tasksBytes + r.midBytes + r.tailBytes

/** One worker's view as JSON. */
export function workerJson(w: WorkerRecord): string {
  return text(current(w))
}

const LIST_OPEN = '{"workers":['
const LIST_CLOSE = ']}'

/** A list body being put together, a worker at a time. */
class ListBuilder {
  private readonly items: string[] = []
  private total = LIST_OPEN.length + LIST_CLOSE.length

  add(w: WorkerRecord): void {
    const r = current(w)
    this.items.push(text(r))
    this.total += bytes(r)
  }

  body(): ListBody {
    const commas = this.items.length > 1 ? this.items.length - 1 : 0
    return { open: LIST_OPEN, items: this.items, close: LIST_CLOSE, bytes: this.total + commas }
  }
}

/**
 * The body of GET /api/workers, `{"workers":[…]}`, as one text per worker: the registry as it is
 * now, whatever changes while the reply is being written.
 */
export function workerListBody(workers: Iterable<WorkerRecord>): ListBody {
  const list = new ListBuilder()
  for (const w of workers) list.add(w)
  return list.body()
}

/**
 * What one turn of the walk may take before it lets other work run. Even with every view kept
 * rendered, the walk looks at each worker (5,000 identity checks and lengths), and every worker
 * that changed since the last request is rendered again: in a profile of a 5,000-worker dial storm
 * (500 workers just back), GET /api/workers was the work in the loop's longest turns, and the
 * storm's longest stall was 38 to 81 ms in a full bench run (median 60), over its 50 ms target.
 * In turns, the request waits for other work between them, and nothing waits for the request
 * longer than a turn.
 */
export const LIST_TURN_MS = 4
/** Workers walked between two looks at the clock. */
const CLOCK_EVERY = 64

/** What the walk asks of the registry as it goes. */
export interface ListWalk {
  /** False for a worker no longer registered as this record (unregistered, or registered again). */
  isCurrent(w: WorkerRecord): boolean
  /** False once nobody waits for the list (the client went away, the API is closing): the walk stops. */
  wanted(): boolean
}

/**
 * workerListBody over `workers` (the registry's records when the request came), walked a turn
 * (LIST_TURN_MS) at a time. The registry may change between turns: each worker's text is the worker
 * as it was when it was reached, one unregistered before it was reached is left out, and one
 * registered meanwhile is not in this list. Null when the walk stopped because it was not wanted.
 * @param turnMs what a turn may take (tests: 0, a turn per CLOCK_EVERY workers)
 */
export async function workerListBodyInTurns(workers: readonly WorkerRecord[], walk: ListWalk, turnMs = LIST_TURN_MS): Promise<ListBody | null> {
  const list = new ListBuilder()
  let turnStarted = performance.now()
  let sinceClock = 0
  for (const w of workers) {
    if (walk.isCurrent(w)) list.add(w)
    if (++sinceClock < CLOCK_EVERY) continue
    sinceClock = 0
    if (performance.now() - turnStarted < turnMs) continue
    await nextTurn()
    // What ends a request (its client gone, the API closing) happens between turns, not in one.
    if (!walk.wanted()) return null
    turnStarted = performance.now()
  }
  return list.body()
}

/** The same list as one text. */
export function workerListJson(workers: Iterable<WorkerRecord>): string {
  return listBodyText(workerListBody(workers))
}
