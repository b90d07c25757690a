import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { SqliteConnection } from '../../src/store/sqlite/connection.js'
import { SqliteStore } from '../../src/store/sqlite/store.js'
import type { WorkerRecord } from '../../src/shared/types.js'
import { tempDir } from '../support/cluster.js'

const worker = (id: string, over: Partial<WorkerRecord> = {}): WorkerRecord => ({
  id,
  address: `10.0.0.1:${5000 + id.length}`,
  isActive: false,
  specs: null,
  usage: null,
  runningTasks: [],
  reportedAddress: null,
  registeredAt: 1_700_000_000_000,
  connectedAt: null,
  lastHeartbeat: null,
  disconnectedAt: null,
  reconnects: 0,
  credential: null,
  ...over,
})

test('SQLite store: upserts, deletes and a reopen give back exactly what was written', async (t) => {
  const dir = tempDir(t)
  const store = new SqliteStore(join(dir, 'nested', 'data'))
  await store.open()
  const full = worker('w-full', {
    isActive: true,
    specs: { cpu: 8, memory: 31.25, storage: 500.5, gpu: 2 },
    usage: { cpu: 12.5, memory: 40, storage: 60, gpu: 1 },
    runningTasks: [{ taskId: 't1', cpu: 1, memory: 2, gpu: 0, status: 'running', attempt: 1 }],
    reportedAddress: '192.168.0.9:50052',
    connectedAt: 1_700_000_001_000,
    lastHeartbeat: 1_700_000_002_000,
    disconnectedAt: 1_700_000_000_500,
    reconnects: 3,
  })
  await store.writeWorkers({ upserts: [worker('w1'), worker('w2'), full], deletes: [] })
  await store.writeWorkers({ upserts: [worker('w1', { address: '10.0.0.2:1' })], deletes: ['w2', 'never-existed'] })
  await store.close()
  await store.close()

  const reopened = new SqliteStore(join(dir, 'nested', 'data'))
  await reopened.open()
  t.after(() => reopened.close())
  const loaded = await reopened.loadWorkers()
  assert.deepEqual(loaded.map((w) => w.id).sort(), ['w-full', 'w1'])
  assert.deepEqual(loaded.find((w) => w.id === 'w-full'), full)
  assert.equal(loaded.find((w) => w.id === 'w1')?.address, '10.0.0.2:1')
})

test('SQLite store: a database from a newer cloudai is refused with a clear error', async (t) => {
  const dir = tempDir(t)
  const db = new Database(join(dir, 'cloudai.db'))
  db.pragma('user_version = 99')
  db.close()
  await assert.rejects(new SqliteStore(dir).open(), (err: Error & { code?: string }) => err.code === 'CLOUDAI_STORE_FAILED' && /newer/.test(err.message))
})

test('SQLite store: tasks round-trip whole, and a database of the previous release is upgraded in place', async (t) => {
  const dir = tempDir(t)
  // A schema-1 database, as the workers-only release left it.
  const old = new Database(join(dir, 'cloudai.db'))
  old.exec(`CREATE TABLE workers (worker_id TEXT PRIMARY KEY, worker_ip TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0,
    total_cpu REAL, total_memory REAL, total_storage REAL, total_gpu REAL, cpu_usage REAL, memory_usage REAL, storage_usage REAL, gpu_usage REAL,
    running_tasks TEXT NOT NULL DEFAULT '[]', reported_address TEXT, registered_at INTEGER NOT NULL, connected_at INTEGER, last_heartbeat INTEGER,
    disconnected_at INTEGER, reconnects INTEGER NOT NULL DEFAULT 0);
    INSERT INTO workers (worker_id, worker_ip, registered_at) VALUES ('kept', '10.0.0.1:1', 1);
    PRAGMA user_version = 1;`)
  old.close()
  const store = new SqliteStore(dir)
  await store.open()
  t.after(() => store.close())
  assert.deepEqual((await store.loadWorkers()).map((w) => w.id), ['kept'])
  const task = {
    id: 'task-1', name: 'n', command: 'echo "quoted" \'and\' \\ back', dockerImage: '', req: { cpu: 1.5, memory: 2, storage: 0, gpu: 0 }, targetWorkerId: null, userId: '',
    timeoutS: 10, maxAttempts: 3, env: { A: 'b c' }, status: 'running' as const, workerId: 'kept', attempts: 1, attempt: 1, submittedAt: 5, assignedAt: 6, startedAt: 7,
    finishedAt: null, exitCode: null, reason: null, logsTail: 'out\u00e9\n', updatedAt: 7, history: [{ status: 'queued' as const, at: 5, workerId: null, reason: null }],
  }
  await store.writeTasks([task])
  // A later state carries a longer history: that is what lets it replace the stored copy.
  const completed = { ...task, status: 'completed' as const, exitCode: 0, finishedAt: 9, history: [...task.history, { status: 'completed' as const, at: 9, workerId: 'kept', reason: null }] }
  await store.writeTasks([completed])
  assert.deepEqual(await store.loadTasks(), [completed])
})

test('SQLite store: a schema-2 database gets task versions from the stored history, so stale writes are refused at once', async (t) => {
  const dir = tempDir(t)
  const history = (n: number) => Array.from({ length: n }, (_, i) => ({ status: 'queued' as const, at: i, workerId: null, reason: null }))
  const stored = {
    id: 'task-old', name: '', command: 'true', dockerImage: '', req: { cpu: 1, memory: 0, storage: 0, gpu: 0 }, targetWorkerId: null, userId: '', timeoutS: 0, maxAttempts: 1,
    env: {}, status: 'running' as const, workerId: 'w1', attempts: 1, attempt: 1, submittedAt: 5, assignedAt: 6, startedAt: 7, finishedAt: null, exitCode: null, reason: null,
    logsTail: '', updatedAt: 7, history: history(3),
  }
  // The schema-2 layout, as the previous release left it (no version column).
  const old = new Database(join(dir, 'cloudai.db'))
  old.exec(`CREATE TABLE workers (worker_id TEXT PRIMARY KEY, worker_ip TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0,
    total_cpu REAL, total_memory REAL, total_storage REAL, total_gpu REAL, cpu_usage REAL, memory_usage REAL, storage_usage REAL, gpu_usage REAL,
    running_tasks TEXT NOT NULL DEFAULT '[]', reported_address TEXT, registered_at INTEGER NOT NULL, connected_at INTEGER, last_heartbeat INTEGER,
    disconnected_at INTEGER, reconnects INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE tasks (task_id TEXT PRIMARY KEY, status TEXT NOT NULL, worker_id TEXT, submitted_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, doc TEXT NOT NULL);
    CREATE INDEX tasks_status ON tasks (status, submitted_at);
    PRAGMA user_version = 2;`)
  old.prepare('INSERT INTO tasks (task_id, status, worker_id, submitted_at, updated_at, doc) VALUES (?, ?, ?, ?, ?, ?)').run(stored.id, stored.status, stored.workerId, 5, 7, JSON.stringify(stored))
  old.prepare('INSERT INTO tasks (task_id, status, worker_id, submitted_at, updated_at, doc) VALUES (?, ?, ?, ?, ?, ?)').run('task-damaged', 'queued', null, 6, 6, '{not json')
  old.close()

  const store = new SqliteStore(dir)
  await store.open()
  await store.writeTasks([{ ...stored, status: 'assigned', history: history(2) }, { ...stored, status: 'failed', history: history(3) }])
  const after = new Database(join(dir, 'cloudai.db'), { readonly: true })
  t.after(() => after.close())
  assert.equal(after.pragma('user_version', { simple: true }), 7)
  assert.deepEqual(after.prepare('SELECT task_id, version FROM tasks ORDER BY task_id').all(), [{ task_id: 'task-damaged', version: 0 }, { task_id: 'task-old', version: 3 }])
  assert.ok(after.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'tasks_worker'").get())
  assert.equal(JSON.parse((after.prepare("SELECT doc FROM tasks WHERE task_id = 'task-old'").get() as { doc: string }).doc).status, 'running')
  const done = { ...stored, status: 'completed' as const, history: history(4) }
  await store.writeTasks([done])
  assert.equal(JSON.parse((after.prepare("SELECT doc FROM tasks WHERE task_id = 'task-old'").get() as { doc: string }).doc).status, 'completed')
  await store.close()
})

test('SQLite store: a heartbeat-only batch is committed (without an fsync) and later writes are synchronous again', async (t) => {
  const dir = tempDir(t)
  // The connection the store thread runs, in this thread, to read its pragma.
  const store = new SqliteConnection(dir)
  await store.open()
  t.after(() => store.close())
  const beat = worker('w-hb', { isActive: true, lastHeartbeat: 1_700_000_009_000, usage: { cpu: 1, memory: 2, storage: 3, gpu: 4 } })
  await store.writeWorkers({ upserts: [beat], deletes: [], heartbeatsOnly: true })
  // Another connection sees it: committed, not merely buffered.
  const reader = new Database(join(dir, 'cloudai.db'), { readonly: true })
  t.after(() => reader.close())
  assert.equal((reader.prepare('SELECT last_heartbeat FROM workers WHERE worker_id = ?').get('w-hb') as { last_heartbeat: number }).last_heartbeat, 1_700_000_009_000)
  const db = (store as unknown as { db: Database.Database }).db
  assert.equal(db.pragma('synchronous', { simple: true }), 2, 'back to synchronous = FULL')
  await store.writeWorkers({ upserts: [{ ...beat, isActive: false }], deletes: [] })
  assert.deepEqual(await store.loadWorkers(), [{ ...beat, isActive: false }])
})

test('SQLite store: a schema-3 database (before worker tokens) gets a credential column; its workers have none until one is rotated', async (t) => {
  const dir = tempDir(t)
  const old = new Database(join(dir, 'cloudai.db'))
  old.exec(`CREATE TABLE workers (worker_id TEXT PRIMARY KEY, worker_ip TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0,
    total_cpu REAL, total_memory REAL, total_storage REAL, total_gpu REAL, cpu_usage REAL, memory_usage REAL, storage_usage REAL, gpu_usage REAL,
    running_tasks TEXT NOT NULL DEFAULT '[]', reported_address TEXT, registered_at INTEGER NOT NULL, connected_at INTEGER, last_heartbeat INTEGER,
    disconnected_at INTEGER, reconnects INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE tasks (task_id TEXT PRIMARY KEY, status TEXT NOT NULL, worker_id TEXT, submitted_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, doc TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX tasks_status ON tasks (status, submitted_at);
    CREATE INDEX tasks_worker ON tasks (worker_id);
    INSERT INTO workers (worker_id, worker_ip, registered_at) VALUES ('kept', '10.0.0.1:1', 1);
    PRAGMA user_version = 3;`)
  old.close()
  const store = new SqliteStore(dir)
  await store.open()
  t.after(() => store.close())
  assert.deepEqual(await store.loadWorkers(), [worker('kept', { address: '10.0.0.1:1', registeredAt: 1 })], 'loaded, with credential null')
  const credential = { nonce: 'bm9uY2U', hash: 'f'.repeat(64), issuedAt: 5, presentedAt: null, enforced: false, previous: null }
  await store.writeWorkers({ upserts: [worker('kept', { address: '10.0.0.1:1', registeredAt: 1, credential })], deletes: [] })
  const raw = new Database(join(dir, 'cloudai.db'), { readonly: true })
  t.after(() => raw.close())
  assert.equal(raw.pragma('user_version', { simple: true }), 7)
  // Schema 5: finished tasks by the time of their last change, for retention at start.
  assert.ok(raw.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'tasks_finished'").get())
  // Schema 6: cordon and drain; none for a worker of an earlier release.
  assert.equal((raw.prepare('SELECT scheduling FROM workers').get() as { scheduling: string | null }).scheduling, null)
  assert.deepEqual(JSON.parse((raw.prepare('SELECT credential FROM workers').get() as { credential: string }).credential), credential)
  // A damaged column costs the credential, not the worker.
  const rw = new Database(join(dir, 'cloudai.db'))
  rw.prepare("UPDATE workers SET credential = '{not json'").run()
  rw.close()
  assert.equal((await store.loadWorkers())[0]?.credential, null)
  // And a damaged scheduling column costs the cordon (the worker takes tasks), not the worker.
  const rw2 = new Database(join(dir, 'cloudai.db'))
  rw2.prepare("UPDATE workers SET scheduling = '{not json'").run()
  rw2.close()
  assert.equal((await store.loadWorkers())[0]?.scheduling, undefined)
})

test('SQLite store: a schema-6 database (before the lease) gets an empty lease table and keeps its data; the first acquire is epoch 1', async (t) => {
  const dir = tempDir(t)
  const seed = new SqliteStore(dir)
  await seed.open()
  await seed.writeWorkers({ upserts: [worker('kept')], deletes: [] })
  await seed.close()
  // The database as the previous release left it: no lease table, schema 6.
  const old = new Database(join(dir, 'cloudai.db'))
  old.exec('DROP TABLE lease; PRAGMA user_version = 6;')
  old.close()
  const store = new SqliteStore(dir)
  await store.open()
  t.after(() => store.close())
  assert.equal(await store.readLease(), null)
  assert.deepEqual(await store.loadWorkers(), [worker('kept')])
  const got = await store.acquireLease({ holder: 'm1', ttlMs: 10_000, api: null, grpc: null })
  assert.deepEqual([got.acquired, got.lease.epoch, got.lease.api], [true, 1, null])
  const raw = new Database(join(dir, 'cloudai.db'), { readonly: true })
  t.after(() => raw.close())
  assert.equal(raw.pragma('user_version', { simple: true }), 7)
})

test('SQLite store: masters opening one old data directory at once all open it, and it is upgraded once', async (t) => {
  // A race: each round is another chance for two of them to read the old version at once.
  for (let round = 0; round < 12; round++) {
    const dir = join(tempDir(t), `round-${round}`)
    mkdirSync(dir)
    // The schema-3 layout: the next steps add columns, which a second upgrade would add twice.
    const old = new Database(join(dir, 'cloudai.db'))
    old.exec(`CREATE TABLE workers (worker_id TEXT PRIMARY KEY, worker_ip TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0,
      total_cpu REAL, total_memory REAL, total_storage REAL, total_gpu REAL, cpu_usage REAL, memory_usage REAL, storage_usage REAL, gpu_usage REAL,
      running_tasks TEXT NOT NULL DEFAULT '[]', reported_address TEXT, registered_at INTEGER NOT NULL, connected_at INTEGER, last_heartbeat INTEGER,
      disconnected_at INTEGER, reconnects INTEGER NOT NULL DEFAULT 0);
      CREATE TABLE tasks (task_id TEXT PRIMARY KEY, status TEXT NOT NULL, worker_id TEXT, submitted_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, doc TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0);
      INSERT INTO workers (worker_id, worker_ip, registered_at) VALUES ('kept', '10.0.0.1:1', 1);
      PRAGMA journal_mode = WAL;
      PRAGMA user_version = 3;`)
    old.close()
    const stores = [new SqliteStore(dir), new SqliteStore(dir), new SqliteStore(dir)]
    const opened = await Promise.allSettled(stores.map((s) => s.open()))
    await Promise.all(stores.map((s) => s.close()))
    assert.deepEqual(opened.map((r) => (r.status === 'rejected' ? String(r.reason) : 'open')), ['open', 'open', 'open'], `round ${round}`)
    const raw = new Database(join(dir, 'cloudai.db'), { readonly: true })
    try {
      assert.equal(raw.pragma('user_version', { simple: true }), 7)
      assert.equal((raw.prepare('SELECT count(*) AS n FROM workers').get() as { n: number }).n, 1)
    } finally {
      raw.close()
    }
  }
})
