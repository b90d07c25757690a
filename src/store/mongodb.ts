import { createRequire } from 'node:module'
import type {
  AnyBulkWriteOperation,
  ClientSession,
  Collection,
  Db,
  Document,
  Long,
  MongoClient,
} from 'mongodb'
import type { StoreConfig } from '../config.js'
import { CloudaiError } from '../shared/errors.js'
import type { RunningTaskInfo, TaskRecord, WorkerRecord } from '../shared/types.js'
import { readStoredCredential, type StoredCredential } from '../shared/worker-credential.js'
import { readWorkerScheduling, withScheduling, type WorkerScheduling } from '../shared/worker-scheduling.js'
import { checkLeaseRequest, staleEpochError, type Lease, type LeaseRequest } from './lease.js'
import { redactMongoUri } from './mongo-uri.js'
import { FINAL_TASK_STATUSES, taskVersion, type Store, type WorkerChanges } from './store.js'

// The driver is loaded at its first use, not with this module: every master imports this file
// (the store is chosen at run time), and loading the driver cost each master ~75 ms of CPU at start
// and a 17 MiB serialization buffer, for a store most masters do not use.
const requireDriver = createRequire(import.meta.url)
let driver: typeof import('mongodb') | null = null
function mongo(): typeof import('mongodb') {
  return (driver ??= requireDriver('mongodb') as typeof import('mongodb'))
}

export type MongoStoreConfig = Omit<Extract<StoreConfig, { kind: 'mongodb' }>, 'kind'> & {
  kind?: 'mongodb'
  /** Shown in the server's logs and currentOp, so a DBA can tell which master a connection is. */
  appName?: string
}

/** CloudAI's collection names: its tools and dashboards read these. */
export const WORKERS_COLLECTION = 'WORKER_REGISTRY'
export const TASKS_COLLECTION = 'TASKS'
/** Ours (CloudAI has no such thing): the one lease document of the masters that share this database. */
export const LEASE_COLLECTION = 'CLOUDAI_LEASE'
/** The _id of that document. */
export const LEASE_ID = 'leader'

/**
 * The lease document. expires_at is a Date on the server's clock ($$NOW): no master's clock is
 * ever compared with another's. fenced_writes counts the fenced transactions, whose first step
 * changes this document (see fencedWrite).
 */
export interface LeaseDoc {
  _id: string
  holder: string
  epoch: number
  expires_at: Date
  api: string | null
  grpc: string | null
  fenced_writes?: number
}

/**
 * A WORKER_REGISTRY document. CloudAI's own fields keep its names and types (timestamps in Unix
 * seconds, int64), so its tools read our documents and we read its; ours are added beside them,
 * with millisecond copies because a WorkerRecord must round-trip exactly.
 */
export interface WorkerDoc {
  worker_id: string
  worker_ip: string
  is_active: boolean
  total_cpu: number | null
  total_memory: number | null
  total_storage: number | null
  total_gpu: number | null
  last_heartbeat: Long | number | null
  registered_at: Long | number
  updated_at: Long | number
  cpu_usage: number | null
  memory_usage: number | null
  storage_usage: number | null
  gpu_usage: number | null
  running_tasks: RunningTaskDoc[]
  reported_address: string | null
  registered_at_ms: Long | number
  last_heartbeat_ms: Long | number | null
  connected_at_ms: Long | number | null
  disconnected_at_ms: Long | number | null
  reconnects: number
  /** What the master keeps of the worker's token: a nonce and a hash, never the token. */
  credential: CredentialDoc | null
  /** Cordon and drain (ours; absent in CloudAI's documents): times in epoch ms. */
  scheduling?: SchedulingDoc | null
}

interface SchedulingDoc {
  cordoned_at_ms: Long | number
  drain: { started_at_ms: Long | number; deadline_ms: Long | number | null; force: boolean; drained_at_ms: Long | number | null } | null
}

interface CredentialDoc {
  nonce: string
  hash: string
  issued_at_ms: Long | number
  presented_at_ms: Long | number | null
  enforced: boolean
  previous: { nonce: string; hash: string; expires_at_ms: Long | number } | null
}

interface RunningTaskDoc {
  task_id: string
  cpu: number
  memory: number
  gpu: number
  status: string
  attempt: number
}

/**
 * A TASKS document: the task whole under `task`, and beside it what the indexes and the version
 * filter need. `_id` is the task id, which is what turns a stale conditional upsert into a
 * duplicate-key error instead of a second document.
 */
export interface TaskDoc {
  _id: string
  version: number
  status: string
  worker_id: string | null
  submitted_at: Long | number
  submitted_at_ms: Long | number
  updated_at_ms: Long | number
  task: TaskRecord
}

const DUPLICATE_KEY = 11000
/** IllegalOperation: among others, a transaction on a standalone server. */
const ILLEGAL_OPERATION = 20
/** Server errors that retrying will not cure: bad credentials, missing privileges, index conflicts, a bad name. */
const PERMANENT_SERVER_CODES = new Set([
  13, // Unauthorized
  18, // AuthenticationFailed
  11, // UserNotFound
  67, // CannotCreateIndex
  73, // InvalidNamespace
  85, // IndexOptionsConflict
  86, // IndexKeySpecsConflict
  DUPLICATE_KEY, // a unique index over CloudAI data that already holds duplicates
  8000, // AtlasError: Atlas reports bad credentials with it
])

/**
 * MongoDB, for a master that shares CloudAI's database. Each call is one round trip: a batch of
 * worker changes is one unordered bulkWrite, and so is a batch of task states. Unordered, because
 * the documents of one batch are independent and the server may then apply them in parallel; the
 * ops are de-duplicated first, so the order the server picks cannot change the outcome.
 */
export class MongoStore implements Store {
  readonly kind = 'mongodb'
  readonly location: string
  private client: MongoClient | null = null
  private db: Db | null = null
  private workers: Collection<WorkerDoc> | null = null
  private tasks: Collection<TaskDoc> | null = null
  private lease: Collection<LeaseDoc> | null = null
  private opening: Promise<void> | null = null
  private fenceEpoch: number | null = null
  /** The last fenced transaction queued (fencedWrite runs them one after another). */
  private fencedTail: Promise<unknown> = Promise.resolve()

  constructor(private readonly config: MongoStoreConfig) {
    this.location = `${redactMongoUri(config.uri)} (database ${config.database})`
  }

  async open(): Promise<void> {
    if (this.db) return
    // Two callers (start-up and the journal's reconnect) share one attempt instead of racing two clients.
    this.opening ??= this.connect().finally(() => {
      this.opening = null
    })
    return this.opening
  }

  private async connect(): Promise<void> {
    let client: MongoClient | null = null
    try {
      const c = this.config
      client = new (mongo().MongoClient)(c.uri, {
        serverSelectionTimeoutMS: c.serverSelectionTimeoutMs,
        connectTimeoutMS: c.connectTimeoutMs,
        socketTimeoutMS: c.socketTimeoutMs,
        maxPoolSize: c.maxPoolSize,
        retryWrites: true,
        appName: c.appName ?? 'cloudai',
      })
      await client.connect()
      const db = client.db(c.database)
      const workers = db.collection<WorkerDoc>(WORKERS_COLLECTION)
      const tasks = db.collection<TaskDoc>(TASKS_COLLECTION)
      // Idempotent on the server: an index that exists with the same spec is left as it is.
      await workers.createIndexes([{ key: { worker_id: 1 }, name: 'worker_id_unique', unique: true }])
      await tasks.createIndexes([
        // The queue: queued tasks oldest first, and the task list filtered by status.
        { key: { status: 1, submitted_at_ms: 1 }, name: 'status_submitted' },
        // Tasks of a worker, when it dies or unregisters.
        { key: { worker_id: 1 }, name: 'worker_id' },
        // Retention: finished tasks by the time of their last change (deleteFinishedBefore).
        { key: { status: 1, updated_at_ms: 1 }, name: 'status_updated' },
      ])
      this.client = client
      this.db = db
      this.workers = workers
      this.tasks = tasks
      // Every lease call, and the lease step of a fenced write, is majority-written and read from
      // the primary: an answer a failover could roll back, or a secondary's stale copy, could
      // otherwise let two masters each believe they lead.
      this.lease = db.collection<LeaseDoc>(LEASE_COLLECTION, { writeConcern: { w: 'majority' }, readConcern: { level: 'majority' }, readPreference: 'primary' })
    } catch (err) {
      // A failed client still holds monitors and sockets; the next open() makes a new one.
      await client?.close(true).catch(() => {})
      throw storeError(err, `cannot open the MongoDB store at ${this.location}`)
    }
  }

  async close(): Promise<void> {
    await this.opening?.catch(() => {})
    const client = this.client
    this.client = null
    this.db = null
    this.workers = null
    this.tasks = null
    this.lease = null
    await client?.close()
  }

  async ping(): Promise<void> {
    try {
      // Sent to the primary (the default read preference): an answer means writes can go through.
      await this.requireDb().command({ ping: 1 })
    } catch (err) {
      throw storeError(err, 'MongoDB did not answer a ping')
    }
  }

  async loadWorkers(): Promise<WorkerRecord[]> {
    const coll = this.require(this.workers)
    try {
      const docs = await coll.find({}).sort({ registered_at_ms: 1, registered_at: 1, worker_id: 1 }).toArray()
      return docs.flatMap((d) => {
        const w = fromWorkerDoc(d)
        return w ? [w] : []
      })
    } catch (err) {
      throw storeError(err, 'cannot load workers from MongoDB')
    }
  }

  async writeWorkers(changes: WorkerChanges): Promise<void> {
    const coll = this.require(this.workers)
    const ops = workerOps(changes, Date.now())
    if (ops.length === 0) return
    try {
      await this.fencedWrite((session) => coll.bulkWrite(ops, { ordered: false, session }))
    } catch (err) {
      throw storeError(err, `cannot write ${ops.length} worker change(s) to MongoDB`)
    }
  }

  async loadTasks(): Promise<TaskRecord[]> {
    const coll = this.require(this.tasks)
    try {
      const docs = await coll.find({}).sort({ submitted_at_ms: 1, _id: 1 }).toArray()
      return docs.flatMap((d) => (isTaskRecord(d.task) ? [d.task] : []))
    } catch (err) {
      throw storeError(err, 'cannot load tasks from MongoDB')
    }
  }

  async writeTasks(tasks: TaskRecord[]): Promise<void> {
    const coll = this.require(this.tasks)
    if (this.fenceEpoch !== null) {
      const ops = fencedTaskOps(tasks)
      if (ops.length === 0) return
      try {
        await this.fencedWrite((session) => coll.bulkWrite(ops, { ordered: false, session }))
      } catch (err) {
        throw storeError(err, `cannot write ${ops.length} task state(s) to MongoDB`)
      }
      return
    }
    const ops = taskOps(tasks)
    if (ops.length === 0) return
    try {
      await coll.bulkWrite(ops, { ordered: false })
    } catch (err) {
      if (onlyStaleWrites(err)) return
      throw storeError(err, `cannot write ${ops.length} task state(s) to MongoDB`)
    }
  }

  async deleteTasks(ids: readonly string[]): Promise<void> {
    const coll = this.require(this.tasks)
    try {
      // In slices: a start-up prune can name hundreds of thousands, past a command's 16 MiB.
      // Fenced, each slice is a transaction of its own behind the lease step.
      for (let i = 0; i < ids.length; i += DELETE_SLICE) {
        const slice = ids.slice(i, i + DELETE_SLICE)
        await this.fencedWrite((session) => coll.deleteMany({ _id: { $in: slice } }, { session }))
      }
    } catch (err) {
      throw storeError(err, `cannot delete ${ids.length} task(s) from MongoDB`)
    }
  }

  async deleteFinishedBefore(before: number): Promise<number> {
    const coll = this.require(this.tasks)
    const filter = { status: { $in: [...FINAL_TASK_STATUSES] }, updated_at_ms: { $lt: int64(before) } }
    try {
      if (this.fenceEpoch === null) return (await coll.deleteMany(filter)).deletedCount
      // Fenced: the ids first, then a transaction per slice, so no transaction outgrows its limits.
      const ids = (await coll.find(filter, { projection: { _id: 1 } }).toArray()).map((d) => d._id)
      let removed = 0
      // An empty store is still a write: a deposed master is told so.
      if (ids.length === 0) await this.fencedWrite(async () => 0)
      for (let i = 0; i < ids.length; i += DELETE_SLICE) {
        const slice = ids.slice(i, i + DELETE_SLICE)
        removed += (await this.fencedWrite((session) => coll.deleteMany({ ...filter, _id: { $in: slice } }, { session }))).deletedCount
      }
      return removed
    } catch (err) {
      throw storeError(err, 'cannot delete finished tasks from MongoDB')
    }
  }

  async deleteFinishedBeyond(keep: number): Promise<number> {
    const coll = this.require(this.tasks)
    let removed = 0
    try {
      // Newest first along the status_updated index (merged across the three statuses, no
      // in-memory sort); only the _id of each task past the newest `keep` crosses the wire, and
      // they are deleted a slice at a time as the cursor goes (the cursor's skip is applied once,
      // and only tasks it has already passed are deleted).
      const cursor = coll
        .find({ status: { $in: [...FINAL_TASK_STATUSES] } }, { projection: { _id: 1 } })
        .sort({ updated_at_ms: -1 })
        .skip(Math.max(0, Math.floor(keep)))
        .batchSize(DELETE_SLICE)
      const remove = async (ids: string[]): Promise<number> => (await this.fencedWrite((session) => coll.deleteMany({ _id: { $in: ids } }, { session }))).deletedCount
      try {
        let slice: string[] = []
        for await (const doc of cursor) {
          slice.push(doc._id)
          if (slice.length < DELETE_SLICE) continue
          removed += await remove(slice)
          slice = []
        }
        if (slice.length > 0) removed += await remove(slice)
        // Nothing to remove is still a write: a deposed master is told so, as by the other stores.
        else if (removed === 0 && this.fenceEpoch !== null) await this.fencedWrite(async () => 0)
      } finally {
        await cursor.close()
      }
      return removed
    } catch (err) {
      throw storeError(err, `cannot delete the finished tasks past the newest ${keep} from MongoDB`)
    }
  }

  /**
   * One findOneAndUpdate of the lease document, whose update pipeline decides on the server, with
   * the server's clock ($$NOW), whether the lease is taken (none, lapsed, or already the caller's)
   * and sets every field from that one decision: two masters asking at once are serialized on the
   * document, and the later one sees the earlier one's lease. See acquireOutcome (lease.ts) for the
   * rules the other stores apply in code.
   */
  async acquireLease(req: LeaseRequest): Promise<{ acquired: boolean; lease: Lease }> {
    checkLeaseRequest(req)
    const coll = this.require(this.lease)
    const mine = { $eq: ['$holder', { $literal: req.holder }] }
    const take = { $or: [{ $eq: [{ $type: '$holder' }, 'missing'] }, mine, { $lte: ['$expires_at', '$$NOW'] }] }
    const pick = (taken: unknown, kept: unknown): Document => ({ $cond: [take, taken, kept] })
    const update = [
      {
        $set: {
          // Within one $set every expression reads the document as it was: take is decided once.
          epoch: pick({ $cond: [mine, '$epoch', { $add: [{ $ifNull: ['$epoch', 0] }, 1] }] }, '$epoch'),
          holder: pick({ $literal: req.holder }, '$holder'),
          expires_at: pick({ $add: ['$$NOW', req.ttlMs] }, '$expires_at'),
          api: pick({ $literal: req.api }, '$api'),
          grpc: pick({ $literal: req.grpc }, '$grpc'),
        },
      },
    ]
    try {
      let doc: LeaseDoc | null
      try {
        doc = await coll.findOneAndUpdate({ _id: LEASE_ID }, update, { upsert: true, returnDocument: 'after' })
      } catch (err) {
        // Two first acquires both upserting: one inserted, the other's insert hit its _id. Once
        // more, it now finds the document and is decided against it.
        if (!(err instanceof mongo().MongoServerError && err.code === DUPLICATE_KEY)) throw err
        doc = await coll.findOneAndUpdate({ _id: LEASE_ID }, update, { upsert: true, returnDocument: 'after' })
      }
      const lease = doc ? fromLeaseDoc(doc) : null
      if (!lease) throw new CloudaiError('CLOUDAI_STORE_FAILED', `the lease document in ${LEASE_COLLECTION} is damaged: ${JSON.stringify(doc)}`)
      return { acquired: lease.holder === req.holder, lease }
    } catch (err) {
      throw storeError(err, 'cannot acquire the lease in MongoDB')
    }
  }

  async renewLease(req: { holder: string; epoch: number; ttlMs: number }): Promise<boolean> {
    checkLeaseRequest(req)
    const coll = this.require(this.lease)
    try {
      const res = await coll.updateOne({ _id: LEASE_ID, holder: req.holder, epoch: req.epoch }, [{ $set: { expires_at: { $add: ['$$NOW', req.ttlMs] } } }])
      return res.matchedCount === 1
    } catch (err) {
      throw storeError(err, 'cannot renew the lease in MongoDB')
    }
  }

  async releaseLease(req: { holder: string; epoch: number }): Promise<void> {
    checkLeaseRequest(req)
    const coll = this.require(this.lease)
    try {
      await coll.updateOne({ _id: LEASE_ID, holder: req.holder, epoch: req.epoch }, [{ $set: { expires_at: '$$NOW' } }])
    } catch (err) {
      throw storeError(err, 'cannot release the lease in MongoDB')
    }
  }

  async readLease(): Promise<Lease | null> {
    const coll = this.require(this.lease)
    try {
      const doc = await coll.findOne({ _id: LEASE_ID })
      return doc ? fromLeaseDoc(doc) : null
    } catch (err) {
      throw storeError(err, 'cannot read the lease from MongoDB')
    }
  }

  fence(epoch: number | null): void {
    if (epoch !== null) checkLeaseRequest({ holder: '-', epoch })
    this.fenceEpoch = epoch
  }

  /**
   * `write` as it is when unfenced; fenced, in a transaction whose first step is a conditional
   * update of the lease document on the fenced epoch. That step changes the document (a counter),
   * so a concurrent change of holder is a write conflict on it: the transaction either commits
   * before the new holder's acquire lands, or is retried by withTransaction and then finds the new
   * epoch and throws CLOUDAI_STALE_EPOCH, aborting with nothing written. Transactions need a
   * replica set (or a sharded cluster): a standalone server refuses them, said as much.
   */
  private fencedWrite<T>(write: (session: ClientSession | undefined) => Promise<T>): Promise<T> {
    const fence = this.fenceEpoch
    if (fence === null) return write(undefined)
    // One fenced transaction at a time: each one changes the lease document, so two of this
    // master's own (the journal's flush beside a direct task write) would conflict with each other
    // and be retried with backoff, for as long as the churn lasts.
    const run = this.fencedTail.then(() => this.fencedTransaction(fence, write))
    this.fencedTail = run.catch(() => undefined)
    return run
  }

  private async fencedTransaction<T>(fence: number, write: (session: ClientSession | undefined) => Promise<T>): Promise<T> {
    const client = this.require(this.client)
    const lease = this.require(this.lease)
    const session = client.startSession()
    try {
      return await session.withTransaction(
        async (s) => {
          const step = await lease.updateOne({ _id: LEASE_ID, epoch: fence }, { $inc: { fenced_writes: 1 } }, { session: s })
          if (step.matchedCount === 0) {
            const stored = await lease.findOne({ _id: LEASE_ID }, { session: s })
            throw staleEpochError(fence, stored ? num(stored.epoch) : null)
          }
          return write(s)
        },
        { readPreference: 'primary', readConcern: { level: 'snapshot' }, writeConcern: { w: 'majority' } },
      )
    } catch (err) {
      if (err instanceof mongo().MongoServerError && err.code === ILLEGAL_OPERATION && /replica set|transaction/i.test(err.message)) {
        const e = new CloudaiError('CLOUDAI_STORE_FAILED', `a fenced write needs a MongoDB replica set (transactions), and this server refuses them: ${err.message}`, { driverCode: err.code })
        ;(e as Error).cause = err
        throw e
      }
      throw err
    } finally {
      await session.endSession()
    }
  }

  private requireDb(): Db {
    return this.require(this.db)
  }

  private require<T>(handle: T | null): T {
    if (handle === null) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the MongoDB store is not open')
    return handle
  }
}

/** Task ids per deleteMany: 10,000 ids of about 45 bytes stay far below a command's 16 MiB. */
const DELETE_SLICE = 10_000

// --- documents ---------------------------------------------------------------------------------

/**
 * One op per worker: the batch is unordered, so a worker upserted twice, or upserted and deleted,
 * is reduced here to what the other stores end with (the last upsert; a delete wins).
 */
export function workerOps(changes: WorkerChanges, now: number): AnyBulkWriteOperation<WorkerDoc>[] {
  const deletes = new Set(changes.deletes)
  const upserts = new Map<string, WorkerRecord>()
  for (const w of changes.upserts) if (!deletes.has(w.id)) upserts.set(w.id, w)
  return [
    // $set rather than a replacement: fields CloudAI keeps and we do not (allocated_cpu, ...) survive.
    ...[...upserts.values()].map((w): AnyBulkWriteOperation<WorkerDoc> => ({ updateOne: { filter: { worker_id: w.id }, update: { $set: toWorkerDoc(w, now) }, upsert: true } })),
    ...[...deletes].map((id): AnyBulkWriteOperation<WorkerDoc> => ({ deleteOne: { filter: { worker_id: id } } })),
  ]
}

/**
 * One conditional upsert per task, of its highest version in the batch (the first of equals, as
 * the other stores keep). The filter matches only an older stored copy; against a newer or equal
 * one it matches nothing, the upsert then inserts with the same _id, and the server refuses it
 * with a duplicate key: that error is how a stale write is ignored, atomically, in one round trip.
 */
export function taskOps(tasks: readonly TaskRecord[]): AnyBulkWriteOperation<TaskDoc>[] {
  const latest = new Map<string, TaskRecord>()
  for (const t of tasks) {
    const held = latest.get(t.id)
    if (!held || taskVersion(t) > taskVersion(held)) latest.set(t.id, t)
  }
  return [...latest.values()].map((t) => {
    const { _id, ...replacement } = toTaskDoc(t)
    return { replaceOne: { filter: { _id, version: { $lt: taskVersion(t) } }, replacement, upsert: true } }
  })
}

/**
 * taskOps for a fenced write, which runs in a transaction: there a duplicate key would abort the
 * whole transaction, so the version rule is decided by an update pipeline instead. The stored
 * document is replaced only when its version is below the write's (a missing one, the upsert's
 * bare {_id}, counts as below); otherwise it is kept as it is ($$ROOT). The new document goes in
 * as a $literal, so that text in it that starts with `$` is never read as a field path.
 */
export function fencedTaskOps(tasks: readonly TaskRecord[]): AnyBulkWriteOperation<TaskDoc>[] {
  const latest = new Map<string, TaskRecord>()
  for (const t of tasks) {
    const held = latest.get(t.id)
    if (!held || taskVersion(t) > taskVersion(held)) latest.set(t.id, t)
  }
  return [...latest.values()].map((t) => {
    const doc = toTaskDoc(t)
    const newer = { $lt: [{ $ifNull: ['$version', -1] }, doc.version] }
    return { updateOne: { filter: { _id: doc._id }, update: [{ $replaceWith: { $cond: [newer, { $literal: doc }, '$$ROOT'] } }], upsert: true } }
  })
}

/** A lease document as read; null when a field is missing or of the wrong type (damaged by hand). */
export function fromLeaseDoc(d: Document): Lease | null {
  const epoch = num(d.epoch)
  const expiresAt = time(d.expires_at, 1)
  if (typeof d.holder !== 'string' || epoch === null || expiresAt === null) return null
  return { holder: d.holder, epoch, expiresAt, api: typeof d.api === 'string' ? d.api : null, grpc: typeof d.grpc === 'string' ? d.grpc : null }
}

/** True when every failure of a bulkWrite is a duplicate key, that is a stale task write, and the write concern held. */
export function onlyStaleWrites(err: unknown): boolean {
  if (!(err instanceof mongo().MongoBulkWriteError)) return false
  if (err.err !== undefined || err.result?.getWriteConcernError() !== undefined) return false
  const writeErrors = Array.isArray(err.writeErrors) ? err.writeErrors : [err.writeErrors]
  return writeErrors.length > 0 && writeErrors.every((e) => e.code === DUPLICATE_KEY)
}

export function toWorkerDoc(w: WorkerRecord, now: number): WorkerDoc {
  return {
    worker_id: w.id,
    worker_ip: w.address,
    is_active: w.isActive,
    total_cpu: w.specs?.cpu ?? null,
    total_memory: w.specs?.memory ?? null,
    total_storage: w.specs?.storage ?? null,
    total_gpu: w.specs?.gpu ?? null,
    last_heartbeat: w.lastHeartbeat === null ? null : seconds(w.lastHeartbeat),
    registered_at: seconds(w.registeredAt),
    updated_at: seconds(now),
    cpu_usage: w.usage?.cpu ?? null,
    memory_usage: w.usage?.memory ?? null,
    storage_usage: w.usage?.storage ?? null,
    gpu_usage: w.usage?.gpu ?? null,
    running_tasks: w.runningTasks.map((r) => ({ task_id: r.taskId, cpu: r.cpu, memory: r.memory, gpu: r.gpu, status: r.status, attempt: r.attempt })),
    reported_address: w.reportedAddress,
    registered_at_ms: int64(w.registeredAt),
    last_heartbeat_ms: nullableInt64(w.lastHeartbeat),
    connected_at_ms: nullableInt64(w.connectedAt),
    disconnected_at_ms: nullableInt64(w.disconnectedAt),
    reconnects: w.reconnects,
    credential: toCredentialDoc(w.credential),
    scheduling: toSchedulingDoc(w.scheduling ?? null),
  }
}

function toSchedulingDoc(s: WorkerScheduling | null): SchedulingDoc | null {
  if (s === null) return null
  const d = s.drain
  return {
    cordoned_at_ms: int64(s.cordonedAt),
    drain: d ? { started_at_ms: int64(d.startedAt), deadline_ms: nullableInt64(d.deadline), force: d.force, drained_at_ms: nullableInt64(d.drainedAt) } : null,
  }
}

/** Checked field by field, as the credential: a damaged one reads as none. */
function fromSchedulingDoc(v: unknown): WorkerScheduling | null {
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  const d = o.drain as Record<string, unknown> | null | undefined
  return readWorkerScheduling({
    cordonedAt: time(o.cordoned_at_ms, 1),
    drain: d && typeof d === 'object' ? { startedAt: time(d.started_at_ms, 1), deadline: time(d.deadline_ms, 1), force: d.force, drainedAt: time(d.drained_at_ms, 1) } : null,
  })
}

function toCredentialDoc(c: StoredCredential | null): CredentialDoc | null {
  if (c === null) return null
  return {
    nonce: c.nonce,
    hash: c.hash,
    issued_at_ms: int64(c.issuedAt),
    presented_at_ms: nullableInt64(c.presentedAt),
    enforced: c.enforced,
    previous: c.previous ? { nonce: c.previous.nonce, hash: c.previous.hash, expires_at_ms: int64(c.previous.expiresAt) } : null,
  }
}

/** Ours, checked field by field (CloudAI's documents have none): a damaged one costs the credential, not the worker. */
function fromCredentialDoc(v: unknown): StoredCredential | null {
  if (typeof v !== 'object' || v === null) return null
  const d = v as Record<string, unknown>
  const p = d.previous as Record<string, unknown> | null | undefined
  return readStoredCredential({
    nonce: d.nonce,
    hash: d.hash,
    issuedAt: time(d.issued_at_ms, 1),
    presentedAt: time(d.presented_at_ms, 1),
    enforced: d.enforced,
    previous: p && typeof p === 'object' ? { nonce: p.nonce, hash: p.hash, expiresAt: time(p.expires_at_ms, 1) } : null,
  })
}

/**
 * Reads our documents and CloudAI's alike: a CloudAI document has no `_ms` fields and may hold
 * its times as seconds, Dates or strings of digits. A document without a worker_id is skipped (it
 * names nobody); any other damaged field costs that field, not the worker.
 */
export function fromWorkerDoc(d: Document): WorkerRecord | null {
  if (typeof d.worker_id !== 'string' || d.worker_id === '') return null
  const ms = (msField: string, secondsField: string): number | null => time(d[msField], 1) ?? time(d[secondsField], 1000)
  const totalCpu = num(d.total_cpu)
  const cpuUsage = num(d.cpu_usage)
  return {
    id: d.worker_id,
    address: typeof d.worker_ip === 'string' ? d.worker_ip : '',
    isActive: d.is_active === true,
    specs: totalCpu === null ? null : { cpu: totalCpu, memory: num(d.total_memory) ?? 0, storage: num(d.total_storage) ?? 0, gpu: num(d.total_gpu) ?? 0 },
    usage: cpuUsage === null ? null : { cpu: cpuUsage, memory: num(d.memory_usage) ?? 0, storage: num(d.storage_usage) ?? 0, gpu: num(d.gpu_usage) ?? 0 },
    runningTasks: Array.isArray(d.running_tasks) ? d.running_tasks.flatMap(runningTask) : [],
    reportedAddress: typeof d.reported_address === 'string' ? d.reported_address : null,
    registeredAt: ms('registered_at_ms', 'registered_at') ?? 0,
    connectedAt: time(d.connected_at_ms, 1),
    lastHeartbeat: ms('last_heartbeat_ms', 'last_heartbeat'),
    disconnectedAt: time(d.disconnected_at_ms, 1),
    reconnects: num(d.reconnects) ?? 0,
    credential: fromCredentialDoc(d.credential),
    ...withScheduling(fromSchedulingDoc(d.scheduling)),
  }
}

function runningTask(r: unknown): RunningTaskInfo[] {
  if (typeof r !== 'object' || r === null) return []
  const o = r as Record<string, unknown>
  if (typeof o.task_id !== 'string') return []
  return [{ taskId: o.task_id, cpu: num(o.cpu) ?? 0, memory: num(o.memory) ?? 0, gpu: num(o.gpu) ?? 0, status: typeof o.status === 'string' ? o.status : '', attempt: num(o.attempt) ?? 0 }]
}

export function toTaskDoc(t: TaskRecord): TaskDoc {
  return {
    _id: t.id,
    version: taskVersion(t),
    status: t.status,
    worker_id: t.workerId,
    submitted_at: seconds(t.submittedAt),
    submitted_at_ms: int64(t.submittedAt),
    updated_at_ms: int64(t.updatedAt),
    task: t,
  }
}

function isTaskRecord(t: unknown): t is TaskRecord {
  if (typeof t !== 'object' || t === null) return false
  const o = t as Record<string, unknown>
  return typeof o.id === 'string' && typeof o.status === 'string' && Array.isArray(o.history)
}

/** Unix seconds as int64, CloudAI's convention for timestamps. */
function seconds(ms: number): Long | number {
  return int64(Math.floor(ms / 1000))
}

/** Whole numbers as int64 (a plain JS number would be stored as a double); anything else as it is, so it round-trips. */
function int64(n: number): Long | number {
  return Number.isSafeInteger(n) ? mongo().Long.fromNumber(n) : n
}

function nullableInt64(n: number | null): Long | number | null {
  return n === null ? null : int64(n)
}

function num(v: unknown): number | null {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null
  if (v instanceof mongo().Long) return v.toNumber()
  if (typeof v === 'bigint') return Number(v)
  return null
}

function time(v: unknown, scale: number): number | null {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.getTime()
  if (typeof v === 'string' && /^\d{1,15}$/.test(v)) return Number(v) * scale
  const n = num(v)
  return n === null ? null : n * scale
}

// --- errors --------------------------------------------------------------------------------------

/**
 * UNAVAILABLE for what may pass (no server selected, a dropped connection, a failover), so that the
 * master keeps going from memory and retries; FAILED for what will not (a URI or an option the
 * driver refuses, bad credentials, a missing privilege, an index that conflicts with CloudAI's).
 */
export function storeError(err: unknown, context: string): CloudaiError {
  if (err instanceof CloudaiError) return err
  const message = err instanceof Error ? err.message : String(err)
  const code = isPermanent(err) ? 'CLOUDAI_STORE_FAILED' : 'CLOUDAI_STORE_UNAVAILABLE'
  const details: Record<string, unknown> = { driverError: err instanceof Error ? err.name : typeof err }
  if (err instanceof mongo().MongoError && err.code !== undefined) details.driverCode = err.code
  const e = new CloudaiError(code, `${context}: ${message}`, details)
  ;(e as Error).cause = err
  return e
}

function isPermanent(err: unknown): boolean {
  if (err instanceof mongo().MongoServerSelectionError || err instanceof mongo().MongoNetworkError || err instanceof mongo().MongoTopologyClosedError || err instanceof mongo().MongoClientClosedError || err instanceof mongo().MongoNotConnectedError) {
    // Selection failing because every server refused our credentials is still an auth failure.
    return underlying(err).some((c) => c !== err && isPermanent(c))
  }
  // Bad URI, unknown or invalid option, missing credentials, a dependency not installed.
  if (err instanceof mongo().MongoParseError || err instanceof mongo().MongoAPIError) return true
  if (err instanceof mongo().MongoServerError) {
    if (err.hasErrorLabel('RetryableWriteError') || err.hasErrorLabel('TransientTransactionError')) return false
    return typeof err.code === 'number' && PERMANENT_SERVER_CODES.has(err.code)
  }
  return false
}

/** The error, its causes, and for a selection timeout what each server last failed with. */
function underlying(err: Error): unknown[] {
  const out: unknown[] = []
  let c: unknown = err
  for (let i = 0; i < 5 && c instanceof Error; i++) {
    out.push(c)
    c = c.cause
  }
  if (err instanceof mongo().MongoServerSelectionError) {
    const reason = err.reason
    if (reason?.error) out.push(reason.error)
    for (const server of reason?.servers.values() ?? []) if (server.error) out.push(server.error)
  }
  return out
}
