import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import Database from 'better-sqlite3'
import { masterProof } from '../../src/shared/worker-credential.js'
import { api, FAST_MASTER_FLAGS, msgHas, registerWorker, reservePort, runCli, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type Proc } from '../support/cluster.js'
import { RawClient } from '../support/grpc-client.js'

// Issue 15, identity: each finding that can be shown on loopback, against the real processes.
// The attacker is a raw grpc-js client with the project's proto; it holds whatever the finding
// says it holds (the cluster token, another worker's token, the store's contents). Every wait is
// on a log line, the API or a file; nothing sleeps a fixed time.

const CLUSTER = 'cluster-token-for-identity-tests-0123456789'
const NOT_A_TOKEN = `cwt1_${'A'.repeat(43)}`

const active = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)
const running = (id: string, worker: string) => (l: LogLine): boolean => l.taskId === id && l.msg.startsWith(`Task ${id} assigned to worker ${worker} and running`)
const cancelling = (id: string) => (l: LogLine): boolean => l.msg.startsWith(`Cancelling task ${id}`)
const registered = (master: string) => (l: LogLine): boolean => l.msg.startsWith(`Registered with master ${master}`)

interface WorkerJson {
  is_active: boolean
  total_cpu: number | null
  total_memory: number | null
  credential: { issued_at: string; presented_at: string | null; required: boolean; previous_valid_until: string | null } | null
}

interface TaskJson {
  status: string
  worker_id: string | null
  attempts: number
  logs: string
  history: { status: string }[]
}

async function submit(base: string, body: object): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

const workerOf = async (base: string, id: string): Promise<WorkerJson> => (await api<WorkerJson>(base, `/api/workers/${id}`)).body
const taskOf = async (base: string, id: string): Promise<TaskJson> => (await api<TaskJson>(base, `/api/tasks/${id}`)).body

function noTokenIn(procs: Proc[], tokens: string[]): void {
  for (const p of procs) {
    const text = p.lines.map((l) => JSON.stringify(l)).join('\n') + p.stderr
    for (const token of tokens) assert.ok(!text.includes(token), `${p.name} never logs a worker token`)
  }
}

test('with tokens in use a worker can be only itself: RegisterWorker, heartbeats and completions for worker-1 without its token are refused and change nothing, for cluster-token holders too', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), env: { CLOUDAI_CLUSTER_TOKEN: CLUSTER } })
  const masterAddr = `127.0.0.1:${master.grpcPort}`
  const [p1, p2, p3] = [await reservePort(), await reservePort(), await reservePort()]
  const t1 = await registerWorker(master.api, 'worker-1', `127.0.0.1:${p1}`)
  const t2 = await registerWorker(master.api, 'worker-2', `127.0.0.1:${p2}`)
  assert.notEqual(t1, t2)
  assert.equal((await workerOf(master.api, 'worker-1')).credential?.presented_at, null)
  const raw = new RawClient(t, masterAddr)
  // Every attacker below holds the cluster token: it proves membership, not identity.
  const member = { clusterToken: CLUSTER }

  // The quick start: a worker that never presented a token may register without one from loopback.
  await registerWorker(master.api, 'worker-3', `127.0.0.1:${p3}`)
  const quick = await raw.call('RegisterWorker', { worker_id: 'worker-3', worker_ip: `127.0.0.1:${p3}`, total_cpu: 1, total_memory: 1, total_storage: 1, total_gpu: 0 }, member)
  assert.equal(quick.success, true)

  const w1 = await startWorker(t, 'worker-1', p1, { master: masterAddr, token: t1, args: ['--cluster-token', CLUSTER] })
  const w2 = await startWorker(t, 'worker-2', p2, { master: masterAddr, token: t2, args: ['--cluster-token', CLUSTER] })
  await master.proc.waitForLog(active('worker-1'), 'worker-1 active')
  await master.proc.waitForLog(active('worker-2'), 'worker-2 active')
  const real = await workerOf(master.api, 'worker-1')
  assert.notEqual(real.credential?.presented_at, null, 'worker-1 presented its token')
  assert.equal(real.credential?.required, true)

  const taskId = await submit(master.api, { command: 'sleep 60', target_worker_id: 'worker-1' })
  await master.proc.waitForLog(running(taskId, 'worker-1'), 'the task runs on worker-1')

  // RegisterWorker as worker-1 with a million cores: without a token, with a made-up one, with worker-2's.
  const fake = { worker_id: 'worker-1', worker_ip: '127.0.0.1:1', total_cpu: 1e6, total_memory: 1e6, total_storage: 1, total_gpu: 0 }
  const noToken = await raw.refusal('RegisterWorker', fake, member)
  assert.deepEqual([noToken.code, noToken.cloudai], [grpc.status.UNAUTHENTICATED, 'CLOUDAI_WORKER_TOKEN_REQUIRED'], 'presented once: refused without it, from loopback too')
  const madeUp = await raw.refusal('RegisterWorker', fake, { ...member, token: NOT_A_TOKEN })
  assert.deepEqual([madeUp.code, madeUp.cloudai], [grpc.status.UNAUTHENTICATED, 'CLOUDAI_WORKER_TOKEN_INVALID'])
  const other = await raw.refusal('RegisterWorker', fake, { ...member, token: t2 })
  assert.deepEqual([other.code, other.cloudai], [grpc.status.PERMISSION_DENIED, 'CLOUDAI_WRONG_WORKER'])
  const after = await workerOf(master.api, 'worker-1')
  assert.deepEqual([after.total_cpu, after.total_memory], [real.total_cpu, real.total_memory], 'its specs are unchanged')

  // Heartbeats as worker-1 listing nothing (what requeued its task): with worker-2's token, unary and streamed.
  const empty = { worker_id: 'worker-1', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] }
  for (let i = 0; i < 3; i++) assert.equal((await raw.refusal('SendHeartbeat', empty, { ...member, token: t2 })).cloudai, 'CLOUDAI_WRONG_WORKER')
  assert.equal((await raw.refusal('SendHeartbeat', empty, member)).cloudai, 'CLOUDAI_WORKER_TOKEN_REQUIRED')
  const streamed = await raw.stream([empty, empty, empty], { ...member, token: t2 })
  assert.equal(streamed.code, grpc.status.PERMISSION_DENIED)
  assert.equal(streamed.metadata.get('cloudai-error-code')[0], 'CLOUDAI_WRONG_WORKER')

  // A forged completion of its task, attempt 0: without a token, and with worker-2's.
  const forged = { task_id: taskId, worker_id: 'worker-1', status: 'completed', logs: 'FORGED', attempt: 0 }
  assert.equal((await raw.refusal('ReportTaskCompletion', forged, member)).cloudai, 'CLOUDAI_WORKER_TOKEN_REQUIRED')
  assert.equal((await raw.refusal('ReportTaskCompletion', forged, { ...member, token: t2 })).cloudai, 'CLOUDAI_WRONG_WORKER')

  const task = await taskOf(master.api, taskId)
  assert.equal(task.status, 'running', 'not completed, not requeued')
  assert.equal(task.attempts, 1)
  assert.deepEqual(task.history.map((h) => h.status), ['queued', 'assigned', 'running'])
  assert.notEqual(task.logs, 'FORGED')
  assert.equal(w1.has(cancelling(taskId)), false, 'the real run goes on')
  assert.equal((await workerOf(master.api, 'worker-1')).is_active, true)

  // The real worker is still itself: the operator's cancel reaches it (with the master's proof).
  assert.equal((await api(master.api, `/api/tasks/${taskId}`, { method: 'DELETE' })).status, 200)
  await w1.waitForLog(cancelling(taskId), 'worker-1 stops the cancelled task')

  // Refusals are logged, once a minute per address: all of the above came from 127.0.0.1.
  assert.equal(master.proc.lines.filter((l) => l.level === 40 && l.msg.startsWith('Refused ') && l.msg.includes('from 127.0.0.1:')).length, 1)

  // Unregistering revokes at once: worker-2's token opens nothing any more.
  assert.equal((await api(master.api, '/api/workers/worker-2', { method: 'DELETE' })).status, 200)
  const revoked = await raw.refusal('SendHeartbeat', { ...empty, worker_id: 'worker-2' }, { ...member, token: t2 })
  assert.equal(revoked.cloudai, 'CLOUDAI_WORKER_TOKEN_INVALID')
  await w2.waitForLog((l) => l.level === 50 && l.msg.includes('refused RegisterWorker') && l.msg.includes('CLOUDAI_WORKER_TOKEN_INVALID'), 'worker-2 is told, as an error')
  noTokenIn([master.proc, w1, w2], [t1, t2])
})

test('a worker with a token serves only its master: AssignTask, CancelTask and MasterRegister without the master\'s proof are refused, from a stranger, another worker, or a reader of the store', async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir })
  const [p1, p2] = [await reservePort(), await reservePort()]
  const t1 = await registerWorker(master.api, 'worker-1', `127.0.0.1:${p1}`)
  const t2 = await registerWorker(master.api, 'worker-2', `127.0.0.1:${p2}`)
  // No --master: it is found by the monitor's MasterRegister, whose proof the dial thread makes.
  const w1 = await startWorker(t, 'worker-1', p1, { token: t1 })
  await master.proc.waitForLog((l) => l.workerId === 'worker-1' && msgHas('Successfully reconnected to worker worker-1')(l), 'the proven dial')
  await master.proc.waitForLog(active('worker-1'), 'worker-1 active')
  const proven = await submit(master.api, { command: 'echo proven' })
  await master.proc.waitForLog(taskFinished(proven), 'the task finished')
  assert.deepEqual([(await taskOf(master.api, proven)).status, (await taskOf(master.api, proven)).logs], ['completed', 'proven\n'])

  // What a reader of the store has: the nonce and the hash, and no token anywhere in the file.
  const db = new Database(join(dataDir, 'cloudai.db'), { readonly: true })
  t.after(() => db.close())
  const stored = JSON.parse((db.prepare("SELECT credential FROM workers WHERE worker_id = 'worker-1'").get() as { credential: string }).credential) as { nonce: string; hash: string }
  const dump = JSON.stringify(db.prepare('SELECT * FROM workers').all())
  assert.ok(!dump.includes(t1) && !dump.includes(t2), 'the store holds no token')
  assert.equal(statSync(join(dataDir, 'master.key')).mode & 0o777, 0o600, 'the key is the master\'s alone')

  const raw = new RawClient(t, `127.0.0.1:${p1}`)
  const pwned = join(tempDir(t), 'pwned')
  const evil = { task_id: `task-${randomUUID()}`, command: `id > ${pwned}`, attempt: 1, docker_image: '' }
  const subject = `${evil.task_id}/1`
  const now = Date.now()
  const attempts: [string, { proofs?: string[]; token?: string }][] = [
    ['a stranger', {}],
    ['worker-2 (its own token)', { proofs: [masterProof(t2, 'worker-1', 'AssignTask', subject, now)] }],
    ['worker-2 presenting itself', { token: t2 }],
    ['the store\'s hash', { proofs: [masterProof(stored.hash, 'worker-1', 'AssignTask', subject, now)] }],
    ['the store\'s nonce', { proofs: [masterProof(stored.nonce, 'worker-1', 'AssignTask', subject, now)] }],
  ]
  for (const [who, creds] of attempts) {
    const r = await raw.refusal('AssignTask', evil, creds)
    assert.deepEqual([r.code, r.cloudai], [grpc.status.UNAUTHENTICATED, 'CLOUDAI_MASTER_PROOF_REQUIRED'], who)
  }
  // ...nor act as worker-1 towards the master with what the store holds.
  const asMaster = new RawClient(t, `127.0.0.1:${master.grpcPort}`)
  for (const guess of [stored.hash, stored.nonce]) {
    assert.equal((await asMaster.refusal('SendHeartbeat', { worker_id: 'worker-1', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] }, { token: guess })).cloudai, 'CLOUDAI_WORKER_TOKEN_INVALID')
  }

  // CancelTask of a running task, and MasterRegister towards a rogue master.
  const nap = await submit(master.api, { command: 'sleep 60' })
  await master.proc.waitForLog(running(nap, 'worker-1'), 'the nap runs')
  for (const creds of [{}, { proofs: [masterProof(t2, 'worker-1', 'CancelTask', nap, Date.now())] }]) {
    assert.equal((await raw.refusal('CancelTask', { task_id: nap }, creds)).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
  }
  const mark = w1.mark()
  assert.equal((await raw.refusal('MasterRegister', { master_id: 'rogue', master_address: '127.0.0.1:1' })).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
  assert.equal((await raw.refusal('MasterRegister', { master_id: 'rogue', master_address: '127.0.0.1:1' }, { proofs: [masterProof(t2, 'worker-1', 'MasterRegister', '127.0.0.1:1', Date.now())] })).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')

  // A task the master assigns now runs; by the time it has, a refused AssignTask would have too.
  const legit = join(tempDir(t), 'legit')
  const after = await submit(master.api, { command: `touch ${legit}` })
  await master.proc.waitForLog(taskFinished(after), 'the master\'s task finished')
  assert.ok(existsSync(legit))
  assert.equal(existsSync(pwned), false, 'nothing the attacker sent ran')
  assert.equal((await taskOf(master.api, nap)).status, 'running', 'the nap was not cancelled')
  assert.equal(w1.has(cancelling(nap)), false)
  assert.equal(w1.has((l) => l.msg.startsWith('MasterRegister from'), mark), false, 'it follows no rogue master')
  assert.equal((await workerOf(master.api, 'worker-1')).is_active, true)
  await w1.waitForLog((l) => l.level === 40 && l.msg.startsWith('Refused AssignTask from 127.0.0.1'), 'the worker logs the refusals')
  noTokenIn([master.proc, w1], [t1, t2])
})

test('token rotation: the old token works until the worker presents the new one, or until --token-grace ends', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--token-grace', '4s'] })
  const masterAddr = `127.0.0.1:${master.grpcPort}`
  const port = await reservePort()
  const t1 = await registerWorker(master.api, 'worker-1', `127.0.0.1:${port}`)
  let worker = await startWorker(t, 'worker-1', port, { master: masterAddr, token: t1 })
  await worker.waitForLog(registered(masterAddr), 'joined with the first token')
  const raw = new RawClient(t, masterAddr)
  const beat = { worker_id: 'worker-1', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] }
  const rotate = async (): Promise<{ token: string; previous_valid_until: string | null }> => {
    const r = await runCli(['token', 'rotate', 'worker-1', '--api', master.api, '--json'])
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout)
  }

  // Rotated: within the grace the old token still works, and so do the master's calls to the
  // worker that still holds it (a proof for each live token).
  const second = await rotate()
  assert.ok(second.previous_valid_until !== null && Date.parse(second.previous_valid_until) > Date.now())
  assert.equal((await raw.call('SendHeartbeat', beat, { token: t1 })).success, true)
  const during = await submit(master.api, { command: 'echo during-the-grace' })
  await master.proc.waitForLog(taskFinished(during), 'a task during the grace')
  assert.equal((await taskOf(master.api, during)).status, 'completed')

  // The worker comes back with the new token: from then on the old one is refused, grace or not.
  await worker.kill('SIGTERM')
  worker = await startWorker(t, 'worker-1', port, { master: masterAddr, token: second.token, name: 'worker-1b' })
  await worker.waitForLog(registered(masterAddr), 'joined with the second token')
  const presented = (await workerOf(master.api, 'worker-1')).credential
  assert.ok(presented?.presented_at !== null && presented?.previous_valid_until === null, JSON.stringify(presented))
  assert.equal((await raw.refusal('SendHeartbeat', beat, { token: t1 })).cloudai, 'CLOUDAI_WORKER_TOKEN_INVALID')

  // Rotated again and the worker not told: the grace ends it, on the worker's open stream too.
  const mark = worker.mark()
  // From here: an earlier restart left a "became inactive" line behind, which must not answer the wait below.
  const masterMark = master.proc.mark()
  const third = await rotate()
  assert.equal((await raw.call('SendHeartbeat', beat, { token: second.token })).success, true, 'in its grace')
  await worker.waitForLog((l) => l.level === 50 && l.msg.includes('refused RegisterWorker') && l.msg.includes('the master does not take the worker token'), 'the worker learns its token is done', { from: mark, timeoutMs: 15_000 })
  assert.ok(Date.now() >= Date.parse(third.previous_valid_until!), 'not before the grace ended')
  assert.equal((await raw.refusal('SendHeartbeat', beat, { token: second.token })).cloudai, 'CLOUDAI_WORKER_TOKEN_INVALID')
  await master.proc.waitForLog((l) => l.workerId === 'worker-1' && l.msg.startsWith('Worker worker-1 became inactive'), 'worker-1 inactive', { from: masterMark })

  await worker.kill('SIGTERM')
  const back = master.proc.mark()
  worker = await startWorker(t, 'worker-1', port, { master: masterAddr, token: third.token, name: 'worker-1c' })
  await master.proc.waitForLog(active('worker-1'), 'back with the third token', { from: back })
  noTokenIn([master.proc, worker], [t1, second.token, third.token])
})

test('--worker-auth none warns at start, on /healthz and in `cloudai status`, and takes workers without a token; one that presented its token still needs it', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--worker-auth', 'none'] })
  const masterAddr = `127.0.0.1:${master.grpcPort}`
  await master.proc.waitForLog((l) => l.level === 40 && l.msg.startsWith('--worker-auth none: worker calls without a token are accepted from any address'), 'the warning at start')
  const health = await api(master.api, '/healthz')
  assert.equal(health.status, 200)
  assert.equal(health.body.status, 'healthy', 'a warning, not a failure')
  assert.equal(health.body.warnings[0].check, 'worker-auth')
  const status = await runCli(['status', '--api', master.api])
  assert.match(status.stdout, /^Worker auth: +none \(WARNING/m)

  const [p1, p2] = [await reservePort(), await reservePort()]
  const t1 = await registerWorker(master.api, 'worker-1', `127.0.0.1:${p1}`)
  await registerWorker(master.api, 'cloudai-like', `127.0.0.1:${p2}`)
  await startWorker(t, 'worker-1', p1, { master: masterAddr, token: t1 })
  await startWorker(t, 'cloudai-like', p2, { master: masterAddr })
  await master.proc.waitForLog(active('worker-1'), 'worker-1 active')
  await master.proc.waitForLog(active('cloudai-like'), 'the worker without a token active')
  const raw = new RawClient(t, masterAddr)
  const refusal = await raw.refusal('RegisterWorker', { worker_id: 'worker-1', worker_ip: '127.0.0.1:1', total_cpu: 1e6, total_memory: 1, total_storage: 1, total_gpu: 0 })
  assert.equal(refusal.cloudai, 'CLOUDAI_WORKER_TOKEN_REQUIRED')
})
