import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import Database from 'better-sqlite3'
import { LEADER_GRPC_METADATA } from '../../src/shared/leadership.js'
import { api, FAST_MASTER_FLAGS, msgHas, Proc, registerWorker, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle } from '../support/cluster.js'
import { RawClient } from '../support/grpc-client.js'

// Issue 19: two masters on one SQLite data directory, one leading by the store's lease and one
// standby. Real processes; short leases (renewed every 100 ms, lost after 1 s) so that a takeover
// takes about a second. Nothing here waits a fixed time: every wait is on a log line or a state.

const LEASE = ['--lease-renew', '100ms', '--lease-timeout', '1s']

function leader(t: TestContext, dataDir: string, id = 'm-a'): Promise<MasterHandle> {
  return startMaster(t, { dataDir, name: id, args: [...FAST_MASTER_FLAGS, ...LEASE, '--master-id', id] })
}

function standby(t: TestContext, dataDir: string, id = 'm-b'): Promise<MasterHandle> {
  return startMaster(t, { dataDir, name: id, args: [...FAST_MASTER_FLAGS, ...LEASE, '--master-id', id, '--standby'] })
}

const tookOver = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('Took over as leader')
const waitingForLease = msgHas('Standby: waiting for the lease')

/** A leader and its standby on one data directory, and worker w-1 active on the leader. */
async function pairWithWorker(t: TestContext): Promise<{ dataDir: string; a: MasterHandle; b: MasterHandle }> {
  const dataDir = tempDir(t)
  const a = await leader(t, dataDir)
  const b = await standby(t, dataDir)
  await b.proc.waitForLog(waitingForLease, 'the standby waiting')
  const port = await reservePort()
  const token = await registerWorker(a.api, 'w-1', `127.0.0.1:${port}`)
  await startWorker(t, 'w-1', port, { token })
  await a.proc.waitForLog((l) => l.workerId === 'w-1' && msgHas('Successfully reconnected')(l), 'w-1 active on the leader')
  return { dataDir, a, b }
}

test('a standby answers /api/status and /healthz as a standby naming the leader, every other route 503 CLOUDAI_NOT_LEADER, and workers UNAVAILABLE naming the leader\'s gRPC address', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const a = await leader(t, dataDir)
  const b = await standby(t, dataDir)
  await b.proc.waitForLog(waitingForLease, 'the standby waiting')

  const leaderStatus = await api(a.api, '/api/status')
  assert.equal(leaderStatus.status, 200)
  assert.equal(leaderStatus.body.role, 'leader')
  assert.equal(leaderStatus.body.epoch, 1)
  assert.equal(leaderStatus.body.leader_api, a.api)
  assert.equal(leaderStatus.body.leader_grpc, `127.0.0.1:${a.grpcPort}`)

  const status = await api(b.api, '/api/status')
  assert.equal(status.status, 200)
  assert.deepEqual({ role: status.body.role, epoch: status.body.epoch, leader_api: status.body.leader_api, leader_grpc: status.body.leader_grpc }, { role: 'standby', epoch: 1, leader_api: a.api, leader_grpc: `127.0.0.1:${a.grpcPort}` })
  const health = await api(b.api, '/healthz')
  assert.equal(health.status, 200)
  assert.equal(health.body.role, 'standby')
  assert.equal(health.body.leader_api, a.api)

  for (const [method, path, body] of [['GET', '/api/workers'], ['GET', '/api/tasks'], ['POST', '/api/tasks', { command: 'true' }], ['POST', '/api/workers', { worker_id: 'w', worker_ip: '127.0.0.1:1' }], ['GET', '/metrics']] as const) {
    const res = await api(b.api, path, { method, ...(body ? { body } : {}) })
    assert.equal(res.status, 503, `${method} ${path}: ${JSON.stringify(res.body)}`)
    assert.equal(res.body.error.code, 'CLOUDAI_NOT_LEADER', `${method} ${path}`)
    assert.equal(res.body.error.details.leader, a.api, `${method} ${path} names the leader's API`)
  }
  // Nothing was submitted through the standby: the leader has no task.
  assert.equal((await api(a.api, '/api/tasks')).body.total, 0)

  const client = new RawClient(t, `127.0.0.1:${b.grpcPort}`)
  const refused = await client.call('RegisterWorker', { worker_id: 'w-1', worker_ip: '127.0.0.1:1', total_cpu: 1, total_memory: 1, total_storage: 1, total_gpu: 0 }).then(
    () => assert.fail('the standby accepted RegisterWorker'),
    (err: grpc.ServiceError) => err,
  )
  assert.equal(refused.code, grpc.status.UNAVAILABLE)
  assert.equal(refused.metadata.get('cloudai-error-code')[0], 'CLOUDAI_NOT_LEADER')
  assert.equal(refused.metadata.get(LEADER_GRPC_METADATA)[0], `127.0.0.1:${a.grpcPort}`)
  const beat = await client.stream([{ worker_id: 'w-1', cpu_usage: 0, memory_usage: 0, storage_usage: 0, gpu_usage: 0, running_tasks: [] }])
  assert.equal(beat.code, grpc.status.UNAVAILABLE)
  assert.equal(beat.metadata.get(LEADER_GRPC_METADATA)[0], `127.0.0.1:${a.grpcPort}`)
})

test('SIGTERM of the leader releases the lease: the standby takes over and leads at the next epoch', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const a = await leader(t, dataDir)
  const b = await standby(t, dataDir)
  await b.proc.waitForLog(waitingForLease, 'the standby waiting')
  const submitted = await api(a.api, '/api/tasks', { method: 'POST', body: { command: 'true', name: 'before-the-switch' } })
  assert.equal(submitted.status, 201)

  const exited = await a.proc.kill('SIGTERM')
  assert.equal(exited.code, 0)
  assert.ok(a.proc.has(msgHas('Lease released (epoch 1)')), 'the leader let its lease go')
  const took = await b.proc.waitForLog(tookOver, 'the standby taking over')
  assert.equal(took.epoch, 2)
  const status = await api(b.api, '/api/status')
  assert.equal(status.body.role, 'leader')
  assert.equal(status.body.epoch, 2)
  assert.equal(status.body.leader_api, b.api)
  // What the first leader held is the new leader's now.
  const tasks = await api(b.api, '/api/tasks')
  assert.deepEqual(tasks.body.tasks.map((x: { name: string }) => x.name), ['before-the-switch'])
})

test('kill -9 of the leader with a worker and tasks: the standby leads after the lease timeout, the worker is active on it, every task completes once, none requeued by the takeover; a master started without --standby then exits 2 naming the holder', { timeout: 60_000 }, async (t) => {
  const { dataDir, a, b } = await pairWithWorker(t)

  // Each run appends to a file of its own task: how often it really ran, counted outside the masters.
  const runsDir = tempDir(t, 'cloudai-runs-')
  const ids: string[] = []
  for (let i = 0; i < 6; i++) {
    const res = await api(a.api, '/api/tasks', { method: 'POST', body: { command: `echo run >> ${join(runsDir, String(i))}; sleep 1`, name: `t-${i}`, req_cpu: 0 } })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    ids.push(res.body.task_id as string)
  }
  await waitUntil(async () => (await api(a.api, '/api/tasks?status=running')).body.total > 0, 'a task running on the leader')
  await a.proc.kill('SIGKILL')

  await b.proc.waitForLog(tookOver, 'the standby taking over', { timeoutMs: 30_000 })
  await waitUntil(async () => (await api(b.api, '/api/workers/w-1')).body.is_active === true, 'w-1 active on the new leader', 30_000)
  await waitUntil(async () => {
    const { body } = await api(b.api, '/api/tasks?limit=100')
    return body.tasks.every((x: { status: string }) => x.status === 'completed') && body.total === ids.length
  }, 'every task completed on the new leader', 30_000)

  for (const [i, id] of ids.entries()) {
    const done = [...a.proc.lines, ...b.proc.lines].filter((l) => taskFinished(id)(l))
    assert.equal(done.length, 1, `task ${id} completed once: ${JSON.stringify(done)}`)
    const runs = readFileSync(join(runsDir, String(i)), 'utf8').split('\n').filter(Boolean)
    assert.equal(runs.length, 1, `task ${id} ran once`)
    // A task the killed leader had placed but whose AssignTask never reached the worker (attempts
    // 0: no run started) must be placed again, by whoever leads: the crash's doing, not the
    // takeover's. A run that had started is never requeued by the takeover.
    const requeued = b.proc.lines.filter((l) => l.taskId === id && typeof l.msg === 'string' && /requeued/.test(l.msg) && l.attempts !== 0)
    assert.deepEqual(requeued, [], `task ${id} was not requeued by the takeover`)
  }
  assert.ok(ids.some((id) => b.proc.has(taskFinished(id))), 'tasks running at the kill completed on the new leader')
  assert.ok(!b.proc.has((l) => l.workerId === 'w-1' && msgHas('became inactive')(l)), 'the takeover marked no worker inactive')

  // The leader now is b, whose lease a third master without --standby must not take.
  const c = new Proc('m-c', ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', '0', '--data-dir', dataDir, '--log-level', 'debug', ...FAST_MASTER_FLAGS, ...LEASE, '--master-id', 'm-c'])
  t.after(() => c.kill('SIGKILL'))
  const { code } = await c.exited
  assert.equal(code, 2, c.stderr)
  assert.match(c.stderr, /held by master m-b .*\(CLOUDAI_LEASE_HELD\)/s)
  assert.equal((await api(b.api, '/api/status')).body.role, 'leader', 'the leader kept leading')
})

test('a leader paused with SIGSTOP past its lease and continued stops acting: its API answers 503 naming the new leader, none of its writes after that reached the store, and it is a standby again that leads when its successor stops', { timeout: 60_000 }, async (t) => {
  const { dataDir, a, b } = await pairWithWorker(t)

  // SQLite: a process stopped inside a write transaction keeps the write lock, and nobody can take
  // the lease until it continues (safe, but no takeover to test): stop it again until it is paused
  // outside one, which a write lock the test can take shows.
  t.after(() => a.proc.child.kill('SIGCONT'))
  const probe = new Database(join(dataDir, 'cloudai.db'), { fileMustExist: true, timeout: 0 })
  t.after(() => probe.close())
  const stopped = (): boolean => readFileSync(`/proc/${a.proc.child.pid}/stat`, 'utf8').split(') ')[1]?.startsWith('T') === true
  await waitUntil(async () => {
    a.proc.child.kill('SIGSTOP')
    await waitUntil(stopped, 'the leader stopped')
    try {
      probe.exec('BEGIN IMMEDIATE')
      probe.exec('ROLLBACK')
      return true
    } catch {
      a.proc.child.kill('SIGCONT')
      return false
    }
  }, 'the leader stopped outside a write transaction')
  await b.proc.waitForLog(tookOver, 'the standby taking over', { timeoutMs: 30_000 })
  await waitUntil(async () => (await api(b.api, '/api/workers/w-1')).body.is_active === true, 'w-1 active on the new leader', 30_000)
  // Sent while the old leader is stopped: it reads it only after SIGCONT.
  const late = api(a.api, '/api/tasks', { method: 'POST', body: { command: 'true', name: 'from-the-deposed' } })
  const mark = a.proc.mark()
  a.proc.child.kill('SIGCONT')

  await a.proc.waitForLog(msgHas('lost the lease (epoch 1)'), 'the old leader noticing', { from: mark })
  const answer = await late
  assert.equal(answer.status, 503, JSON.stringify(answer.body))
  assert.equal(answer.body.error.code, 'CLOUDAI_NOT_LEADER')
  await waitUntil(async () => (await api(a.api, '/api/workers')).body?.error?.details?.leader === b.api, 'the old leader naming the new one')
  const status = await api(a.api, '/api/status')
  assert.equal(status.body.role, 'standby')
  assert.equal(status.body.leader_api, b.api)

  // What the old leader tried to write after the takeover, it logged as refused (stale epoch);
  // none of it is in the store: no task of its, and the new leader's state of the worker stands.
  const refusedWrites = a.proc.lines.slice(mark).filter((l) => /CLOUDAI_STALE_EPOCH|write refused/.test(JSON.stringify(l))).length
  t.diagnostic(`writes of the deposed leader refused by the store: ${refusedWrites}`)
  const db = new Database(join(dataDir, 'cloudai.db'), { readonly: true, fileMustExist: true })
  t.after(() => db.close())
  const mine = db.prepare("SELECT COUNT(*) AS n FROM tasks WHERE doc LIKE '%from-the-deposed%'").get() as { n: number }
  assert.equal(mine.n, 0, 'no task of the deposed leader in the store')
  assert.equal((await api(b.api, '/api/tasks')).body.total, 0)
  // The old leader saw no heartbeat of w-1 while stopped: a write of it as inactive would show here.
  await a.proc.waitForLog(msgHas('Stopping the queue, the reconnection monitor'), 'the old leader stopping its parts', { from: mark })
  const row = db.prepare('SELECT is_active FROM workers WHERE worker_id = ?').get('w-1') as { is_active: number }
  assert.equal(row.is_active, 1, 'the store still has w-1 active, as the new leader wrote it')
  assert.equal((await api(b.api, '/api/workers/w-1')).body.is_active, true)

  // It is a standby again (a new master in the same process, on the same ports), and leads once
  // its successor stops.
  await a.proc.waitForLog(waitingForLease, 'the old leader back as a standby', { from: mark })
  assert.equal((await api(a.api, '/api/status')).body.role, 'standby')
  await b.proc.kill('SIGTERM')
  const again = await a.proc.waitForLog(tookOver, 'the old leader leading again', { from: mark })
  assert.equal(again.epoch, 3)
  assert.equal((await api(a.api, '/api/status')).body.role, 'leader')
  await waitUntil(async () => (await api(a.api, '/api/workers/w-1')).body.is_active === true, 'w-1 active on the old leader again', 30_000)
})
