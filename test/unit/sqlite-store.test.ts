import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../src/store/sqlite.js'
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
    runningTasks: [{ taskId: 't1', cpu: 1, memory: 2, gpu: 0, status: 'running' }],
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
