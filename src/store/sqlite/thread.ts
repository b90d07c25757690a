// The store thread (workers/sqlite-store.ts is its entry file): owns the better-sqlite3 connection,
// so that no SQLite call, fsync or busy wait ever runs on the master's main thread. It runs the
// calls one at a time in the order they came, and answers each only once it is done, so a write is
// acknowledged only once committed, as it was on the main thread.
import { parentPort, workerData } from 'node:worker_threads'
import { CloudaiError } from '../../shared/errors.js'
import { SqliteConnection } from './connection.js'
import type { TaskRecord, WorkerRecord } from '../../shared/types.js'
import type { StoreCalls, StoreOp, StoreRequest, StoreResponse, StoreStage, StoreThreadData, WireError } from './protocol.js'

const port = parentPort
if (!port) throw new Error('the SQLite store thread runs only as a worker thread')
const data = workerData as StoreThreadData
const connection = new SqliteConnection(data.dataDir, data.busyTimeoutMs)

type Handler = { [K in StoreOp]: (...args: StoreCalls[K]['args']) => Promise<StoreCalls[K]['result']> }
const handlers: Handler = {
  open: () => connection.open(),
  close: () => connection.close(),
  ping: () => connection.ping(),
  loadWorkers: () => connection.loadWorkers(),
  writeWorkers: (changes) => connection.writeWorkers(changes),
  loadTasks: () => connection.loadTasks(),
  writeTasks: (tasks) => connection.writeTasks(tasks),
  deleteTasks: (ids) => connection.deleteTasks(ids),
  deleteFinishedBefore: (before) => connection.deleteFinishedBefore(before),
  deleteFinishedBeyond: (keep) => connection.deleteFinishedBeyond(keep),
  acquireLease: (req) => connection.acquireLease(req),
  renewLease: (req) => connection.renewLease(req),
  releaseLease: (req) => connection.releaseLease(req),
  readLease: () => connection.readLease(),
  fence: async (epoch) => connection.fence(epoch),
}

function toWire(err: unknown): WireError {
  if (err instanceof CloudaiError) return { cloudai: true, name: err.name, code: err.code, message: err.message, details: err.details }
  const e = err instanceof Error ? err : new Error(String(err))
  const code = (e as { code?: unknown }).code
  return { cloudai: false, name: e.name, code: typeof code === 'string' ? code : undefined, message: e.message, details: undefined }
}

async function run(req: StoreRequest): Promise<StoreResponse> {
  try {
    const call = handlers[req.op] as (...args: unknown[]) => Promise<unknown>
    return { id: req.id, ok: true, value: await call(...req.args) }
  } catch (err) {
    return { id: req.id, ok: false, error: toWire(err) }
  }
}

/** The leading records of requests still to come, by request id (see StoreStage). */
const staged = new Map<number, (TaskRecord | WorkerRecord)[]>()

/** The request with its staged records put back in front of its own. */
function unstage(req: StoreRequest): StoreRequest {
  const before = staged.get(req.id)
  if (!before) return req
  staged.delete(req.id)
  if (req.op === 'writeTasks') {
    const [tasks] = req.args as StoreCalls['writeTasks']['args']
    return { ...req, args: [(before as TaskRecord[]).concat(tasks)] }
  }
  if (req.op === 'writeWorkers') {
    const [changes] = req.args as StoreCalls['writeWorkers']['args']
    return { ...req, args: [{ ...changes, upserts: (before as WorkerRecord[]).concat(changes.upserts) }] }
  }
  return req
}

// One call at a time: the connection's methods are synchronous underneath, and keeping the order
// keeps the journal's order (a batch written before the next one begins).
let tail: Promise<void> = Promise.resolve()
port.on('message', (msg: StoreRequest | StoreStage) => {
  if ('stage' in msg) {
    const list = staged.get(msg.id)
    if (list) for (const r of msg.stage) list.push(r)
    else staged.set(msg.id, msg.stage)
    return
  }
  const req = unstage(msg)
  tail = tail.then(async () => port.postMessage(await run(req)))
})
