import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { api, msgHas, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle, type Proc } from '../support/cluster.js'
import { alive, runs, runsFile } from '../support/runs-file.js'

// A worker that goes silent (SIGSTOP: the process is frozen, the task's own process group runs on)
// past the heartbeat timeout and then comes back (SIGCONT). Each task command appends its pid to a
// file, so the tests count real runs; every pid written is killed when the test ends.

const HEARTBEAT_TIMEOUT = '2s'
const FLAGS = ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', HEARTBEAT_TIMEOUT, '--shutdown-grace', '2s']

interface TaskView {
  task_id: string
  status: string
  worker_id: string | null
  exit_code: number | null
  attempts: number
  reason: string | null
  history: { status: string; worker_id: string | null; reason: string | null }[]
}

const task = async (base: string, id: string): Promise<TaskView> => (await api<TaskView>(base, `/api/tasks/${id}`)).body
const inactive = (id: string) => (l: LogLine): boolean => l.workerId === id && typeof l.msg === 'string' && l.msg.startsWith(`Worker ${id} became inactive`)
const runningOn = (id: string, worker: string, attempt: number) => (l: LogLine): boolean => l.taskId === id && l.msg === `Task ${id} assigned to worker ${worker} and running (attempt ${attempt})`

async function cluster(t: TestContext, args: string[], workers: string[]): Promise<{ master: MasterHandle; procs: Map<string, Proc> }> {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FLAGS, ...args] })
  const procs = new Map<string, Proc>()
  for (const id of workers) procs.set(id, await addWorker(t, master, id))
  return { master, procs }
}

async function addWorker(t: TestContext, master: MasterHandle, id: string): Promise<Proc> {
  const port = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `127.0.0.1:${port}` } })).status, 201)
  const proc = await startWorker(t, id, port)
  await master.proc.waitForLog((l) => l.workerId === id && msgHas('registered and active')(l), `${id} active`)
  return proc
}

async function submit(base: string, command: string): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body: { command } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

/** SIGSTOP until the master says the worker is inactive (and `meanwhile` is done), then SIGCONT. */
async function pausePastHeartbeatTimeout(master: MasterHandle, worker: Proc, id: string, meanwhile?: () => Promise<unknown>): Promise<void> {
  const mark = master.proc.mark()
  worker.child.kill('SIGSTOP')
  try {
    await master.proc.waitForLog(inactive(id), `${id} inactive`, { from: mark })
    await meanwhile?.()
  } finally {
    worker.child.kill('SIGCONT')
  }
}

test('a worker paused past the heartbeat timeout and back within the requeue wait keeps its task: one run, attempts 1, nothing cancelled', async (t) => {
  // The default wait (the heartbeat timeout), made 4 s so that a loaded machine comes back within it.
  const { master, procs } = await cluster(t, ['--heartbeat-timeout', '4s'], ['w1'])
  const w1 = procs.get('w1')!
  const file = runsFile(t)
  const id = await submit(master.api, `echo $$ >> ${file}; exec sleep 9`)
  await master.proc.waitForLog(runningOn(id, 'w1', 1), 'running on w1')
  await waitUntil(() => runs(file).length === 1, 'the command started')

  await pausePastHeartbeatTimeout(master, w1, 'w1')
  await master.proc.waitForLog(msgHas('Worker w1 came back within the requeue wait: it keeps its 1 task(s)'), 'w1 back within the wait')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { timeoutMs: 30_000 })

  const view = await task(master.api, id)
  assert.equal(view.status, 'completed')
  assert.equal(view.exit_code, 0)
  assert.equal(view.attempts, 1)
  assert.deepEqual(view.history.map((h) => h.status), ['queued', 'assigned', 'running', 'completed'], 'never requeued')
  assert.equal(runs(file).length, 1, 'the command ran once')
  assert.equal(master.proc.has((l) => typeof l.msg === 'string' && l.msg.startsWith('CancelTask')), false, 'no CancelTask sent')
  assert.equal(w1.has(msgHas('Cancelling task')), false, 'nothing killed on the worker')
})

test('with --requeue-after 0 the task starts on another worker at once; the returning worker\'s run is cancelled and one completion is recorded', async (t) => {
  const { master, procs } = await cluster(t, ['--requeue-after', '0'], ['w1'])
  const w1 = procs.get('w1')!
  const file = runsFile(t)
  // The first run sleeps long; a later one ends soon.
  const id = await submit(master.api, `echo $$ >> ${file}; [ "$(wc -l < ${file})" -gt 1 ] && exec sleep 1; exec sleep 30`)
  await master.proc.waitForLog(runningOn(id, 'w1', 1), 'running on w1')
  await waitUntil(() => runs(file).length === 1, 'the first run started')
  const first = runs(file)[0]!
  await addWorker(t, master, 'w2')

  // Back only once the task runs on w2 (back before that, w1 would keep it: the next test).
  await pausePastHeartbeatTimeout(master, w1, 'w1', () => master.proc.waitForLog(runningOn(id, 'w2', 2), 'running on w2'))
  await w1.waitForLog((l) => l.taskId === id && msgHas('Cancelling task')(l), 'the returning run cancelled on w1')
  await waitUntil(() => !alive(first), 'the first run\'s process gone')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { timeoutMs: 30_000 })
  // w1's result of its cancelled attempt comes too, and is no completion of the task.
  await master.proc.waitForLog((l) => l.taskId === id && msgHas('Ignored a stale completion report')(l), 'w1\'s report of attempt 1 ignored')

  const view = await task(master.api, id)
  assert.equal(view.status, 'completed')
  assert.equal(view.worker_id, 'w2')
  assert.equal(view.attempts, 2)
  assert.deepEqual(view.history.map((h) => `${h.status}:${h.worker_id ?? '-'}`), ['queued:-', 'assigned:w1', 'running:w1', 'queued:-', 'assigned:w2', 'running:w2', 'completed:w2'])
  assert.equal(master.proc.lines.filter(taskFinished(id)).length, 1, 'one completion recorded')
  assert.equal(runs(file).length, 2)
})

test('a task requeued while its worker was away and still queued when it comes back is withdrawn: the run goes on, attempts unchanged', async (t) => {
  // No other worker: with --requeue-after 0 the task is queued the moment w1 is inactive.
  const { master, procs } = await cluster(t, ['--requeue-after', '0'], ['w1'])
  const w1 = procs.get('w1')!
  const file = runsFile(t)
  const id = await submit(master.api, `echo $$ >> ${file}; exec sleep 7`)
  await master.proc.waitForLog(runningOn(id, 'w1', 1), 'running on w1')
  await waitUntil(() => runs(file).length === 1, 'the command started')

  const mark = master.proc.mark()
  await pausePastHeartbeatTimeout(master, w1, 'w1')
  await master.proc.waitForLog((l) => l.taskId === id && msgHas('requeued')(l), 'requeued', { from: mark })
  await master.proc.waitForLog((l) => l.taskId === id && msgHas('its queued copy is withdrawn')(l), 'withdrawn for w1', { from: mark })
  await master.proc.waitForLog(taskFinished(id), 'task finished', { timeoutMs: 30_000 })

  const view = await task(master.api, id)
  assert.equal(view.status, 'completed')
  assert.equal(view.worker_id, 'w1')
  assert.equal(view.attempts, 1)
  assert.deepEqual(view.history.map((h) => `${h.status}:${h.worker_id ?? '-'}`), ['queued:-', 'assigned:w1', 'running:w1', 'queued:-', 'running:w1', 'completed:w1'])
  assert.equal(runs(file).length, 1, 'the command ran once')
  assert.equal(master.proc.has((l) => l.taskId === id && typeof l.msg === 'string' && l.msg.startsWith('CancelTask')), false, 'no CancelTask sent')
  assert.equal(w1.has(msgHas('Cancelling task')), false, 'nothing killed on the worker')
})

test('a worker paused for less than the heartbeat timeout is suspect at the AssignTask deadline; resumed, a probe clears it within its backoff and the task runs there', async (t) => {
  // Long enough that the pause (the 5 s AssignTask deadline, then a little) never makes it inactive.
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', '30s', '--shutdown-grace', '2s'] })
  const worker = await addWorker(t, master, 'w1')
  const file = runsFile(t)
  const mark = master.proc.mark()
  worker.child.kill('SIGSTOP')
  let id: string
  try {
    id = await submit(master.api, `echo $$ >> ${file}; exec sleep 2`)
    await master.proc.waitForLog((l) => l.workerId === 'w1' && msgHas('is suspect: AssignTask failed (DEADLINE_EXCEEDED')(l), 'w1 suspect at the deadline', { from: mark, timeoutMs: 15_000 })
  } finally {
    worker.child.kill('SIGCONT')
  }
  await master.proc.waitForLog((l) => l.workerId === 'w1' && msgHas('answers again (probe)')(l), 'cleared by a probe', { from: mark, timeoutMs: 15_000 })
  await waitUntil(async () => (await task(master.api, id)).status === 'running', 'running on w1', 15_000)
  // A run the timed-out AssignTask started is kept and counted once; otherwise the next placement runs.
  const v = await task(master.api, id)
  assert.equal(v.worker_id, 'w1')
  assert.equal(v.attempts, 1)
  await master.proc.waitForLog(taskFinished(id), 'task finished', { timeoutMs: 30_000 })
  assert.equal((await task(master.api, id)).status, 'completed')
  assert.equal(runs(file).length, 1, 'one run, counted once the task is over')
  assert.equal(master.proc.lines.filter((l) => l.workerId === 'w1' && msgHas('is suspect')(l)).length, 1, 'suspect once')
})
