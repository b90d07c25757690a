import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import type { Worker } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { Registry } from '../../src/master/registry.js'
import { isCloudaiError } from '../../src/shared/errors.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { StoreJournal } from '../../src/store/journal.js'
import { STAGE_RECORDS } from '../../src/store/sqlite/protocol.js'
import { SqliteStore } from '../../src/store/sqlite/store.js'
import { tempDir } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

// Issue 17, target 3: the store's work never blocks the main thread. SQLite runs on a thread of its
// own (src/store/sqlite/), and a thread that dies is a store failure the journal heals, not a crash.

function task(id: string): TaskRecord {
  return {
    id, name: id, command: 'true', dockerImage: '', req: { cpu: 0, memory: 0, storage: 0, gpu: 0 }, targetWorkerId: null, userId: '', timeoutS: 0, maxAttempts: 3, env: {},
    status: 'queued', workerId: null, attempts: 0, attempt: 0, submittedAt: 1, assignedAt: null, startedAt: null, finishedAt: null, exitCode: null, reason: null, logsTail: '', updatedAt: 1,
    history: [{ status: 'queued', at: 1, workerId: null, reason: null }],
  }
}

/** The store's thread, reached into as a crash would reach it. */
function threadOf(store: SqliteStore): Worker {
  const thread = (store as unknown as { thread: Worker | null }).thread
  assert.ok(thread, 'the store runs a thread')
  return thread
}

/** Resolves true if the event loop got to run a callback before `p` settled. */
async function loopTurnedWhile(p: Promise<unknown>): Promise<boolean> {
  let turned = false
  const im = setImmediate(() => (turned = true))
  try {
    await p
  } catch {
    // Only the timing is asked here.
  } finally {
    clearImmediate(im)
  }
  return turned
}

test('while another process holds the SQLite write lock, a write waits for it on the store thread and the main thread keeps running', async (t) => {
  const dir = tempDir(t)
  const store = new SqliteStore(dir, 400)
  await store.open()
  t.after(() => store.close())
  const other = new Database(join(dir, 'cloudai.db'))
  t.after(() => other.close())
  other.exec('BEGIN IMMEDIATE')
  const write = store.writeTasks([task('t1')])
  assert.equal(await loopTurnedWhile(write), true, 'the event loop ran while the write waited on the lock')
  await assert.rejects(write, (err: unknown) => (err as { code?: string }).code === 'SQLITE_BUSY', 'the lock is reported with SQLite\'s own code')
  other.exec('ROLLBACK')
  await store.writeTasks([task('t1')])
  assert.deepEqual((await store.loadTasks()).map((x) => x.id), ['t1'])
})

test('a large batch goes to the store thread in parts, is committed whole while the main thread keeps running, and is answered only once committed', async (t) => {
  const dir = tempDir(t)
  const store = new SqliteStore(dir)
  await store.open()
  t.after(() => store.close())
  // What the main thread clones per message: a large batch goes in parts, one per turn.
  const thread = threadOf(store)
  const post = thread.postMessage.bind(thread)
  let largest = 0
  thread.postMessage = (msg: { stage?: unknown[]; args?: unknown[] }) => {
    const records = msg.stage ?? (Array.isArray(msg.args?.[0]) ? msg.args[0] : [])
    largest = Math.max(largest, records.length)
    post(msg)
  }
  const batch = Array.from({ length: 20_000 }, (_, i) => task(`t${i}`))
  const write = store.writeTasks(batch)
  // Posted behind the batch's parts, so run after it: the task is gone at the end.
  const removal = store.deleteTasks(['t0'])
  assert.equal(await loopTurnedWhile(write), true)
  const reader = new Database(join(dir, 'cloudai.db'), { readonly: true })
  t.after(() => reader.close())
  // t0 is left out: the removal behind the batch may already have run by the time this reads.
  assert.equal((reader.prepare("SELECT COUNT(*) AS n FROM tasks WHERE task_id <> 't0'").get() as { n: number }).n, 19_999, 'committed when the write resolved')
  assert.ok(largest <= STAGE_RECORDS, `at most ${STAGE_RECORDS} records cloned in one message (saw ${largest})`)
  await removal
  assert.equal((reader.prepare("SELECT COUNT(*) AS n FROM tasks WHERE task_id = 't0'").get() as { n: number }).n, 0, 'the later call ran after the batch')
})

test('a store thread that dies fails its calls as CLOUDAI_STORE_UNAVAILABLE, and the journal\'s retry starts a new one that takes the writes', { timeout: 20_000 }, async (t) => {
  const dir = tempDir(t)
  const store = new SqliteStore(dir)
  await store.open()
  const registry = new Registry()
  const { log } = memoryLogger()
  const journal = new StoreJournal(store, registry, { log, limit: 100_000, heartbeatFlushMs: 1000, retryBaseMs: 10, retryCapMs: 50 })
  journal.start(true)
  t.after(async () => {
    await journal.close()
    await store.close()
  })
  const thread = threadOf(store)
  for (let i = 0; i < 5000; i++) journal.recordTask(task(`t${i}`))
  const recovered = new Promise((resolve) => journal.once('recovered', resolve))
  // The flush posts the batch at once; the thread is gone before it could answer.
  const synced = journal.sync()
  const exited = thread.terminate()
  assert.equal(await synced, false, 'the write failed: the journal counts the store as down')
  await exited
  assert.match(journal.status().lastError ?? '', /store thread stopped/)
  await recovered
  assert.equal(journal.status().healthy, true)
  assert.equal(journal.status().backlog, 0)
  assert.notEqual(threadOf(store), thread, 'a new thread')
  assert.equal((await store.loadTasks()).length, 5000)
})

test('a call on a closed SQLite store is refused with CLOUDAI_STORE_FAILED and starts no thread', async (t) => {
  const store = new SqliteStore(tempDir(t))
  await store.open()
  await store.close()
  await store.close()
  await assert.rejects(store.ping(), (err: unknown) => isCloudaiError(err) && err.code === 'CLOUDAI_STORE_FAILED')
  assert.equal((store as unknown as { thread: Worker | null }).thread, null)
})

test('a fence outlives its store thread: the thread started after a crash refuses a deposed holder\'s writes as the first did', { timeout: 20_000 }, async (t) => {
  const dir = tempDir(t)
  const store = new SqliteStore(dir)
  await store.open()
  const other = new SqliteStore(dir)
  await other.open()
  t.after(async () => {
    await store.close()
    await other.close()
  })
  const ask = (holder: string) => ({ holder, ttlMs: 60_000, api: null, grpc: null })
  const mine = await store.acquireLease(ask('master-a'))
  store.fence(mine.lease.epoch)
  await store.writeTasks([task('t-before')])
  await store.releaseLease({ holder: 'master-a', epoch: mine.lease.epoch })
  assert.equal((await other.acquireLease(ask('master-b'))).lease.epoch, 2)
  const thread = threadOf(store)
  await thread.terminate()
  // The refusal crosses the seam whole: its code and the two epochs the journal reports.
  await assert.rejects(store.writeTasks([task('t-after')]), (err: unknown) => isCloudaiError(err) && err.code === 'CLOUDAI_STALE_EPOCH' && err.details?.epoch === 1 && err.details?.current === 2)
  assert.notEqual(threadOf(store), thread, 'a new thread took the call')
  assert.deepEqual((await other.loadTasks()).map((x) => x.id), ['t-before'])
})
