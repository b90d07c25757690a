import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { api, childCwd, childEnv, CLI, msgHas, reservePort, runCli, startMaster, startWorker, tempDir, waitUntil, type LogLine, type MasterHandle, type Proc } from '../support/cluster.js'
import { alive, runs, runsFile } from '../support/runs-file.js'

// Cordon and drain, end to end: a real master, real workers, real commands. Each run of a task
// that matters appends its pid to a runs file, so a test counts real runs (and kills them at the end).

const FLAGS = ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', '2s', '--shutdown-grace', '2s']

interface WorkerView {
  worker_id: string
  is_active: boolean
  scheduling: 'eligible' | 'cordoned' | 'draining' | 'drained'
  cordoned: boolean
  drain: { started_at: string; deadline: string | null; force: boolean; drained_at: string | null } | null
  running_tasks: { task_id: string }[]
}

interface TaskView {
  status: string
  worker_id: string | null
  attempts: number
  max_attempts: number
  history: { status: string; worker_id: string | null; reason: string | null }[]
}

const worker = async (m: MasterHandle, id: string): Promise<WorkerView> => (await api<WorkerView>(m.api, `/api/workers/${id}`)).body
const task = async (m: MasterHandle, id: string): Promise<TaskView> => (await api<TaskView>(m.api, `/api/tasks/${id}`)).body
const active = (id: string) => (l: LogLine): boolean => l.workerId === id && msgHas('registered and active')(l)
const heartbeatPass = (l: LogLine): boolean => l.msg === 'Attempting to reconnect to 1 inactive worker(s)...'

async function register(m: MasterHandle, id: string, port: number, host = '127.0.0.1'): Promise<void> {
  assert.equal((await api(m.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `${host}:${port}` } })).status, 201)
}

async function addWorker(t: TestContext, m: MasterHandle, id: string): Promise<{ proc: Proc; port: number }> {
  const port = await reservePort()
  await register(m, id, port)
  const from = m.proc.mark()
  const proc = await startWorker(t, id, port)
  await m.proc.waitForLog(active(id), `${id} active`, { from })
  return { proc, port }
}

async function submit(m: MasterHandle, body: Record<string, unknown>): Promise<string> {
  const res = await api(m.api, '/api/tasks', { method: 'POST', body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

async function post(m: MasterHandle, path: string, body: unknown = {}): Promise<{ status: number; body: any }> {
  return api(m.api, path, { method: 'POST', body })
}

/** The CLI as a child whose output the test reads as it comes (runCli gives it only at the end). */
function startCli(t: TestContext, args: string[]): { out: { stdout: string; stderr: string }; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  const out = { stdout: '', stderr: '' }
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out.stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out.stderr += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return { out, exited }
}

/** Waits for `n` reconnection passes of the master (a ghost worker keeps them coming): time going by, as an event. */
async function passes(m: MasterHandle, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await m.proc.waitForLog(heartbeatPass, `reconnection pass ${i + 1}`, { from: m.proc.mark() })
}

test('a cordoned worker takes no new task, one that targets it waits, and it runs once uncordoned; the CLI and the worker list show it', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  await addWorker(t, m, 'w1')
  await addWorker(t, m, 'w2')
  const cordon = await runCli(['cordon', 'w1', '--api', m.api])
  assert.equal(cordon.code, 0, cordon.stderr)
  assert.match(cordon.stdout, /Worker w1 cordoned: no new tasks are placed on it/)
  const view = await worker(m, 'w1')
  assert.equal(view.scheduling, 'cordoned')
  assert.equal(view.cordoned, true)
  const list = await runCli(['workers', '--api', m.api])
  assert.equal(list.code, 0, list.stderr)
  assert.match(list.stdout, /^w1\s+● Active, cordoned/m)
  assert.match(list.stdout, /1 cordoned \(no new tasks\)/)
  // Oldest first: the targeted task is looked at before the others, every time the queue is.
  const targeted = await submit(m, { command: 'true', target_worker_id: 'w1' })
  const others = [await submit(m, { command: 'true' }), await submit(m, { command: 'true' }), await submit(m, { command: 'true' })]
  for (const id of others) await waitUntil(async () => (await task(m, id)).status === 'completed', `${id} completed`)
  for (const id of others) assert.equal((await task(m, id)).worker_id, 'w2', 'nothing new goes to a cordoned worker')
  assert.equal((await task(m, targeted)).status, 'queued', 'a task for a cordoned worker waits')
  const uncordon = await runCli(['uncordon', 'w1', '--api', m.api])
  assert.equal(uncordon.code, 0, uncordon.stderr)
  assert.match(uncordon.stdout, /Worker w1 uncordoned: it takes tasks again/)
  await waitUntil(async () => (await task(m, targeted)).status === 'completed', 'the targeted task ran once uncordoned')
  assert.equal((await task(m, targeted)).worker_id, 'w1')
  assert.equal((await worker(m, 'w1')).scheduling, 'eligible')
})

test('drain lets a running task finish, the CLI waits with progress and exits 0 once drained; the stopped worker alarms nothing and stays cordoned when it comes back', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: [...FLAGS, '--health-max-inactive', '1s', '--health-reconnect-within', '1s'] })
  const { proc: w1, port } = await addWorker(t, m, 'w1')
  const flag = join(tempDir(t), 'finish')
  const id = await submit(m, { command: `while [ ! -f ${flag} ]; do sleep 0.05; done` })
  await waitUntil(async () => (await task(m, id)).status === 'running', 'the task runs')
  await waitUntil(async () => (await worker(m, 'w1')).running_tasks.length === 1, 'w1 lists the task')
  const cli = startCli(t, ['drain', 'w1', '--api', m.api])
  // The CLI waits, with progress, for what runs there to finish.
  await waitUntil(() => cli.out.stderr.includes('draining worker w1: 1 task still running there'), 'the CLI shows its progress')
  assert.equal((await worker(m, 'w1')).scheduling, 'draining')
  assert.equal((await task(m, id)).status, 'running', 'the drain lets it run')
  writeFileSync(flag, '')
  const code = await cli.exited
  const done = cli.out
  assert.equal(code, 0, done.stderr)
  assert.match(done.stdout, /Worker w1 draining: cordoned; 1 task still running there \(no deadline\)/)
  assert.match(done.stderr, /draining worker w1: 1 task still running there/)
  assert.match(done.stdout, /✅ Worker w1 drained: nothing runs there, it can be stopped/)
  const finished = await task(m, id)
  assert.equal(finished.status, 'completed')
  assert.equal(finished.attempts, 1)
  const drained = await worker(m, 'w1')
  assert.equal(drained.scheduling, 'drained')
  assert.ok(drained.drain?.drained_at)

  // Stopped: inactive longer than --health-max-inactive, yet healthy.
  await w1.kill('SIGTERM')
  await waitUntil(async () => !(await worker(m, 'w1')).is_active, 'w1 inactive')
  const down = Date.now()
  const health = await waitUntil(async () => Date.now() - down > 2500 && (await api(m.api, '/healthz')), 'past the health thresholds')
  assert.equal(health.status, 200, JSON.stringify(health.body))
  assert.equal(health.body.status, 'healthy', JSON.stringify(health.body))

  // Back: still cordoned, takes nothing until uncordoned.
  const back = m.proc.mark()
  await startWorker(t, 'w1', port)
  await m.proc.waitForLog(active('w1'), 'w1 back', { from: back })
  assert.equal((await worker(m, 'w1')).scheduling, 'drained')
  // Only now: an inactive worker of its own would make the master unhealthy.
  await register(m, 'ghost', 9, '127.0.0.2')
  const next = await submit(m, { command: 'true' })
  await passes(m, 3)
  assert.equal((await task(m, next)).status, 'queued', 'a drained worker that came back takes nothing')
  assert.equal((await post(m, '/api/workers/w1/uncordon')).status, 200)
  await waitUntil(async () => (await task(m, next)).status === 'completed', 'it runs once uncordoned')
})

test('at the drain deadline a running task is cancelled and requeued without counting an attempt, and it runs once elsewhere', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  await register(m, 'ghost', 9, '127.0.0.2')
  await addWorker(t, m, 'w1')
  await addWorker(t, m, 'w2')
  assert.equal((await post(m, '/api/workers/w2/cordon')).status, 200)
  const file = runsFile(t)
  // The first run sleeps until it is stopped; the second finishes.
  const id = await submit(m, { command: `echo $$ >> ${file}; [ $(wc -l < ${file}) -ge 2 ] || exec sleep 30`, max_attempts: 1 })
  await waitUntil(() => runs(file).length === 1, 'the first run started')
  await waitUntil(async () => (await task(m, id)).status === 'running', 'running on w1')
  assert.equal((await task(m, id)).worker_id, 'w1')
  const first = runs(file)[0]!
  const detached = await runCli(['drain', 'w1', '--deadline', '1s', '--detach', '--api', m.api])
  assert.equal(detached.code, 0, detached.stderr)
  assert.match(detached.stdout, /Worker w1 draining: cordoned; \d tasks? still running there \(deadline in /)
  assert.equal((await worker(m, 'w1')).drain?.deadline !== null, true)
  assert.equal((await post(m, '/api/workers/w2/uncordon')).status, 200)
  await waitUntil(async () => (await task(m, id)).status === 'completed', 'the task completed after the drain', 30_000)
  const done = await task(m, id)
  assert.equal(done.worker_id, 'w2')
  assert.equal(done.attempts, 1, 'the run the drain stopped is not counted (max_attempts 1, and it completed)')
  assert.ok(done.history.some((h) => h.status === 'queued' && /drain deadline passed/.test(h.reason ?? '')), JSON.stringify(done.history))
  assert.equal(runs(file).length, 2, 'one run stopped on w1, one on w2')
  await waitUntil(() => !alive(first), 'the stopped run is gone (SIGTERM)')
  await waitUntil(async () => (await worker(m, 'w1')).scheduling === 'drained', 'w1 drained')
  await passes(m, 3)
  assert.equal(runs(file).length, 2, 'it never ran a third time')
})

test('a drain survives a master restart: its deadline is kept and it completes at it', async (t) => {
  const dataDir = tempDir(t)
  const m1 = await startMaster(t, { dataDir, args: FLAGS, name: 'master-1' })
  await addWorker(t, m1, 'w1')
  const file = runsFile(t)
  const id = await submit(m1, { command: `echo $$ >> ${file}; exec sleep 30` })
  await waitUntil(async () => (await task(m1, id)).status === 'running', 'running on w1')
  const res = await post(m1, '/api/workers/w1/drain', { deadline_s: 4 })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.equal(res.body.persisted, true)
  const deadline = res.body.worker.drain.deadline as string
  await m1.proc.kill('SIGKILL')
  const m2 = await startMaster(t, { dataDir, args: FLAGS, name: 'master-2' })
  const loaded = await worker(m2, 'w1')
  assert.equal(loaded.scheduling, 'draining')
  assert.equal(loaded.drain?.deadline, deadline, 'the deadline is the one set before the restart')
  await waitUntil(async () => (await worker(m2, 'w1')).scheduling === 'drained', 'drained at the deadline', 30_000)
  const t1 = await task(m2, id)
  assert.equal(t1.status, 'queued', 'requeued (the only worker is drained: it waits)')
  assert.equal(t1.attempts, 0, 'no attempt counted')
  assert.ok(Date.now() >= Date.parse(deadline), 'not before its deadline')
  await waitUntil(() => !alive(runs(file)[0]!), 'the run is stopped on w1')
})

test('uncordon during a drain never runs a task twice: the run the drain stopped is replaced by one run', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  await register(m, 'ghost', 9, '127.0.0.2')
  await addWorker(t, m, 'w1')
  const file = runsFile(t)
  const id = await submit(m, { command: `echo $$ >> ${file}; exec sleep 30` })
  await waitUntil(() => runs(file).length === 1, 'the first run started')
  await waitUntil(async () => (await task(m, id)).status === 'running', 'running on w1')
  const first = runs(file)[0]!
  const from = m.proc.mark()
  const drain = await post(m, '/api/workers/w1/drain', { force: true })
  assert.equal(drain.status, 200, JSON.stringify(drain.body))
  await m.proc.waitForLog((l) => l.taskId === id && msgHas('requeued off worker w1')(l), 'the drain requeued it', { from })
  assert.equal((await post(m, '/api/workers/w1/uncordon')).status, 200)
  await waitUntil(() => runs(file).length === 2, 'it runs again')
  assert.equal(alive(first), false, 'the stopped run was gone before the next one started')
  await waitUntil(async () => (await task(m, id)).status === 'running', 'running again')
  await passes(m, 4)
  assert.equal(runs(file).length, 2, 'one run after the drain, not two')
  const t1 = await task(m, id)
  assert.equal(t1.status, 'running')
  assert.equal(t1.attempts, 1, 'the stopped run is not counted')
  assert.equal((await worker(m, 'w1')).scheduling, 'eligible')
})

test('cordon, uncordon and drain refuse bad input with stable codes; a drain of an inactive worker with nothing on it is drained at once; stopping a drain leaves the worker cordoned', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  await register(m, 'off', 9, '127.0.0.2')
  for (const path of ['cordon', 'uncordon', 'drain']) {
    const res = await post(m, `/api/workers/nope/${path}`)
    assert.equal(res.status, 404, path)
    assert.equal(res.body.error.code, 'CLOUDAI_UNKNOWN_WORKER')
  }
  const del = await api(m.api, '/api/workers/nope/drain', { method: 'DELETE' })
  assert.equal(del.status, 404)
  for (const body of [{ deadline_s: -1 }, { deadline_s: 0 }, { deadline_s: '1h' }, { deadline_s: 1e9 }, { force: 'yes' }]) {
    const res = await post(m, '/api/workers/off/drain', body)
    assert.equal(res.status, 400, JSON.stringify(body))
    assert.equal(res.body.error.code, 'CLOUDAI_BAD_FIELD', JSON.stringify(body))
  }
  const unknownField = await post(m, '/api/workers/off/drain', { deadline: 5 })
  assert.equal(unknownField.status, 400)
  assert.equal(unknownField.body.error.code, 'CLOUDAI_BAD_REQUEST')
  assert.equal((await post(m, '/api/workers/off/cordon', { force: true })).status, 400)
  assert.equal((await worker(m, 'off')).scheduling, 'eligible', 'a refused request changed nothing')
  const notDraining = await api(m.api, '/api/workers/off/drain', { method: 'DELETE' })
  assert.equal(notDraining.status, 409)
  assert.equal(notDraining.body.error.code, 'CLOUDAI_NOT_DRAINING')

  const drained = await post(m, '/api/workers/off/drain', { deadline_s: 3600 })
  assert.equal(drained.status, 200)
  assert.equal(drained.body.message, 'Worker drained')
  assert.equal(drained.body.worker.scheduling, 'drained')
  const stopped = await api(m.api, '/api/workers/off/drain', { method: 'DELETE' })
  assert.equal(stopped.status, 200)
  assert.equal(stopped.body.worker.scheduling, 'cordoned')
  assert.equal(stopped.body.worker.drain, null)

  const cliUnknown = await runCli(['drain', 'nope', '--detach', '--api', m.api])
  assert.equal(cliUnknown.code, 1)
  assert.match(cliUnknown.stderr, /worker nope is not registered/)
  const cliBad = await runCli(['drain', 'off', '--deadline', '0', '--api', m.api])
  assert.equal(cliBad.code, 2)
  assert.match(cliBad.stderr, /--deadline must be more than 0/)
  const cliBoth = await runCli(['drain', 'off', '--deadline', '1m', '--force', '--api', m.api])
  assert.equal(cliBoth.code, 2)
  assert.match(cliBoth.stderr, /--force and --deadline do not go together/)
  const cliMissing = await runCli(['cordon', '--api', m.api])
  assert.equal(cliMissing.code, 2)
  assert.match(cliMissing.stderr, /missing <id>: cloudai cordon <id>/)
})
