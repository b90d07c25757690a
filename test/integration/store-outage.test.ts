import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { api, msgHas, reservePort, startMaster, startWorker, tempDir, type LogLine } from '../support/cluster.js'

const becameInactive = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} became inactive`)

interface Row {
  worker_id: string
  worker_ip: string
  is_active: number
}

test('a store that fails during the run loses nothing once it answers again', async (t) => {
  const dataDir = tempDir(t)
  const portA = await reservePort()
  let master = await startMaster(t, { dataDir })
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-a', worker_ip: `127.0.0.1:${portA}` } })).status, 201)
  const workerA = await startWorker(t, 'worker-a', portA)
  await master.proc.waitForLog((l) => l.workerId === 'worker-a' && l.msg.startsWith('Successfully reconnected'), 'worker-a active')

  // A real failure from outside: another process holds SQLite's write lock, so every write of the
  // master fails with SQLITE_BUSY until it lets go.
  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  db.exec('BEGIN EXCLUSIVE')

  const portB = await reservePort()
  let mark = master.proc.mark()
  const regB = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-b', worker_ip: `127.0.0.1:${portB}` } })
  assert.equal(regB.status, 201, 'the master keeps working from memory')
  assert.equal(regB.body.persisted, false, 'and says the registration is not on disk yet')
  await master.proc.waitForLog(msgHas('Store sqlite write failed'), 'the failure logged once', { from: mark })
  const regC = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-c', worker_ip: `127.0.0.1:${portB + 1 > 65535 ? portB - 1 : portB + 1}` } })
  assert.equal(regC.status, 201)
  assert.equal((await api(master.api, '/api/workers/worker-c', { method: 'DELETE' })).status, 200)
  await workerA.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-a'), 'worker-a inactive during the outage', { from: mark })
  const status = (await api(master.api, '/api/status')).body
  assert.equal(status.store.healthy, false)
  assert.ok(status.store.pending_writes >= 1)
  assert.equal(master.proc.lines.filter(msgHas('Store sqlite write failed')).length, 1, 'logged once, not per retry')

  mark = master.proc.mark()
  db.exec('COMMIT')
  await master.proc.waitForLog(msgHas('Store sqlite is answering again'), 'the store recovered', { from: mark })

  const rows = db.prepare('SELECT worker_id, worker_ip, is_active FROM workers ORDER BY worker_id').all() as Row[]
  assert.deepEqual(rows, [
    { worker_id: 'worker-a', worker_ip: `127.0.0.1:${portA}`, is_active: 0 },
    { worker_id: 'worker-b', worker_ip: `127.0.0.1:${portB}`, is_active: 0 },
  ])
  const memory = ((await api(master.api, '/api/workers')).body.workers as { worker_id: string; worker_ip: string; is_active: boolean }[])
    .map((w) => ({ worker_id: w.worker_id, worker_ip: w.worker_ip, is_active: w.is_active ? 1 : 0 }))
    .sort((a, b) => a.worker_id.localeCompare(b.worker_id))
  assert.deepEqual(rows, memory, 'the store equals memory')

  // And it survives a crash of the master right after.
  await master.proc.kill('SIGKILL')
  master = await startMaster(t, { dataDir, name: 'master-2' })
  const ids = ((await api(master.api, '/api/workers')).body.workers as { worker_id: string }[]).map((w) => w.worker_id).sort()
  assert.deepEqual(ids, ['worker-a', 'worker-b'])
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})
