import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { api, FAST_MASTER_FLAGS, msgHas, Proc, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle } from '../support/cluster.js'
import { makeReadOnly, makeWritable, readOnlyCandidate, readOnlySupport } from '../support/readonly-dir.js'

// Issue 16, findings 4 and 5: a data directory belongs to one master or one worker at a time (an
// OS lock the kernel drops when the holder dies), and a master refuses a directory it cannot
// write instead of running on a read-only store. Real processes throughout.

const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith('Successfully reconnected')

async function register(master: MasterHandle, id: string, port: number): Promise<void> {
  const res = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `127.0.0.1:${port}` } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
}

/**
 * A process that must refuse to start: its exit code and what it said on stderr. One still running
 * after 15 s did not refuse (it is killed, and the code is null).
 */
async function refused(proc: Proc): Promise<{ code: number | null; stderr: string }> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 15_000)))
  const exited = await Promise.race([proc.exited, late])
  clearTimeout(timer)
  if (exited === null) {
    await proc.kill('SIGKILL')
    return { code: null, stderr: `${proc.name} did not refuse to start: still running after 15 s\n${proc.stderr}` }
  }
  return { code: exited.code, stderr: proc.stderr }
}

test('a second worker on a data directory in use exits with code 2 naming the first one\'s pid; the first one\'s running task is untouched and completes', { timeout: 60_000 }, async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  await register(master, 'worker-a', port)
  const dataDir = tempDir(t)
  const first = await startWorker(t, 'worker-a', port, { dataDir })
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  const gate = join(tempDir(t), 'go')
  const submitted = await api(master.api, '/api/tasks', { method: 'POST', body: { command: `while [ ! -f ${gate} ]; do sleep 0.05; done; echo finished` } })
  assert.equal(submitted.status, 201)
  const id = submitted.body.task_id as string
  await waitUntil(async () => (await api(master.api, `/api/tasks/${id}`)).body.status === 'running', 'the task running')

  const second = new Proc('worker-b', ['worker', '--id', 'worker-b', '--host', '127.0.0.1', '--port', String(await reservePort()), '--data-dir', dataDir, '--log-level', 'debug'])
  t.after(() => second.kill('SIGKILL'))
  const r = await refused(second)
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, new RegExp(`in use by another cloudai worker \\(pid ${first.child.pid};.*\\(CLOUDAI_DATA_DIR_LOCKED\\)`))
  assert.ok(!second.has(msgHas('left running by an earlier run')), 'nothing was reaped')
  assert.ok(!second.has(msgHas('listening on')), 'no port was bound')

  writeFileSync(gate, '')
  await master.proc.waitForLog(taskFinished(id), 'the task finished')
  const task = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(task.status, 'completed')
  assert.equal(task.attempts, 1)
  assert.equal(task.exit_code, 0)
})

test('a second master on a data directory in use exits with code 2 naming the first one\'s pid; the workers stay with the first', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir })
  const port = await reservePort()
  await register(master, 'worker-a', port)
  const worker = await startWorker(t, 'worker-a', port)
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  const mark = worker.mark()

  const second = new Proc('master-2', ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', '0', '--data-dir', dataDir, '--log-level', 'debug', ...FAST_MASTER_FLAGS])
  t.after(() => second.kill('SIGKILL'))
  const r = await refused(second)
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, new RegExp(`in use by another cloudai master \\(pid ${master.proc.child.pid};.*\\(CLOUDAI_DATA_DIR_LOCKED\\)`))
  assert.match(r.stderr, /start this one with --standby to share it/, 'the refusal names the one way to share the directory')
  assert.ok(!second.has((l) => l.step === 1), 'the store was not opened')
  assert.ok(!second.has((l) => l.step === 6), 'no port was bound')

  // The worker heard from nobody else and still follows the first master.
  const beat = async (): Promise<string | null> => (await api(master.api, '/api/workers/worker-a')).body.last_heartbeat as string | null
  const last = await beat()
  await waitUntil(async () => (await beat()) !== last, 'a heartbeat from worker-a to the first master')
  assert.ok(!worker.has(msgHas('MasterRegister from'), mark), 'no MasterRegister reached the worker')
  assert.equal((await api(master.api, '/api/workers/worker-a')).body.is_active, true)
})

test('a standby shares a master\'s data directory (--standby is the one way); a second standby on it exits with code 2', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const lease = ['--lease-renew', '100ms', '--lease-timeout', '1s']
  await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, ...lease, '--master-id', 'm-a'] })
  const standby = await startMaster(t, { dataDir, name: 'standby', args: [...FAST_MASTER_FLAGS, ...lease, '--master-id', 'm-b', '--standby'] })
  assert.equal((await api(standby.api, '/api/status')).body.role, 'standby')

  const second = new Proc('standby-2', ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', '0', '--data-dir', dataDir, '--log-level', 'debug', ...FAST_MASTER_FLAGS, ...lease, '--master-id', 'm-c', '--standby'])
  t.after(() => second.kill('SIGKILL'))
  const r = await refused(second)
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, new RegExp(`in use by another cloudai standby \\(pid ${standby.proc.child.pid};.*\\(CLOUDAI_DATA_DIR_LOCKED\\)`))
})

test('after kill -9 of the holder a new worker and a new master start at once on the same data directories, and hold them', { timeout: 60_000 }, async (t) => {
  const masterDir = tempDir(t)
  let master = await startMaster(t, { dataDir: masterDir })
  await master.proc.kill('SIGKILL')
  master = await startMaster(t, { dataDir: masterDir, name: 'master-2' })
  const port = await reservePort()
  await register(master, 'worker-a', port)
  const workerDir = tempDir(t)
  const first = await startWorker(t, 'worker-a', port, { dataDir: workerDir })
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  // Killed while it runs a task: the task's process outlives it and must not keep the lock.
  const submitted = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'sleep 30' } })
  assert.equal(submitted.status, 201)
  await waitUntil(async () => (await api(master.api, `/api/tasks/${submitted.body.task_id}`)).body.status === 'running', 'the task running')
  await first.kill('SIGKILL')
  const again = await startWorker(t, 'worker-a', port, { dataDir: workerDir, name: 'worker-a-2' })
  await again.waitForLog(msgHas('left running by an earlier run'), 'the orphan of the killed worker reaped')

  // The new processes hold the directories: a third of each is refused, naming them.
  const third = new Proc('worker-3', ['worker', '--id', 'worker-c', '--host', '127.0.0.1', '--port', String(await reservePort()), '--data-dir', workerDir])
  t.after(() => third.kill('SIGKILL'))
  const r = await refused(third)
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, new RegExp(`\\(pid ${again.child.pid};`))
  const thirdMaster = new Proc('master-3', ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', '0', '--data-dir', masterDir])
  t.after(() => thirdMaster.kill('SIGKILL'))
  const m = await refused(thirdMaster)
  assert.equal(m.code, 2, m.stderr)
  assert.match(m.stderr, new RegExp(`\\(pid ${master.proc.child.pid};`))
})

test('a master restarted on a data directory it cannot write exits with code 2 saying so, and starts once it is writable', { timeout: 60_000 }, async (t) => {
  const s = readOnlySupport()
  if (!s.ok) return t.skip(s.reason)
  const dataDir = readOnlyCandidate(t)
  // A directory the master used before, left by a kill -9 (the -wal and -shm files still there,
  // so SQLite would open the store read-only): only writing is refused.
  const master = await startMaster(t, { dataDir })
  await master.proc.kill('SIGKILL')
  makeReadOnly(dataDir)
  const again = new Proc('master-ro', ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', '0', '--data-dir', dataDir, '--log-level', 'debug'])
  t.after(() => again.kill('SIGKILL'))
  const r = await refused(again)
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, new RegExp(`the data directory ${dataDir} cannot be written .*\\(CLOUDAI_DATA_DIR_READONLY\\)`))
  assert.ok(!again.has((l) => l.step === 1), 'the store was not opened')

  makeWritable(dataDir)
  const third = await startMaster(t, { dataDir, name: 'master-rw' })
  assert.equal((await api(third.api, '/healthz')).body.store.status, 'ok')
})

test('a master on its first start in a data directory it cannot write exits with code 2 saying so, before it opens the store, and starts once it is writable', { timeout: 60_000 }, async (t) => {
  const s = readOnlySupport()
  if (!s.ok) return t.skip(s.reason)
  // Fresh: no master.key yet, which the master would create before anything else.
  const dataDir = readOnlyCandidate(t)
  makeReadOnly(dataDir)
  const first = new Proc('master-ro-fresh', ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', '0', '--data-dir', dataDir, '--log-level', 'debug'])
  t.after(() => first.kill('SIGKILL'))
  const r = await refused(first)
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, new RegExp(`the directory ${dataDir} cannot be written .*its key ${join(dataDir, 'master.key')} .*\\(CLOUDAI_DATA_DIR_READONLY\\)`))
  assert.ok(!first.has((l) => l.step === 1), 'the store was not opened')

  makeWritable(dataDir)
  const again = await startMaster(t, { dataDir, name: 'master-rw-fresh' })
  assert.ok(again.proc.has(msgHas('Master key created')), 'the key is created once the directory is writable')
  assert.equal((await api(again.api, '/healthz')).body.store.status, 'ok')
})

test('a running master whose data directory turns read-only and then writable again: the store is healthy and equals memory, without a restart', { timeout: 60_000 }, async (t) => {
  const s = readOnlySupport()
  if (!s.ok) return t.skip(s.reason)
  const dataDir = readOnlyCandidate(t)
  const master = await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, '--accept-while-degraded'] })
  const port = await reservePort()
  await register(master, 'worker-a', port)
  const worker = await startWorker(t, 'worker-a', port)
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')

  makeReadOnly(dataDir)
  const during = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo during' } })
  assert.ok(during.status === 201 || during.status === 202, JSON.stringify(during.body))
  await master.proc.waitForLog(taskFinished(during.body.task_id), 'a task run while the directory is read-only')
  await register(master, 'worker-b', await reservePort())
  makeWritable(dataDir)

  const after = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo after' } })
  assert.equal(after.status, 201, 'durable again')
  await master.proc.waitForLog(taskFinished(after.body.task_id), 'a task run afterwards')
  await waitUntil(async () => (await api(master.api, '/healthz')).body.store.status === 'ok' || undefined, 'the store healthy')
  await worker.kill('SIGKILL')
  await waitUntil(async () => (await api(master.api, '/api/workers')).body.workers.every((w: { is_active: boolean }) => !w.is_active) || undefined, 'all workers inactive')

  const db = new Database(join(dataDir, 'cloudai.db'), { readonly: true })
  t.after(() => db.close())
  const memory = async (): Promise<unknown> => {
    const tasks = ((await api(master.api, '/api/tasks?limit=1000')).body.tasks as { task_id: string; status: string; history: unknown[] }[]).map((x) => [x.task_id, x.status, x.history.length]).sort()
    const workers = ((await api(master.api, '/api/workers')).body.workers as { worker_id: string; is_active: boolean }[]).map((w) => [w.worker_id, w.is_active]).sort()
    return { tasks, workers }
  }
  const stored = (): unknown => {
    const tasks = (db.prepare('SELECT doc FROM tasks').all() as { doc: string }[]).map((r) => JSON.parse(r.doc) as { id: string; status: string; history: unknown[] }).map((x) => [x.id, x.status, x.history.length]).sort()
    const workers = (db.prepare('SELECT worker_id, is_active FROM workers').all() as { worker_id: string; is_active: number }[]).map((w) => [w.worker_id, w.is_active === 1]).sort()
    return { tasks, workers }
  }
  const expected = await memory()
  await waitUntil(() => {
    try {
      assert.deepEqual(stored(), expected)
      return true
    } catch {
      return undefined
    }
  }, 'the store to equal memory')
  assert.equal((await api(master.api, '/healthz')).body.store.status, 'ok')
})
