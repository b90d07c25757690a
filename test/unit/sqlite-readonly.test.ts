import assert from 'node:assert/strict'
import { test } from 'node:test'
import type Database from 'better-sqlite3'
import { Registry } from '../../src/master/registry.js'
import { isCloudaiError } from '../../src/shared/errors.js'
import { StoreJournal } from '../../src/store/journal.js'
import { SqliteConnection } from '../../src/store/sqlite/connection.js'
import { SqliteStore } from '../../src/store/sqlite/store.js'
import { memoryLogger } from '../support/log.js'
import { makeReadOnly, makeWritable, readOnlyCandidate, readOnlySupport } from '../support/readonly-dir.js'

// Issue 16, finding 5: SQLite opens a database it cannot write read-only without a word, and such a
// connection fails every write for good. The store refuses that at open, and replaces a
// connection that fails for being unable to write.

/**
 * Makes the store's own connection read-only, as one SQLite opened in a read-only directory is:
 * every write fails with SQLITE_READONLY ("attempt to write a readonly database") until it is closed.
 */
function turnReadOnly(store: SqliteConnection): void {
  const db = (store as unknown as { db: Database.Database | null }).db
  assert.ok(db, 'the store is open')
  db.pragma('query_only = 1')
}

test('the SQLite store refuses to open in a directory it cannot write, and opens once it can', async (t) => {
  const s = readOnlySupport()
  if (!s.ok) return t.skip(s.reason)
  const dir = readOnlyCandidate(t, 'cloudai-sqlite-ro-')
  const store = new SqliteStore(dir)
  await store.open()
  await store.close()
  makeReadOnly(dir)
  await assert.rejects(store.open(), (err: unknown) => isCloudaiError(err) && err.code === 'CLOUDAI_DATA_DIR_READONLY' && /cannot be written/.test(err.message))
  makeWritable(dir)
  await store.open()
  await store.ping()
  await store.close()
})

test('a SQLite connection that fails for being read-only is replaced at the next call, and the write then lands', async (t) => {
  // The connection the store thread runs, here in this thread so that the test can spoil it.
  const store = new SqliteConnection(readOnlyCandidate(t, 'cloudai-sqlite-ro-'))
  await store.open()
  t.after(() => store.close())
  const registry = new Registry()
  const w = registry.register('w1', '127.0.0.1:1', 0).worker
  turnReadOnly(store)
  await assert.rejects(store.writeWorkers({ upserts: [w], deletes: [] }), (err: unknown) => (err as { code?: string }).code === 'SQLITE_READONLY')
  await store.writeWorkers({ upserts: [w], deletes: [] })
  assert.deepEqual((await store.loadWorkers()).map((x) => x.id), ['w1'])
})

test('the journal heals a store whose connection turned read-only on its next retry, without a restart', { timeout: 15_000 }, async (t) => {
  const store = new SqliteConnection(readOnlyCandidate(t, 'cloudai-sqlite-ro-'))
  await store.open()
  const registry = new Registry()
  const { log } = memoryLogger()
  const journal = new StoreJournal(store, registry, { log, limit: 1000, heartbeatFlushMs: 1000, retryBaseMs: 10, retryCapMs: 50 })
  journal.start(true)
  t.after(async () => {
    await journal.close()
    await store.close()
  })
  turnReadOnly(store)
  registry.register('w1', '127.0.0.1:1', 0)
  const recovered = new Promise((resolve) => journal.once('recovered', resolve))
  assert.equal(await journal.sync(), false, 'the first write failed')
  assert.match(journal.status().lastError ?? '', /readonly/)
  await recovered
  assert.equal(journal.status().healthy, true)
  assert.equal(journal.status().backlog, 0)
  assert.deepEqual((await store.loadWorkers()).map((x) => x.id), ['w1'])
})
