import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { CloudaiError, isCloudaiError } from '../../shared/errors.js'
import { assertWritableDir } from '../../shared/data-dir-lock.js'
import type { RunningTaskInfo, TaskRecord, WorkerRecord } from '../../shared/types.js'
import type { StoredCredential } from '../../shared/worker-credential.js'
import { readStoredCredential } from '../../shared/worker-credential.js'
import { readWorkerScheduling, withScheduling, type WorkerScheduling } from '../../shared/worker-scheduling.js'
import { acquireOutcome, checkLeaseRequest, holdsLease, staleEpochError, type Lease, type LeaseRequest } from '../lease.js'
import { FINAL_TASK_STATUSES, taskVersion, type Store, type WorkerChanges } from '../store.js'

const SCHEMA_VERSION = 7

/**
 * How long a lease call, and opening (WAL, the schema upgrade), wait for the write lock
 * (busy_timeout), instead of the connection's short one: the lock may be the other master's for
 * one of its batches, and a renewal that gives up after 50 ms would count as a lost renewal, where
 * waiting a little is the right answer.
 */
const LEASE_BUSY_MS = 1000

interface LeaseRow {
  holder: string
  epoch: number
  expires_at: number
  api: string | null
  grpc: string | null
}

interface WorkerRow {
  worker_id: string
  worker_ip: string
  is_active: number
  total_cpu: number | null
  total_memory: number | null
  total_storage: number | null
  total_gpu: number | null
  cpu_usage: number | null
  memory_usage: number | null
  storage_usage: number | null
  gpu_usage: number | null
  running_tasks: string
  reported_address: string | null
  registered_at: number
  connected_at: number | null
  last_heartbeat: number | null
  disconnected_at: number | null
  reconnects: number
  /** The StoredCredential as JSON (a nonce and a hash, never a token); null: none. */
  credential: string | null
  /** The WorkerScheduling as JSON (cordon, drain); null: the worker takes placements. */
  scheduling: string | null
}

/**
 * The SQLite connection itself: one file under --data-dir, WAL with synchronous=FULL so that a
 * committed batch survives both a kill -9 and a power cut. better-sqlite3 is synchronous, so this
 * runs on the store thread (thread.ts), never on the master's main thread: the master uses it
 * through SqliteStore (store.ts). busy_timeout is kept short so a database locked by another
 * process shows up as a failed write (retried later) rather than a thread stuck on the lock.
 * It is a Store by itself too, for tests that look at the connection.
 *
 * Two masters on one host may share the data directory (a standby, issue 19): each has its own
 * connection, WAL lets readers go on beside the one writer, and every write is an IMMEDIATE
 * transaction, so it takes the write lock before it reads anything (a deferred one that read first
 * could not upgrade past the other's commit and would fail without waiting). The lease's times are
 * this host's clock, read inside the transaction; SQLite over a network file system is not safe,
 * so a SQLite store is never shared across hosts.
 */
export class SqliteConnection implements Store {
  readonly kind = 'sqlite'
  readonly location: string
  private db: Database.Database | null = null
  /**
   * The connection was dropped after a failure that said it cannot write (read-only, a file it
   * cannot open, an I/O error): the next call opens a new one. A connection SQLite opened while
   * the directory was read-only stays read-only for good, and one whose files went bad stays bad;
   * a new one sees the directory as it is now, so the journal's next retry heals the store.
   */
  private reopen = false
  private upsertStmt: Database.Statement | null = null
  private deleteStmt: Database.Statement | null = null
  private writeTx: Database.Transaction<(changes: WorkerChanges) => void> | null = null
  private taskTx: Database.Transaction<(tasks: TaskRecord[]) => void> | null = null
  private deleteTaskTx: Database.Transaction<(ids: readonly string[]) => void> | null = null
  private leaseStmt: Database.Statement | null = null
  /** The epoch every write is conditional on (fence()); kept across a reopen of the connection. */
  private fenceEpoch: number | null = null

  constructor(dataDir: string, private readonly busyTimeoutMs = 50) {
    this.location = join(resolve(dataDir), 'cloudai.db')
  }

  async open(): Promise<void> {
    if (this.db) return
    let db: Database.Database | null = null
    try {
      const dir = resolve(this.location, '..')
      mkdirSync(dir, { recursive: true })
      // SQLite would open a read-only directory read-only without a word, and fail every write.
      assertWritableDir(dir, 'master')
      db = new Database(this.location)
      // The busy timeout first: another master's connection may hold the lock while this one
      // turns WAL on or migrates (a standby opening beside its leader).
      db.pragma(`busy_timeout = ${Math.max(LEASE_BUSY_MS, Math.floor(this.busyTimeoutMs))}`)
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = FULL')
      migrate(db)
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(this.busyTimeoutMs))}`)
      assertWritable(db, this.location)
      this.db = db
    } catch (err) {
      db?.close()
      if (isCloudaiError(err)) throw err
      throw new CloudaiError('CLOUDAI_STORE_FAILED', `cannot open the SQLite store at ${this.location}: ${(err as Error).message}`)
    }
    this.reopen = false
    this.upsertStmt = db.prepare(`
      INSERT INTO workers (worker_id, worker_ip, is_active, total_cpu, total_memory, total_storage, total_gpu,
        cpu_usage, memory_usage, storage_usage, gpu_usage, running_tasks, reported_address,
        registered_at, connected_at, last_heartbeat, disconnected_at, reconnects, credential, scheduling)
      VALUES (@worker_id, @worker_ip, @is_active, @total_cpu, @total_memory, @total_storage, @total_gpu,
        @cpu_usage, @memory_usage, @storage_usage, @gpu_usage, @running_tasks, @reported_address,
        @registered_at, @connected_at, @last_heartbeat, @disconnected_at, @reconnects, @credential, @scheduling)
      ON CONFLICT(worker_id) DO UPDATE SET
        worker_ip = excluded.worker_ip, is_active = excluded.is_active,
        total_cpu = excluded.total_cpu, total_memory = excluded.total_memory,
        total_storage = excluded.total_storage, total_gpu = excluded.total_gpu,
        cpu_usage = excluded.cpu_usage, memory_usage = excluded.memory_usage,
        storage_usage = excluded.storage_usage, gpu_usage = excluded.gpu_usage,
        running_tasks = excluded.running_tasks, reported_address = excluded.reported_address,
        registered_at = excluded.registered_at, connected_at = excluded.connected_at,
        last_heartbeat = excluded.last_heartbeat, disconnected_at = excluded.disconnected_at,
        reconnects = excluded.reconnects, credential = excluded.credential, scheduling = excluded.scheduling`)
    this.deleteStmt = db.prepare('DELETE FROM workers WHERE worker_id = ?')
    const upsert = this.upsertStmt
    const del = this.deleteStmt
    this.leaseStmt = db.prepare('SELECT holder, epoch, expires_at, api, grpc FROM lease WHERE id = 1')
    this.writeTx = db.transaction((changes: WorkerChanges) => {
      this.checkFence()
      for (const w of changes.upserts) upsert.run(toRow(w))
      for (const id of changes.deletes) del.run(id)
    })
    // Tasks are kept whole as JSON; the columns beside it are what queries filter and sort on.
    // The WHERE makes a stale write (a version not above the stored one) a no-op inside the
    // statement, so no read-compare-write can race it.
    const upsertTask = db.prepare(`
      INSERT INTO tasks (task_id, status, worker_id, submitted_at, updated_at, version, doc)
      VALUES (@id, @status, @workerId, @submittedAt, @updatedAt, @version, @doc)
      ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, worker_id = excluded.worker_id,
        updated_at = excluded.updated_at, version = excluded.version, doc = excluded.doc
      WHERE excluded.version > tasks.version`)
    this.taskTx = db.transaction((tasks: TaskRecord[]) => {
      this.checkFence()
      for (const t of tasks) {
        upsertTask.run({ id: t.id, status: t.status, workerId: t.workerId, submittedAt: t.submittedAt, updatedAt: t.updatedAt, version: taskVersion(t), doc: JSON.stringify(t) })
      }
    })
    const deleteTask = db.prepare('DELETE FROM tasks WHERE task_id = ?')
    this.deleteTaskTx = db.transaction((ids: readonly string[]) => {
      this.checkFence()
      for (const id of ids) deleteTask.run(id)
    })
  }

  async close(): Promise<void> {
    this.reopen = false
    this.dropConnection()
  }

  private dropConnection(): void {
    const db = this.db
    this.db = null
    this.writeTx = null
    this.taskTx = null
    this.deleteTaskTx = null
    this.upsertStmt = null
    this.deleteStmt = null
    this.leaseStmt = null
    db?.close()
  }

  async ping(): Promise<void> {
    // Takes the write lock and lets go: fails exactly when a write would.
    await this.using((db) => {
      db.exec('BEGIN IMMEDIATE')
      db.exec('ROLLBACK')
    })
  }

  async loadWorkers(): Promise<WorkerRecord[]> {
    const rows = await this.using((db) => db.prepare('SELECT * FROM workers ORDER BY registered_at, worker_id').all() as WorkerRow[])
    return rows.map(fromRow)
  }

  async writeWorkers(changes: WorkerChanges): Promise<void> {
    if (changes.upserts.length === 0 && changes.deletes.length === 0) return
    await this.using((db) => this.applyWorkers(db, changes))
  }

  private applyWorkers(db: Database.Database, changes: WorkerChanges): void {
    if (!this.writeTx) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store is not open')
    if (!changes.heartbeatsOnly) {
      this.writeTx.immediate(changes)
      return
    }
    // Committed without an fsync: the fleet's heartbeat batch comes every --store-heartbeat-interval, and better-sqlite3
    // waits for the flush on the store thread (0.3 ms on this SSD, tens of ms on a slow disk), with
    // every write queued behind it. WAL keeps it atomic, and the next FULL commit syncs the log with
    // these frames in it, so order holds; a power cut may lose the last heartbeat times.
    db.pragma('synchronous = NORMAL')
    try {
      this.writeTx.immediate(changes)
    } finally {
      db.pragma('synchronous = FULL')
    }
  }

  async loadTasks(): Promise<TaskRecord[]> {
    const rows = await this.using((db) => db.prepare('SELECT doc FROM tasks ORDER BY submitted_at, task_id').all() as { doc: string }[])
    return rows.map((r) => JSON.parse(r.doc) as TaskRecord)
  }

  async writeTasks(tasks: TaskRecord[]): Promise<void> {
    if (tasks.length === 0) return
    await this.using(() => {
      if (!this.taskTx) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store is not open')
      this.taskTx.immediate(tasks)
    })
  }

  async deleteTasks(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return
    await this.using(() => {
      if (!this.deleteTaskTx) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store is not open')
      this.deleteTaskTx.immediate(ids)
    })
  }

  async deleteFinishedBefore(before: number): Promise<number> {
    // Served by the tasks_finished index (status, updated_at).
    const marks = FINAL_TASK_STATUSES.map(() => '?').join(', ')
    return this.using((db) => this.fenced(db, () => db.prepare(`DELETE FROM tasks WHERE status IN (${marks}) AND updated_at < ?`).run(...FINAL_TASK_STATUSES, before).changes))
  }

  async deleteFinishedBeyond(keep: number): Promise<number> {
    // One statement: the subquery walks the tasks_finished index (status, updated_at, and the rowid
    // every index entry carries, which breaks ties), so nothing but the deleted rows is read from
    // the table. LIMIT -1 OFFSET n: every row after the first n.
    const marks = FINAL_TASK_STATUSES.map(() => '?').join(', ')
    const sql = `DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY tasks_finished WHERE status IN (${marks}) ORDER BY updated_at DESC, rowid DESC LIMIT -1 OFFSET ?)`
    return this.using((db) => this.fenced(db, () => db.prepare(sql).run(...FINAL_TASK_STATUSES, Math.max(0, Math.floor(keep))).changes))
  }

  async acquireLease(req: LeaseRequest): Promise<{ acquired: boolean; lease: Lease }> {
    checkLeaseRequest(req)
    return this.leaseTx((db) => {
      const outcome = acquireOutcome(this.storedLease(), req, Date.now())
      const l = outcome.lease
      if (outcome.acquired) {
        db.prepare(`INSERT INTO lease (id, holder, epoch, expires_at, api, grpc) VALUES (1, @holder, @epoch, @expiresAt, @api, @grpc)
          ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch, expires_at = excluded.expires_at, api = excluded.api, grpc = excluded.grpc`).run(l)
      }
      return outcome
    })
  }

  async renewLease(req: { holder: string; epoch: number; ttlMs: number }): Promise<boolean> {
    checkLeaseRequest(req)
    return this.leaseTx((db) => {
      if (!holdsLease(this.storedLease(), req)) return false
      db.prepare('UPDATE lease SET expires_at = ? WHERE id = 1').run(Date.now() + req.ttlMs)
      return true
    })
  }

  async releaseLease(req: { holder: string; epoch: number }): Promise<void> {
    checkLeaseRequest(req)
    await this.leaseTx((db) => {
      if (holdsLease(this.storedLease(), req)) db.prepare('UPDATE lease SET expires_at = ? WHERE id = 1').run(Date.now())
    })
  }

  async readLease(): Promise<Lease | null> {
    return this.using(() => this.storedLease())
  }

  fence(epoch: number | null): void {
    if (epoch !== null) checkLeaseRequest({ holder: '-', epoch })
    this.fenceEpoch = epoch
  }

  private storedLease(): Lease | null {
    if (!this.leaseStmt) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store is not open')
    const r = this.leaseStmt.get() as LeaseRow | undefined
    return r ? { holder: r.holder, epoch: r.epoch, expiresAt: r.expires_at, api: r.api, grpc: r.grpc } : null
  }

  /** Inside a write transaction: throws CLOUDAI_STALE_EPOCH (rolling it back) unless the stored epoch is the fenced one. */
  private checkFence(): void {
    const fence = this.fenceEpoch
    if (fence === null) return
    const stored = this.storedLease()?.epoch ?? null
    if (stored !== fence) throw staleEpochError(fence, stored)
  }

  /** `fn` in an IMMEDIATE transaction behind the fence check. */
  private fenced<T>(db: Database.Database, fn: () => T): T {
    return db.transaction(() => {
      this.checkFence()
      return fn()
    }).immediate()
  }

  /**
   * `fn` in an IMMEDIATE transaction, so that the lease is read and changed under the write lock
   * and Date.now() is read once the lock is held: the host's clock at the moment of the change.
   */
  private leaseTx<T>(fn: (db: Database.Database) => T): Promise<T> {
    return this.using((db) => {
      db.pragma(`busy_timeout = ${Math.max(LEASE_BUSY_MS, Math.floor(this.busyTimeoutMs))}`)
      try {
        return db.transaction(() => fn(db)).immediate()
      } finally {
        db.pragma(`busy_timeout = ${Math.max(0, Math.floor(this.busyTimeoutMs))}`)
      }
    })
  }

  /**
   * Runs `fn` on the connection, a new one if the last was dropped; a failure that says the
   * connection cannot write drops it (and is thrown as it came: the journal retries).
   */
  private async using<T>(fn: (db: Database.Database) => T): Promise<T> {
    if (!this.db && this.reopen) await this.open()
    if (!this.db) throw new CloudaiError('CLOUDAI_STORE_FAILED', 'the SQLite store is not open')
    try {
      return fn(this.db)
    } catch (err) {
      if (cannotWrite(err)) {
        this.dropConnection()
        this.reopen = true
      }
      throw err
    }
  }
}

/** SQLite's word for a connection that cannot write where it is (as opposed to a busy lock). */
function cannotWrite(err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && /^SQLITE_(READONLY|CANTOPEN|IOERR|PERM)/.test(code)
}

/**
 * A write transaction begun and rolled back: refuses a connection SQLite opened read-only (the
 * database file, its -wal or -shm not writable), which would otherwise fail every write. A lock
 * held by another process is not this check's business: the journal retries those.
 */
function assertWritable(db: Database.Database, location: string): void {
  try {
    db.exec('BEGIN IMMEDIATE')
    db.exec('ROLLBACK')
  } catch (err) {
    if (!cannotWrite(err)) return
    throw new CloudaiError('CLOUDAI_DATA_DIR_READONLY', `the SQLite store at ${location} cannot be written (${(err as Error).message}): make its directory and files writable and start again`, { location })
  }
}

/**
 * Brings the schema to SCHEMA_VERSION in one IMMEDIATE transaction: two masters opening one data
 * directory at once (a standby beside its leader) read the version under the write lock, so the
 * second finds the work done instead of adding the same column twice; and a failed step leaves
 * the database as it was.
 */
function migrate(db: Database.Database): void {
  const newer = (version: number): void => {
    if (version > SCHEMA_VERSION) throw new Error(`database schema version ${version} is newer than this cloudai (${SCHEMA_VERSION}); upgrade cloudai`)
  }
  const current = db.pragma('user_version', { simple: true }) as number
  newer(current)
  if (current === SCHEMA_VERSION) return
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number
    newer(version)
    migrateFrom(db, version)
  }).immediate()
}

function migrateFrom(db: Database.Database, version: number): void {
  if (version < 1) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS workers (
        worker_id TEXT PRIMARY KEY,
        worker_ip TEXT NOT NULL,
        is_active INTEGER NOT NULL DEFAULT 0,
        total_cpu REAL, total_memory REAL, total_storage REAL, total_gpu REAL,
        cpu_usage REAL, memory_usage REAL, storage_usage REAL, gpu_usage REAL,
        running_tasks TEXT NOT NULL DEFAULT '[]',
        reported_address TEXT,
        registered_at INTEGER NOT NULL,
        connected_at INTEGER, last_heartbeat INTEGER, disconnected_at INTEGER,
        reconnects INTEGER NOT NULL DEFAULT 0
      );
      PRAGMA user_version = 1;`)
  }
  if (version < 2) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS tasks (
        task_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        worker_id TEXT,
        submitted_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        doc TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, submitted_at);
      PRAGMA user_version = 2;`)
  }
  if (version < 3) {
    // The version filter of writeTasks; rows written before it get theirs from the stored history.
    db.exec(`
      ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
      UPDATE tasks SET version = CASE WHEN json_valid(doc) THEN COALESCE(json_array_length(doc, '$.history'), 0) ELSE 0 END;
      CREATE INDEX IF NOT EXISTS tasks_worker ON tasks (worker_id);
      PRAGMA user_version = 3;`)
  }
  if (version < 4) {
    // Worker tokens: what the master keeps of each (a nonce and a hash). Workers of an earlier
    // release have none (NULL) until an operator rotates one.
    db.exec(`
      ALTER TABLE workers ADD COLUMN credential TEXT;
      PRAGMA user_version = 4;`)
  }
  if (version < 5) {
    // Retention: finished tasks by the time of their last change (a final state is the last one).
    db.exec(`
      CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (status, updated_at);
      PRAGMA user_version = 5;`)
  }
  if (version < 6) {
    // Cordon and drain (worker-scheduling.ts): NULL for every worker of an earlier release.
    db.exec(`
      ALTER TABLE workers ADD COLUMN scheduling TEXT;
      PRAGMA user_version = 6;`)
  }
  if (version < 7) {
    // The leader's lease (issue 19): one row, absent until a master first takes it. Times are
    // epoch ms on this host's clock.
    db.exec(`
      CREATE TABLE IF NOT EXISTS lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        api TEXT,
        grpc TEXT
      );
      PRAGMA user_version = 7;`)
  }
}

function toRow(w: WorkerRecord): WorkerRow {
  return {
    worker_id: w.id,
    worker_ip: w.address,
    is_active: w.isActive ? 1 : 0,
    total_cpu: w.specs?.cpu ?? null,
    total_memory: w.specs?.memory ?? null,
    total_storage: w.specs?.storage ?? null,
    total_gpu: w.specs?.gpu ?? null,
    cpu_usage: w.usage?.cpu ?? null,
    memory_usage: w.usage?.memory ?? null,
    storage_usage: w.usage?.storage ?? null,
    gpu_usage: w.usage?.gpu ?? null,
    running_tasks: JSON.stringify(w.runningTasks),
    reported_address: w.reportedAddress,
    registered_at: w.registeredAt,
    connected_at: w.connectedAt,
    last_heartbeat: w.lastHeartbeat,
    disconnected_at: w.disconnectedAt,
    reconnects: w.reconnects,
    credential: w.credential === null ? null : JSON.stringify(w.credential),
    scheduling: w.scheduling ? JSON.stringify(w.scheduling) : null,
  }
}

function fromRow(r: WorkerRow): WorkerRecord {
  let runningTasks: RunningTaskInfo[] = []
  try {
    const parsed: unknown = JSON.parse(r.running_tasks)
    if (Array.isArray(parsed)) runningTasks = parsed as RunningTaskInfo[]
  } catch {
    // A damaged column costs the last known task list, not the worker.
  }
  return {
    id: r.worker_id,
    address: r.worker_ip,
    isActive: r.is_active === 1,
    specs: r.total_cpu === null ? null : { cpu: r.total_cpu, memory: r.total_memory ?? 0, storage: r.total_storage ?? 0, gpu: r.total_gpu ?? 0 },
    usage: r.cpu_usage === null ? null : { cpu: r.cpu_usage, memory: r.memory_usage ?? 0, storage: r.storage_usage ?? 0, gpu: r.gpu_usage ?? 0 },
    runningTasks,
    reportedAddress: r.reported_address,
    registeredAt: r.registered_at,
    connectedAt: r.connected_at,
    lastHeartbeat: r.last_heartbeat,
    disconnectedAt: r.disconnected_at,
    reconnects: r.reconnects,
    credential: parseCredential(r.credential),
    ...withScheduling(parseScheduling(r.scheduling)),
  }
}

/** A damaged column reads as none: the worker takes placements again (an operator cordons it again). */
function parseScheduling(text: string | null): WorkerScheduling | null {
  if (text === null) return null
  try {
    return readWorkerScheduling(JSON.parse(text))
  } catch {
    return null
  }
}

/** A damaged column costs the worker its credential (an operator rotates a new one), not the worker. */
function parseCredential(text: string | null): StoredCredential | null {
  if (text === null) return null
  try {
    return readStoredCredential(JSON.parse(text))
  } catch {
    return null
  }
}
