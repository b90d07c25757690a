import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import { api, FAST_MASTER_FLAGS, msgHas, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle, type Proc } from '../support/cluster.js'
import { parsePrometheus } from '../support/prometheus.js'

// A real outage of the real SQLite store: another process takes SQLite's write lock
// (BEGIN EXCLUSIVE), so every write of the master fails with SQLITE_BUSY until it lets go. Reads
// still work in WAL mode, which is how the tests compare the store with memory.

const OUTAGE_MS = 30_000
const becameInactive = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} became inactive`)
const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith('Successfully reconnected')

interface WorkerRow {
  worker_id: string
  worker_ip: string
  is_active: number
  registered_at: number
  connected_at: number | null
  last_heartbeat: number | null
  disconnected_at: number | null
  reconnects: number
}

interface ApiWorker {
  worker_id: string
  worker_ip: string
  is_active: boolean
  registered_at: string
  connected_at: string | null
  last_heartbeat: string | null
  disconnected_at: string | null
  reconnects: number
}

interface ApiTask {
  task_id: string
  status: string
  worker_id: string | null
  attempts: number
  exit_code: number | null
  history: unknown[]
  durable: boolean
}

const ms = (iso: string | null): number | null => (iso === null ? null : Date.parse(iso))

/** Workers and tasks as the store holds them, in one comparable shape. */
function storeState(db: Database.Database): { workers: unknown[]; tasks: unknown[] } {
  const workers = (db.prepare('SELECT * FROM workers ORDER BY worker_id').all() as WorkerRow[]).map((r) => ({
    id: r.worker_id, ip: r.worker_ip, active: r.is_active === 1, registered: r.registered_at, connected: r.connected_at, heartbeat: r.last_heartbeat, disconnected: r.disconnected_at, reconnects: r.reconnects,
  }))
  const tasks = (db.prepare('SELECT doc FROM tasks ORDER BY task_id').all() as { doc: string }[]).map((r) => {
    const t = JSON.parse(r.doc) as { id: string; status: string; workerId: string | null; attempts: number; exitCode: number | null; history: unknown[] }
    return { id: t.id, status: t.status, worker: t.workerId, attempts: t.attempts, exit: t.exitCode, transitions: t.history.length }
  })
  return { workers, tasks }
}

/** The same, as the master's memory shows it through the API. */
async function memoryState(master: MasterHandle): Promise<{ workers: unknown[]; tasks: unknown[] }> {
  const workers = ((await api(master.api, '/api/workers')).body.workers as ApiWorker[])
    .map((w) => ({
      id: w.worker_id, ip: w.worker_ip, active: w.is_active, registered: ms(w.registered_at), connected: ms(w.connected_at), heartbeat: ms(w.last_heartbeat), disconnected: ms(w.disconnected_at), reconnects: w.reconnects,
    }))
    .sort((a, b) => a.id.localeCompare(b.id))
  const tasks = ((await api(master.api, '/api/tasks?limit=1000')).body.tasks as ApiTask[])
    .map((t) => ({ id: t.task_id, status: t.status, worker: t.worker_id, attempts: t.attempts, exit: t.exit_code, transitions: t.history.length }))
    .sort((a, b) => a.id.localeCompare(b.id))
  return { workers, tasks }
}

async function metric(master: MasterHandle, name: string): Promise<number> {
  const res = await fetch(`${master.api}/metrics`)
  const family = parsePrometheus(await res.text()).get(name)
  assert.ok(family, `${name} is exported`)
  return family.samples[0]!.value
}

async function register(master: MasterHandle, id: string, port: number): Promise<{ status: number; body: any }> {
  return api(master.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `127.0.0.1:${port}` } })
}

/** A master on `dataDir` with worker-a registered, started and active. */
async function masterWithWorker(t: TestContext, dataDir: string): Promise<{ master: MasterHandle; worker: Proc }> {
  const master = await startMaster(t, { dataDir })
  const port = await reservePort()
  assert.equal((await register(master, 'worker-a', port)).status, 201)
  const worker = await startWorker(t, 'worker-a', port)
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  return { master, worker }
}

test('a 30-second store outage: workers reconnect, heartbeats flow, tasks run; afterwards the store equals memory', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, '--accept-while-degraded'] })
  const [portA, portB, portC] = [await reservePort(), await reservePort(), await reservePort()]
  assert.equal((await register(master, 'worker-a', portA!)).status, 201)
  assert.equal((await register(master, 'worker-b', portB!)).status, 201)
  let workerA = await startWorker(t, 'worker-a', portA!)
  const workerB = await startWorker(t, 'worker-b', portB!)
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  await master.proc.waitForLog(reconnected('worker-b'), 'worker-b active')
  const before = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo before', target_worker_id: 'worker-a' } })
  assert.equal(before.status, 201)
  assert.equal(before.body.durable, true)
  await master.proc.waitForLog(taskFinished(before.body.task_id), 'the first task done')

  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  db.exec('BEGIN EXCLUSIVE')
  const outageStarted = Date.now()
  let mark = master.proc.mark()

  // A registration during the outage: in memory at once, not on disk yet.
  const regC = await register(master, 'worker-c', portC!)
  assert.equal(regC.status, 201)
  assert.equal(regC.body.persisted, false)
  await master.proc.waitForLog(msgHas('Store sqlite failed'), 'the failure logged', { from: mark })

  const health = await api(master.api, '/healthz')
  assert.equal(health.status, 200, 'a store outage alone does not fail the health check')
  assert.equal(health.body.status, 'degraded')
  assert.equal(health.body.store.status, 'degraded')
  assert.ok(health.body.store.backlog >= 1, `backlog ${health.body.store.backlog}`)
  assert.equal(await metric(master, 'cloudai_store_up'), 0)
  assert.ok((await metric(master, 'cloudai_store_backlog')) >= 1)

  // Tasks: accepted in memory only (the flag), flagged, and run; a completion is final, so it is
  // recorded only once the store can hold it: until then the worker is answered UNAVAILABLE.
  const during = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo during', target_worker_id: 'worker-b' } })
  assert.equal(during.status, 202)
  assert.equal(during.body.durable, false)
  await master.proc.waitForLog((l) => l.rpc === 'ReportTaskCompletion' && l.workerId === 'worker-b' && l.code === 'CLOUDAI_STORE_DEGRADED', 'a task run during the outage, its completion refused', { from: mark })
  assert.equal((await api(master.api, `/api/tasks/${during.body.task_id}`)).body.status, 'running', 'not completed before it is durable')

  // Reconnection: worker-a dies and comes back.
  await workerA.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-a'), 'worker-a inactive during the outage', { from: mark })
  mark = master.proc.mark()
  workerA = await startWorker(t, 'worker-a', portA!, { dataDir: tempDir(t) })
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a reconnected during the outage', { from: mark })

  // Heartbeats: worker-b's keep arriving.
  const beat = async (): Promise<string | null> => ((await api(master.api, '/api/workers/worker-b')).body as ApiWorker).last_heartbeat
  const first = await beat()
  await waitUntil(async () => (await beat()) !== first, 'a heartbeat from worker-b during the outage')

  assert.equal((await api(master.api, '/api/workers/worker-c', { method: 'DELETE' })).status, 200)
  assert.equal(master.proc.lines.filter(msgHas('Store sqlite failed')).length, 1, 'logged once, not per retry')
  await waitUntil(async () => (await metric(master, 'cloudai_store_outage_seconds')) * 1000 >= OUTAGE_MS, 'the outage to last 30 s', OUTAGE_MS + 10_000)
  assert.equal((await api(master.api, '/healthz')).body.store.status, 'degraded', 'still down: nothing was written')

  mark = master.proc.mark()
  db.exec('COMMIT')
  await master.proc.waitForLog(msgHas('Store sqlite is answering again'), 'the store recovered', { from: mark })
  assert.ok(Date.now() - outageStarted >= OUTAGE_MS)
  await master.proc.waitForLog(taskFinished(during.body.task_id), 'the completion of the task run during the outage, redelivered and recorded', { from: mark })
  assert.equal((await api(master.api, `/api/tasks/${during.body.task_id}`)).body.durable, true, 'the task accepted during the outage is durable now')

  // Stop the heartbeats so memory holds still, then the store must equal it exactly.
  await workerA.kill('SIGKILL')
  await workerB.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-b'), 'worker-b inactive', { from: mark })
  await waitUntil(async () => (await api(master.api, '/api/workers')).body.workers.every((w: ApiWorker) => !w.is_active) || undefined, 'all workers inactive')
  const memory = await memoryState(master)
  assert.deepEqual(memory.workers.map((w) => (w as { id: string }).id), ['worker-a', 'worker-b'])
  assert.equal(memory.tasks.length, 2)
  await waitUntil(() => {
    try {
      assert.deepEqual(storeState(db), memory)
      return true
    } catch {
      return undefined
    }
  }, 'the store to equal memory')
  assert.equal(await metric(master, 'cloudai_store_outages_total'), 1)
  assert.ok((await metric(master, 'cloudai_store_outage_seconds_total')) >= OUTAGE_MS / 1000)
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})

test('a master killed with -9 during an outage: everything acknowledged as durable is there after the restart', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const first = await masterWithWorker(t, dataDir)
  const worker = first.worker
  let master = first.master
  const done = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo durable' } })
  assert.equal(done.status, 201)
  await master.proc.waitForLog(taskFinished(done.body.task_id), 'the task done')
  const queued = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo later', target_worker_id: 'worker-z' } })
  assert.equal(queued.status, 404, 'an unknown target is refused before anything is stored')

  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  db.exec('BEGIN EXCLUSIVE')
  const mark = master.proc.mark()
  const late = await register(master, 'worker-late', await reservePort())
  assert.equal(late.body.persisted, false)
  await master.proc.waitForLog(msgHas('Store sqlite failed'), 'the outage noticed', { from: mark })
  const refused = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo refused' } })
  assert.equal(refused.status, 503, 'without --accept-while-degraded a task that cannot be made durable is refused')
  assert.equal(refused.body.error.code, 'CLOUDAI_STORE_DEGRADED')
  assert.match(refused.body.error.message, /not accepted.*--accept-while-degraded/)
  assert.equal((await api(master.api, '/api/tasks')).body.total, 1, 'and it is nowhere')

  await master.proc.kill('SIGKILL')
  db.exec('ROLLBACK')
  await worker.kill('SIGKILL')
  master = await startMaster(t, { dataDir, name: 'master-2' })
  const workers = ((await api(master.api, '/api/workers')).body.workers as ApiWorker[]).map((w) => w.worker_id)
  assert.deepEqual(workers, ['worker-a'], 'the registration made before the outage survived; the one never made durable did not')
  const task = (await api(master.api, `/api/tasks/${done.body.task_id}`)).body
  assert.equal(task.status, 'completed')
  assert.equal(task.exit_code, 0)
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})

test('a master started while another process holds the SQLite write lock starts, serves what the store holds, and writes once the lock goes', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const first = await masterWithWorker(t, dataDir)
  const worker = first.worker
  let master = first.master
  const done = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo before' } })
  await master.proc.waitForLog(taskFinished(done.body.task_id), 'the task done')
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })

  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  db.exec('BEGIN EXCLUSIVE')
  master = await startMaster(t, { dataDir, name: 'master-2' })
  const task = (await api(master.api, `/api/tasks/${done.body.task_id}`)).body
  assert.equal(task.status, 'completed', 'the store was read while its write lock was held')
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a back under the new master')
  db.exec('ROLLBACK')
  // A refused submission (503) stores nothing, so asking until one is taken leaves exactly one.
  const after = await waitUntil(async () => {
    const r = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo after' } })
    return r.status === 201 ? r : false
  }, 'a submission accepted once the lock is gone')
  await master.proc.waitForLog(taskFinished(after.body.task_id), 'the new task done')
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
  await worker.kill('SIGTERM')
})

test('a master whose MongoDB cannot be reached starts anyway, on an empty registry, degraded, and says so', { timeout: 60_000 }, async (t) => {
  // Nothing listens on this port: the driver's server selection fails, as with a database that is down.
  const closed = await reservePort()
  const master = await startMaster(t, {
    dataDir: tempDir(t),
    args: [...FAST_MASTER_FLAGS, '--store', `mongodb://cloudai:s3cret-pw@127.0.0.1:${closed}/?directConnection=true`, '--store-server-selection-timeout', '300ms', '--store-connect-timeout', '300ms'],
  })
  const warned = master.proc.lines.find(msgHas('is not answering'))
  assert.ok(warned, 'the start-up log says the store is down')
  assert.match(warned.msg, /starting on an empty registry/)
  assert.doesNotMatch(JSON.stringify(master.proc.lines), /s3cret-pw/, 'the password is never logged')

  const health = await api(master.api, '/healthz')
  assert.equal(health.status, 200)
  assert.equal(health.body.status, 'degraded')
  assert.equal(health.body.store.kind, 'mongodb')
  const reg = await register(master, 'worker-a', await reservePort())
  assert.equal(reg.status, 201, 'registrations go on from memory')
  assert.equal(reg.body.persisted, false)
  const refused = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'true' } })
  assert.equal(refused.status, 503)
  assert.equal(refused.body.error.code, 'CLOUDAI_STORE_DEGRADED')

  const mark = master.proc.mark()
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
  assert.ok(master.proc.lines.slice(mark).some(msgHas('journalled change(s) before shutdown: they are lost')), 'the shutdown says what was never written')
})
