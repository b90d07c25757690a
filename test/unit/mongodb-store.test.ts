import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { test } from 'node:test'
import {
  BSON,
  Long,
  MongoBulkWriteError,
  MongoNetworkError,
  MongoParseError,
  MongoServerError,
  MongoServerSelectionError,
  type WriteError,
} from 'mongodb'
import { MASTER_DEFAULTS, MONGO_STORE_DEFAULTS, type MasterConfig } from '../../src/config.js'
import { CloudaiError } from '../../src/shared/errors.js'
import type { TaskRecord, WorkerRecord } from '../../src/shared/types.js'
import { redactMongoUri } from '../../src/store/mongo-uri.js'
import { MongoStore, fencedTaskOps, fromLeaseDoc, fromWorkerDoc, onlyStaleWrites, storeError, taskOps, toTaskDoc, toWorkerDoc, workerOps } from '../../src/store/mongodb.js'
import { createStore } from '../../src/store/select.js'
import { SqliteStore } from '../../src/store/sqlite/store.js'

// What of the MongoDB store can be checked without a server: the documents it writes (through a
// real BSON round trip), the bulk operations it sends, how it sorts driver errors, and how open()
// fails, retries and cleans up when nothing answers. The contract suite covers the rest when
// MONGODB_URI is set.

const full: WorkerRecord = {
  id: 'w-full',
  address: '10.0.0.7:50052',
  isActive: true,
  specs: { cpu: 8, memory: 31.25, storage: 500.5, gpu: 2 },
  usage: { cpu: 12.5, memory: 40, storage: 60, gpu: 0 },
  runningTasks: [{ taskId: 'task-a', cpu: 1.5, memory: 2, gpu: 0, status: 'running', attempt: 2 }],
  reportedAddress: '192.168.0.9:50052',
  registeredAt: 1_700_000_000_123,
  connectedAt: 1_700_000_001_456,
  lastHeartbeat: 1_700_000_002_789,
  disconnectedAt: 1_700_000_000_500,
  reconnects: 3,
  credential: {
    nonce: 'bm9uY2Utb2YtdGhlLXRva2Vu', hash: 'a'.repeat(64), issuedAt: 1_700_000_000_200, presentedAt: null, enforced: true,
    previous: { nonce: 'b2xkLW5vbmNl', hash: 'b'.repeat(64), expiresAt: 1_700_003_600_200 },
  },
}
const bare: WorkerRecord = { ...full, id: 'w-bare', isActive: false, specs: null, usage: null, runningTasks: [], reportedAddress: null, connectedAt: null, lastHeartbeat: null, disconnectedAt: null, reconnects: 0, credential: null }

const task = (id: string, version: number, over: Partial<TaskRecord> = {}): TaskRecord => ({
  id, name: '', command: 'true', dockerImage: '', req: { cpu: 1, memory: 0, storage: 0, gpu: 0 }, targetWorkerId: null, userId: '', timeoutS: 0, maxAttempts: 1,
  env: { K: 'v' }, status: 'queued', workerId: null, attempts: 0, attempt: 0, submittedAt: 1_700_000_000_999, assignedAt: null, startedAt: null, finishedAt: null, exitCode: null,
  reason: null, logsTail: '', updatedAt: 1_700_000_000_999,
  history: Array.from({ length: version }, (_, i) => ({ status: 'queued' as const, at: i, workerId: null, reason: null })),
  ...over,
})

/** Through the driver's own BSON, with the options it reads documents with. */
const roundTrip = <T extends BSON.Document>(doc: T): BSON.Document => BSON.deserialize(BSON.serialize(doc))

test('worker documents carry CloudAI\'s fields in its types, and every WorkerRecord field survives BSON', () => {
  const doc = toWorkerDoc(full, 1_700_000_009_999)
  assert.equal(doc.worker_id, 'w-full')
  assert.equal(doc.worker_ip, '10.0.0.7:50052')
  assert.equal(doc.is_active, true)
  assert.deepEqual([doc.total_cpu, doc.total_memory, doc.total_storage, doc.total_gpu], [8, 31.25, 500.5, 2])
  // Unix seconds as int64, as CloudAI kept them; milliseconds beside them for an exact round trip.
  assert.ok(doc.registered_at instanceof Long && doc.registered_at.toNumber() === 1_700_000_000)
  assert.ok(doc.last_heartbeat instanceof Long && doc.last_heartbeat.toNumber() === 1_700_000_002)
  assert.ok(doc.updated_at instanceof Long && doc.updated_at.toNumber() === 1_700_000_009)
  assert.ok(doc.registered_at_ms instanceof Long && doc.registered_at_ms.toNumber() === 1_700_000_000_123)
  const raw = Buffer.from(BSON.serialize(doc))
  // 0x12 is BSON's int64 type: a plain JS number this large would have been written as a double (0x01).
  const typeOf = (field: string): number => raw[raw.indexOf(Buffer.from(`${field}\0`)) - 1]!
  assert.equal(typeOf('registered_at'), 0x12)
  assert.equal(typeOf('last_heartbeat'), 0x12)
  assert.equal(typeOf('connected_at_ms'), 0x12)
  for (const w of [full, bare]) assert.deepEqual(fromWorkerDoc(roundTrip(toWorkerDoc(w, Date.now()))), w)
})

test('a cordon and a drain survive BSON in the worker document (times as int64 ms); a damaged one reads as none', () => {
  const drained = { ...bare, scheduling: { cordonedAt: 1_700_000_000_111, drain: { startedAt: 1_700_000_000_222, deadline: 1_700_003_600_222, force: false, drainedAt: 1_700_000_100_000 } } }
  const cordoned = { ...bare, scheduling: { cordonedAt: 1_700_000_000_111, drain: null } }
  for (const w of [drained, cordoned]) assert.deepEqual(fromWorkerDoc(roundTrip(toWorkerDoc(w, Date.now()))), w)
  assert.equal(toWorkerDoc(bare, Date.now()).scheduling, null)
  assert.equal(fromWorkerDoc({ ...roundTrip(toWorkerDoc(bare, Date.now())), scheduling: { cordoned_at_ms: 'yesterday' } })?.scheduling, undefined)
})

test('a worker document written by CloudAI loads: seconds, Dates, extra fields, no fields of ours', () => {
  const cloudai = roundTrip({
    worker_id: 'gpu-node-1',
    worker_ip: '10.1.2.3:50052',
    total_cpu: 16,
    total_memory: 64,
    total_storage: 1000,
    total_gpu: 4,
    allocated_cpu: 2,
    available_cpu: 14,
    is_active: true,
    last_heartbeat: Long.fromNumber(1_700_000_100),
    registered_at: Long.fromNumber(1_700_000_000),
    updated_at: Long.fromNumber(1_700_000_100),
  })
  assert.deepEqual(fromWorkerDoc(cloudai), {
    id: 'gpu-node-1',
    address: '10.1.2.3:50052',
    isActive: true,
    specs: { cpu: 16, memory: 64, storage: 1000, gpu: 4 },
    usage: null,
    runningTasks: [],
    reportedAddress: null,
    registeredAt: 1_700_000_000_000,
    connectedAt: null,
    lastHeartbeat: 1_700_000_100_000,
    disconnectedAt: null,
    reconnects: 0,
    credential: null,
  })
  const dated = fromWorkerDoc(roundTrip({ worker_id: 'w', worker_ip: 'h:1', registered_at: new Date(1_700_000_000_500), last_heartbeat: null, running_tasks: [{ bogus: true }, null] }))
  assert.equal(dated?.registeredAt, 1_700_000_000_500)
  assert.equal(dated?.lastHeartbeat, null)
  assert.deepEqual(dated?.runningTasks, [])
  assert.equal(fromWorkerDoc({ worker_ip: 'h:1' }), null, 'a document naming no worker is skipped')
})

test('task documents keep the task whole under `task`, with its version and the indexed fields beside it', () => {
  const t = task('task-1', 3, { status: 'running', workerId: 'w1', env: { A: 'b c', EMPTY: '' }, req: { cpu: 0.5, memory: 1.25, storage: 0, gpu: 1 } })
  const doc = roundTrip(toTaskDoc(t))
  assert.deepEqual(doc.task, t)
  assert.equal(doc._id, 'task-1')
  assert.equal(doc.version, 3)
  assert.equal(doc.status, 'running')
  assert.equal(doc.worker_id, 'w1')
  assert.equal(doc.submitted_at_ms, 1_700_000_000_999)
  assert.equal(doc.submitted_at, 1_700_000_000)
})

test('a batch of worker changes is one op per worker: the last upsert, and a delete wins over an upsert', () => {
  const ops = workerOps({ upserts: [bare, { ...full, reconnects: 1 }, full, { ...bare, id: 'dropped' }], deletes: ['dropped', 'other'] }, 0)
  assert.equal(ops.length, 4)
  const upserts = ops.flatMap((op) => ('updateOne' in op ? [op.updateOne] : []))
  const deletes = ops.flatMap((op) => ('deleteOne' in op ? [op.deleteOne.filter] : []))
  assert.deepEqual(upserts.map((u) => u.filter), [{ worker_id: 'w-bare' }, { worker_id: 'w-full' }])
  assert.ok(upserts.every((u) => u.upsert === true))
  assert.equal((upserts[1]!.update as { $set: { reconnects: number } }).$set.reconnects, 3)
  // $set, never a replacement: CloudAI's own fields (allocated_cpu, ...) are left alone.
  assert.ok(upserts.every((u) => Object.keys(u.update).join() === '$set' && !('_id' in (u.update as { $set: object }).$set)))
  assert.deepEqual(deletes, [{ worker_id: 'dropped' }, { worker_id: 'other' }])
})

test('a batch of task states is one conditional upsert per task: its highest version, filtered on an older stored copy', () => {
  const a3 = task('task-a', 3, { name: 'first of equals' })
  const ops = taskOps([task('task-a', 1), a3, task('task-a', 3, { name: 'second' }), task('task-a', 2), task('task-b', 1)])
  assert.equal(ops.length, 2)
  const [a, b] = ops.map((op) => {
    assert.ok('replaceOne' in op)
    return op.replaceOne
  })
  assert.deepEqual(a!.filter, { _id: 'task-a', version: { $lt: 3 } })
  assert.equal(a!.upsert, true)
  assert.deepEqual(a!.replacement.task, a3)
  assert.ok(!('_id' in a!.replacement), 'the _id comes from the filter on insert and never changes on replace')
  assert.deepEqual(b!.filter, { _id: 'task-b', version: { $lt: 1 } })
})

test('a fenced batch of task states is one pipeline upsert per task that replaces only an older copy, the document going in as a $literal', () => {
  const a3 = task('task-a', 3, { name: 'first of equals', command: '$HOME/run.sh', env: { PATH: '$PATH:/opt' } })
  const ops = fencedTaskOps([task('task-a', 1), a3, task('task-a', 3, { name: 'second' }), task('task-b', 1)])
  assert.equal(ops.length, 2)
  const [a, b] = ops.map((op) => {
    assert.ok('updateOne' in op)
    return op.updateOne
  })
  // No duplicate key is ever raised (it would abort the transaction): the filter is the _id alone.
  assert.deepEqual(a!.filter, { _id: 'task-a' })
  assert.equal(a!.upsert, true)
  const doc = toTaskDoc(a3)
  assert.deepEqual(a!.update, [{ $replaceWith: { $cond: [{ $lt: [{ $ifNull: ['$version', -1] }, 3] }, { $literal: doc }, '$$ROOT'] } }])
  assert.deepEqual(roundTrip({ u: a!.update }).u[0].$replaceWith.$cond[1].$literal.task.command, '$HOME/run.sh', 'survives BSON as text')
  assert.deepEqual(b!.filter, { _id: 'task-b' })
})

test('a lease document reads back with its server-clock expiry in ms; a damaged one reads as null', () => {
  const doc = roundTrip({ _id: 'leader', holder: 'master-a', epoch: 3, expires_at: new Date(1_700_000_005_000), api: 'http://a:8080', grpc: 'a:50051', fenced_writes: 12 })
  assert.deepEqual(fromLeaseDoc(doc), { holder: 'master-a', epoch: 3, expiresAt: 1_700_000_005_000, api: 'http://a:8080', grpc: 'a:50051' })
  assert.deepEqual(fromLeaseDoc(roundTrip({ _id: 'leader', holder: 'm', epoch: Long.fromNumber(7), expires_at: new Date(5), api: null, grpc: null })), { holder: 'm', epoch: 7, expiresAt: 5, api: null, grpc: null })
  assert.equal(fromLeaseDoc({ _id: 'leader', epoch: 1, expires_at: new Date(5) }), null, 'no holder')
  assert.equal(fromLeaseDoc({ _id: 'leader', holder: 'm', epoch: 'one', expires_at: new Date(5) }), null, 'an epoch that is no number')
})

/**
 * A MongoBulkWriteError as the driver builds it after an unordered bulkWrite. WriteError and
 * BulkWriteResult are not exported at run time: objects with what is read of them stand in.
 */
function bulkError(codes: number[], writeConcernError?: object): MongoBulkWriteError {
  const writeErrors = codes.map((code, index) => ({ code, index, errmsg: `E${code}` }) as unknown as WriteError)
  const result = { getWriteConcernError: () => writeConcernError } as unknown as ConstructorParameters<typeof MongoBulkWriteError>[1]
  return new MongoBulkWriteError({ message: 'E', code: codes[0]!, writeErrors }, result)
}

test('only duplicate keys, with the write concern met, count as stale task writes; anything else is thrown', () => {
  assert.equal(onlyStaleWrites(bulkError([11000])), true)
  assert.equal(onlyStaleWrites(bulkError([11000, 11000])), true)
  assert.equal(onlyStaleWrites(bulkError([11000, 121])), false, 'a document validation failure is not stale')
  assert.equal(onlyStaleWrites(bulkError([11000], { code: 64, errmsg: 'waiting for replication timed out' })), false)
  assert.equal(onlyStaleWrites(new MongoServerError({ message: 'E11000', code: 11000 })), false, 'not from a bulkWrite')
  assert.equal(onlyStaleWrites(new Error('x')), false)
})

test('driver errors become UNAVAILABLE when they may pass and FAILED when they will not', () => {
  const code = (err: unknown): string => storeError(err, 'ctx').code
  assert.equal(code(new MongoServerSelectionError('Server selection timed out after 300 ms', { servers: new Map(), error: null } as never)), 'CLOUDAI_STORE_UNAVAILABLE')
  assert.equal(code(new MongoNetworkError('connection reset')), 'CLOUDAI_STORE_UNAVAILABLE')
  assert.equal(code(new MongoServerError({ message: 'not primary', code: 10107 })), 'CLOUDAI_STORE_UNAVAILABLE')
  assert.equal(code(new MongoServerError({ message: 'shutting down', code: 91 })), 'CLOUDAI_STORE_UNAVAILABLE')
  assert.equal(code(Object.assign(new Error('querySrv ENOTFOUND'), { code: 'ENOTFOUND' })), 'CLOUDAI_STORE_UNAVAILABLE')
  assert.equal(code(new MongoParseError('Invalid scheme')), 'CLOUDAI_STORE_FAILED')
  assert.equal(code(new MongoServerError({ message: 'Authentication failed.', code: 18 })), 'CLOUDAI_STORE_FAILED')
  assert.equal(code(new MongoServerError({ message: 'not authorized on cloudai to execute command', code: 13 })), 'CLOUDAI_STORE_FAILED')
  assert.equal(code(new MongoServerError({ message: 'Index already exists with a different name', code: 85 })), 'CLOUDAI_STORE_FAILED')
  const passthrough = new CloudaiError('CLOUDAI_STORE_FAILED', 'ours')
  assert.equal(storeError(passthrough, 'ctx'), passthrough)
  const wrapped = storeError(new MongoServerError({ message: 'Authentication failed.', code: 18 }), 'cannot open')
  assert.match(wrapped.message, /^cannot open: Authentication failed\.$/)
  assert.deepEqual(wrapped.details, { driverError: 'MongoServerError', driverCode: 18 })
})

test('the location shows where the store is and never a password', () => {
  assert.equal(redactMongoUri('mongodb://127.0.0.1:27017'), 'mongodb://127.0.0.1:27017')
  assert.equal(redactMongoUri('mongodb://cloudai:s3cret%40x@db1:27017,db2/admin?replicaSet=rs0'), 'mongodb://<credentials>@db1:27017,db2/admin?replicaSet=rs0')
  assert.equal(redactMongoUri('mongodb+srv://u:p@cluster0.example.net/?authMechanismProperties=AWS_SESSION_TOKEN:abc&appName=x'), 'mongodb+srv://<credentials>@cluster0.example.net/?authMechanismProperties=<redacted>&appName=x')
  assert.equal(redactMongoUri('mongodb://h/?tlsCertificateKeyFilePassword=pw'), 'mongodb://h/?tlsCertificateKeyFilePassword=<redacted>')
  assert.equal(redactMongoUri('mongodb://u:pa/ss@h'), 'mongodb://<malformed URI>')
  const store = new MongoStore({ ...MONGO_STORE_DEFAULTS, uri: 'mongodb://admin:hunter2@db.example:27017/admin', database: 'cluster_db' })
  assert.equal(store.location, 'mongodb://<credentials>@db.example:27017/admin (database cluster_db)')
  assert.equal(store.kind, 'mongodb')
})

test('createStore gives the store the config asks for', () => {
  const base: MasterConfig = { ...MASTER_DEFAULTS, log: { level: 'silent', pretty: false } }
  assert.ok(createStore(base) instanceof SqliteStore)
  const mongo = createStore({ ...base, masterId: 'm-east', store: { kind: 'mongodb', uri: 'mongodb://127.0.0.1', ...MONGO_STORE_DEFAULTS } })
  assert.ok(mongo instanceof MongoStore)
  assert.equal(mongo.location, 'mongodb://127.0.0.1 (database cloudai)')
})

function countResources(): Map<string, number> {
  const counts = new Map<string, number>()
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1)
  return counts
}

/** A port that was free a moment ago: bound, read, released. */
async function deadPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

test('open() with no server answering rejects with CLOUDAI_STORE_UNAVAILABLE, can be retried, and leaves no handle open', async () => {
  const port = await deadPort()
  const store = new MongoStore({ ...MONGO_STORE_DEFAULTS, uri: `mongodb://cloudai:hunter2@127.0.0.1:${port}`, database: 'cloudai', serverSelectionTimeoutMs: 300, connectTimeoutMs: 300 })
  await new Promise((resolve) => setImmediate(resolve))
  const resourcesBefore = countResources()
  for (let attempt = 1; attempt <= 2; attempt++) {
    const started = Date.now()
    await assert.rejects(store.open(), (err: unknown) => {
      assert.ok(err instanceof CloudaiError, String(err))
      assert.equal(err.code, 'CLOUDAI_STORE_UNAVAILABLE', err.message)
      assert.ok(err.message.includes(`127.0.0.1:${port}`), err.message)
      assert.ok(!err.message.includes('hunter2'), err.message)
      return true
    })
    // It gave up because of the short selection timeout, not a default of 30 s.
    assert.ok(Date.now() - started < 5000, `attempt ${attempt} took ${Date.now() - started} ms`)
  }
  // Two concurrent opens share one attempt, and both hear of its failure.
  const both = await Promise.allSettled([store.open(), store.open()])
  assert.deepEqual(both.map((r) => r.status), ['rejected', 'rejected'])
  // Not open: every call says so instead of hanging.
  await assert.rejects(store.loadWorkers(), { code: 'CLOUDAI_STORE_FAILED' })
  await assert.rejects(store.writeTasks([task('task-1', 1)]), { code: 'CLOUDAI_STORE_FAILED' })
  await assert.rejects(store.ping(), { code: 'CLOUDAI_STORE_FAILED' })
  await store.close()
  await store.close()
  // The failed clients were closed: no socket, timer or DNS request of theirs is left behind, so
  // the process can exit by itself.
  const after = countResources()
  for (const [type, n] of after) assert.ok(n <= (resourcesBefore.get(type) ?? 0), `left open: ${n} ${type} (before: ${resourcesBefore.get(type) ?? 0})`)
})

test('open() with a URI the driver refuses rejects with CLOUDAI_STORE_FAILED without reaching a server', async () => {
  const store = new MongoStore({ ...MONGO_STORE_DEFAULTS, uri: 'mongodb://127.0.0.1:1/?authMechanism=BOGUS', database: 'cloudai', serverSelectionTimeoutMs: 300 })
  await assert.rejects(store.open(), { code: 'CLOUDAI_STORE_FAILED' })
  await assert.rejects(store.open(), { code: 'CLOUDAI_STORE_FAILED' })
  await store.close()
})
