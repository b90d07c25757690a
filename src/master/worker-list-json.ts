import type { WorkerRecord } from '../shared/types.js'
import { toWorkerView } from './views.js'

// GET /api/workers is what operators poll, and it renders on the main thread: at 5,000 workers a
// fresh JSON.stringify of every view (ISO dates included) stalled the loop ~25 ms a request, in the
// middle of reconnection passes. Between two polls most records have not changed, so each keeps
// its rendered JSON until one of the fields it shows does.
//
// Change is seen by identity, not by a revision the registry would have to bump: the registry
// replaces `usage`, `runningTasks`, `specs`, `credential` and `suspect` with new objects and never edits them in place, and
// every other field shown is a primitive. The text is byte for byte what JSON.stringify of the
// views gives.

interface Rendered {
  json: string
  isActive: boolean
  address: string
  specs: WorkerRecord['specs']
  usage: WorkerRecord['usage']
  runningTasks: WorkerRecord['runningTasks']
  reportedAddress: string | null
  lastHeartbeat: number | null
  connectedAt: number | null
  disconnectedAt: number | null
  reconnects: number
  credential: WorkerRecord['credential']
  suspect: WorkerRecord['suspect']
}

const rendered = new WeakMap<WorkerRecord, Rendered>()

function current(r: Rendered, w: WorkerRecord): boolean {
  return r.isActive === w.isActive && r.lastHeartbeat === w.lastHeartbeat && r.usage === w.usage && r.runningTasks === w.runningTasks &&
    r.specs === w.specs && r.connectedAt === w.connectedAt && r.disconnectedAt === w.disconnectedAt && r.reconnects === w.reconnects &&
    r.reportedAddress === w.reportedAddress && r.address === w.address && r.credential === w.credential && r.suspect === w.suspect
}

/** One worker's view as JSON, rendered again only when something it shows changed. */
export function workerJson(w: WorkerRecord): string {
  const r = rendered.get(w)
  if (r !== undefined && current(r, w)) return r.json
  const json = JSON.stringify(toWorkerView(w))
  rendered.set(w, {
    json, isActive: w.isActive, address: w.address, specs: w.specs, usage: w.usage, runningTasks: w.runningTasks, reportedAddress: w.reportedAddress,
    lastHeartbeat: w.lastHeartbeat, connectedAt: w.connectedAt, disconnectedAt: w.disconnectedAt, reconnects: w.reconnects, credential: w.credential, suspect: w.suspect,
  })
  return json
}

/** The body of GET /api/workers: `{"workers":[…]}`. */
export function workerListJson(workers: Iterable<WorkerRecord>): string {
  const parts: string[] = []
  for (const w of workers) parts.push(workerJson(w))
  return `{"workers":[${parts.join(',')}]}`
}
