import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { api, msgHas, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle, type Proc } from '../support/cluster.js'
import { alive, runs, runsFile } from '../support/runs-file.js'

// Unregistering a worker that runs a task: the task goes back to the queue, an active worker is
// told to cancel it, and the worker stops calling a master that dropped it. A run that finished
// while its worker was away is the task's result once the worker is registered again. Each
// command appends its pid to a file: the tests count real runs and kill every one at the end.

const FLAGS = ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', '2s', '--shutdown-grace', '2s']

interface TaskView {
  status: string
  worker_id: string | null
  exit_code: number | null
  attempts: number
  history: { status: string; worker_id: string | null; reason: string | null }[]
}

const task = async (base: string, id: string): Promise<TaskView> => (await api<TaskView>(base, `/api/tasks/${id}`)).body
const runningOn = (id: string, worker: string, attempt: number) => (l: LogLine): boolean => l.taskId === id && l.msg === `Task ${id} assigned to worker ${worker} and running (attempt ${attempt})`
const refusedRegistration = (l: LogLine): boolean => l.msg === 'RegisterWorker refused' && l.code === 'CLOUDAI_WORKER_NOT_REGISTERED'
const dropped = msgHas('no longer has worker w1')
const pass = (l: LogLine): boolean => l.msg === 'Attempting to reconnect to 1 inactive worker(s)...'

async function register(master: MasterHandle, id: string, port: number, host = '127.0.0.1'): Promise<void> {
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `${host}:${port}` } })).status, 201)
}

async function setup(t: TestContext, args: string[] = []): Promise<{ master: MasterHandle; w1: Proc; port: number }> {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FLAGS, ...args] })
  // A worker nobody runs: the monitor dials it every pass and says so, a clock the tests wait on.
  await register(master, 'ghost', 9, '127.0.0.2')
  const port = await reservePort()
  await register(master, 'w1', port)
  const w1 = await startWorker(t, 'w1', port)
  await master.proc.waitForLog((l) => l.workerId === 'w1' && msgHas('registered and active')(l), 'w1 active')
  return { master, w1, port }
}

async function submit(base: string, command: string): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body: { command } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

/** Waits for `n` more reconnection passes of the master: time going by, as an event. */
async function passes(master: MasterHandle, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await master.proc.waitForLog(pass, `reconnection pass ${i + 1}`, { from: master.proc.mark() })
}

test('unregistering a worker that runs a task cancels it there and requeues it; the dropped worker stops registering again', async (t) => {
  const { master, w1 } = await setup(t)
  const file = runsFile(t)
  const id = await submit(master.api, `echo $$ >> ${file}; exec sleep 30`)
  await master.proc.waitForLog(runningOn(id, 'w1', 1), 'running on w1')
  await waitUntil(() => runs(file).length === 1, 'the command started')
  const pid = runs(file)[0]!

  const mark = master.proc.mark()
  const res = await api(master.api, '/api/workers/w1', { method: 'DELETE' })
  assert.equal(res.status, 200)
  assert.deepEqual(res.body.tasks_requeued, [id])
  await w1.waitForLog((l) => l.taskId === id && msgHas('Cancelling task')(l), 'w1 told to cancel the task')
  await waitUntil(() => !alive(pid), 'the task\'s process gone')

  const view = await task(master.api, id)
  assert.equal(view.status, 'queued')
  assert.equal(view.attempts, 1)
  assert.match(view.history.at(-1)!.reason ?? '', /worker w1 was unregistered; requeued/)

  // Refused once, said once, and then silent: no registration every few seconds.
  await w1.waitForLog(dropped, 'w1 knows it was dropped')
  const wmark = w1.mark()
  await passes(master, 8)
  assert.equal(master.proc.lines.slice(mark).filter(refusedRegistration).length, 1, 'one refused RegisterWorker')
  assert.equal(w1.has((l) => l.level >= 40, wmark), false, `no warning after it: ${JSON.stringify(w1.lines.slice(wmark).filter((l) => l.level >= 40))}`)
  assert.equal(runs(file).length, 1, 'not run again meanwhile')
})

test('a run that finished while its worker was away is the result once the worker is registered again: it never runs twice', async (t) => {
  // A long requeue wait: the task is still on w1 when the operator unregisters it.
  const { master, w1, port } = await setup(t, ['--requeue-after', '1m'])
  const file = runsFile(t)
  const ends = `${file}.ended`
  const id = await submit(master.api, `echo $$ >> ${file}; sleep 1; echo $$ >> ${ends}`)
  await master.proc.waitForLog(runningOn(id, 'w1', 1), 'running on w1')
  await waitUntil(() => runs(file).length === 1, 'the command started')

  // Frozen: the master cannot reach it; the task's own process group runs on and ends.
  w1.child.kill('SIGSTOP')
  try {
    await master.proc.waitForLog((l) => l.workerId === 'w1' && msgHas('became inactive')(l), 'w1 inactive')
    // Ended, though not reaped yet: its worker is frozen.
    await waitUntil(() => runs(ends).length === 1, 'the command ended')
    const res = await api(master.api, '/api/workers/w1', { method: 'DELETE' })
    assert.equal(res.status, 200)
    assert.deepEqual(res.body.tasks_requeued, [id])
    assert.equal((await task(master.api, id)).status, 'queued')
  } finally {
    w1.child.kill('SIGCONT')
  }
  await w1.waitForLog(dropped, 'w1 finds itself dropped')
  await passes(master, 3)

  await register(master, 'w1', port)
  await master.proc.waitForLog(taskFinished(id), 'the task finished', { timeoutMs: 30_000 })
  const view = await task(master.api, id)
  assert.equal(view.status, 'completed')
  assert.equal(view.exit_code, 0)
  assert.equal(view.worker_id, 'w1')
  assert.equal(view.attempts, 1)
  assert.deepEqual(view.history.map((h) => `${h.status}:${h.worker_id ?? '-'}`), ['queued:-', 'assigned:w1', 'running:w1', 'queued:-', 'completed:w1'])
  assert.equal(runs(file).length, 1, 'the command ran once')
})
