import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { api, msgHas, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine } from '../support/cluster.js'

const running = (id: string, worker?: string) => (l: LogLine): boolean => l.taskId === id && l.msg.startsWith(`Task ${id} assigned to worker ${worker ?? ''}`)
const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Successfully reconnected to worker ${id}`)

interface TaskView {
  task_id: string
  status: string
  worker_id: string | null
  exit_code: number | null
  logs: string
  attempts: number
  attempt: number
  reason: string | null
  submitted_at: string
  assigned_at: string | null
  started_at: string | null
  finished_at: string | null
  history: { status: string; worker_id: string | null }[]
}

async function submit(base: string, body: object): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  assert.equal(res.body.status, 'queued')
  assert.match(res.body.task_id, /^task-[0-9a-f-]{36}$/)
  return res.body.task_id as string
}

const task = async (base: string, id: string): Promise<TaskView> => (await api<TaskView>(base, `/api/tasks/${id}`)).body

test('the CloudAI end-to-end flow: tasks queue while workers are offline, then run and complete with their real exit code and output', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const ports = [await reservePort(), await reservePort()]
  for (const [i, port] of ports.entries()) {
    assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: `worker-${i + 1}`, worker_ip: `127.0.0.1:${port}` } })).status, 201)
  }
  const ids = [
    await submit(master.api, { command: 'echo "hello from $CLOUDAI_TASK_ID"', name: 'hello' }),
    await submit(master.api, { command: 'echo to-stderr >&2; exit 3', name: 'exit-3', cpu_required: 0.5 }),
    await submit(master.api, { command: 'printf "%s" "$GREETING"', env: { GREETING: 'bonjour' }, req_cpu: 1 }),
    await submit(master.api, { command: 'pwd', target_worker_id: 'worker-2' }),
  ]
  const queued = (await api(master.api, '/api/tasks?status=queued')).body
  assert.equal(queued.total, 4)
  assert.deepEqual(queued.tasks.map((x: TaskView) => x.task_id), [...ids].reverse(), 'newest first')
  const mark = master.proc.mark()
  await startWorker(t, 'worker-1', ports[0]!)
  await startWorker(t, 'worker-2', ports[1]!)
  for (const id of ids) await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { from: 0, timeoutMs: 30_000 })
  assert.ok(master.proc.has(reconnected('worker-1'), mark))

  const [hello, exit3, env, target] = await Promise.all(ids.map((id) => task(master.api, id)))
  assert.equal(hello!.status, 'completed')
  assert.equal(hello!.exit_code, 0)
  assert.equal(hello!.logs, `hello from ${ids[0]}\n`)
  assert.equal(exit3!.status, 'failed')
  assert.equal(exit3!.exit_code, 3)
  assert.equal(exit3!.logs, 'to-stderr\n')
  assert.equal(env!.logs, 'bonjour')
  assert.equal(target!.worker_id, 'worker-2', 'a target worker is honoured')
  for (const v of [hello!, exit3!, env!, target!]) {
    assert.equal(v.attempts, 1)
    assert.equal(v.attempt, 1, 'the placement number is shown')
    assert.ok(v.assigned_at && v.started_at && v.finished_at)
    assert.deepEqual(v.history.map((h) => h.status).slice(0, 2), ['queued', 'assigned'])
  }
  assert.deepEqual((await api(master.api, '/api/status')).body.tasks, { queued: 0, assigned: 0, running: 0, completed: 3, failed: 1, cancelled: 0 })

  // A task no registered worker could ever fit is accepted, says so, and blocks nothing behind it.
  const huge = await submit(master.api, { command: 'true', req_cpu: 4096 })
  const small = await submit(master.api, { command: 'echo small' })
  await master.proc.waitForLog(taskFinished(small), 'the small task behind the huge one finished')
  const hugeView = await task(master.api, huge)
  assert.equal(hugeView.status, 'queued')
  assert.match(hugeView.reason ?? '', /no registered worker is large enough/)
})

test('a worker killed with -9 while its task runs: the task is requeued and completes on the other worker, once', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const [p1, p2] = [await reservePort(), await reservePort()]
  await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${p1}` } })
  await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w2', worker_ip: `127.0.0.1:${p2}` } })
  const w1 = await startWorker(t, 'w1', p1)
  await master.proc.waitForLog(reconnected('w1'), 'w1 active')
  // The first run marks a file and outlives the test's kill; the second, seeing the mark, finishes
  // at once. No timing assumption about how long starting w2 takes.
  const mark = join(tempDir(t), 'first-run')
  const id = await submit(master.api, { command: 'if [ -e "$MARK" ]; then echo finished; else touch "$MARK"; sleep 30; fi', name: 'survivor', env: { MARK: mark } })
  await master.proc.waitForLog(running(id, 'w1'), 'task running on w1')
  await startWorker(t, 'w2', p2)
  await master.proc.waitForLog(reconnected('w2'), 'w2 active')
  await w1.kill('SIGKILL')
  await master.proc.waitForLog((l) => l.taskId === id && l.msg.startsWith(`Task ${id} requeued`), 'requeued after the heartbeat timeout')
  await master.proc.waitForLog(taskFinished(id), 'finished on w2', { timeoutMs: 30_000 })
  const v = await task(master.api, id)
  assert.equal(v.status, 'completed')
  assert.equal(v.worker_id, 'w2')
  assert.equal(v.attempts, 2)
  assert.equal(v.attempt, 2)
  assert.equal(v.logs, 'finished\n')
  assert.deepEqual(v.history.map((h) => `${h.status}@${h.worker_id ?? '-'}`), ['queued@-', 'assigned@w1', 'running@w1', 'queued@-', 'assigned@w2', 'running@w2', 'completed@w2'])
})

test('the master killed with -9 with tasks queued and running: after restart nothing is lost and every task finishes', async (t) => {
  const dataDir = tempDir(t)
  let master = await startMaster(t, { dataDir })
  const port = await reservePort()
  await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` } })
  await startWorker(t, 'w1', port)
  await master.proc.waitForLog(reconnected('w1'), 'w1 active')
  const cores = (await api(master.api, '/api/workers/w1')).body.total_cpu as number
  // Two fit at once; two wait in the queue.
  const ids: string[] = []
  for (let i = 0; i < 4; i++) ids.push(await submit(master.api, { command: `sleep 2; echo t${i}`, req_cpu: cores / 2 }))
  await master.proc.waitForLog(running(ids[0]!), 'first running')
  await master.proc.waitForLog(running(ids[1]!), 'second running')
  assert.deepEqual((await api(master.api, '/api/status')).body.tasks.queued, 2)
  await master.proc.kill('SIGKILL')

  master = await startMaster(t, { dataDir, name: 'master-2' })
  const loaded = await master.proc.waitForLog((l) => l.step === 3, 'tasks loaded')
  assert.deepEqual(loaded.tasks, { queued: 2, assigned: 0, running: 2, completed: 0, failed: 0, cancelled: 0 })
  for (const id of ids) await master.proc.waitForLog(taskFinished(id), `task ${id} finished after the restart`, { timeoutMs: 30_000 })
  for (const [i, id] of ids.entries()) {
    const v = await task(master.api, id)
    assert.equal(v.status, 'completed', JSON.stringify(v))
    assert.equal(v.logs, `t${i}\n`)
    assert.equal(v.history.filter((h) => h.status === 'completed').length, 1, 'completed once')
  }
})

test('cancelling a running task kills its whole process group on the worker', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` } })
  await startWorker(t, 'w1', port)
  await master.proc.waitForLog(reconnected('w1'), 'w1 active')
  const pids = tempDir(t)
  const id = await submit(master.api, { command: 'echo $$ > "$PIDS/sh.pid"; sleep 300 & echo $! > "$PIDS/child.pid"; wait', env: { PIDS: pids } })
  await master.proc.waitForLog(running(id, 'w1'), 'running')
  const read = (f: string) => waitUntil(() => {
    try {
      const n = Number(readFileSync(join(pids, f), 'utf8').trim())
      return n > 0 ? n : undefined
    } catch {
      return undefined
    }
  }, `${f} written by the task`)
  const [sh, child] = [await read('sh.pid'), await read('child.pid')]
  const del = await api(master.api, `/api/tasks/${id}`, { method: 'DELETE' })
  assert.equal(del.status, 200)
  assert.equal(del.body.task.status, 'cancelled')
  // Gone, or a zombie: this machine's PID 1 does not reap orphans, and a killed grandchild
  // reparented to it stays in the table as state Z until it does.
  const gone = (pid: number) => {
    try {
      process.kill(pid, 0)
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH'
    }
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').startsWith('Z')
    } catch {
      return true
    }
  }
  await waitUntil(() => gone(sh) && gone(child), 'the task shell and its child to be gone')
  await master.proc.waitForLog(msgHas(`CancelTask ${id} on worker w1`), 'the worker confirmed the cancel')
  const again = await api(master.api, `/api/tasks/${id}`, { method: 'DELETE' })
  assert.equal(again.status, 409)
  assert.equal(again.body.error.code, 'CLOUDAI_TASK_FINISHED')
  assert.equal((await task(master.api, id)).status, 'cancelled')
})

test('bad task input gets a 4xx with a code and changes nothing', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const bad = async (body: unknown, status: number, code: string, raw?: string): Promise<void> => {
    const res = await fetch(`${master.api}/api/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw ?? JSON.stringify(body) })
    const json = (await res.json()) as { error: { code: string; message: string } }
    assert.equal(res.status, status, JSON.stringify(json))
    assert.equal(json.error.code, code)
    assert.ok(json.error.message.length > 0)
  }
  await bad({ command: '' }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: '   ' }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ name: 'no command' }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: 'true', req_cpu: -1 }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: 'true', cpu_required: 'two' }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: 'true', req_memory: Number.NaN }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: 'true', max_attempts: 0 }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: 'true', env: { 'BAD-NAME': 'x' } }, 400, 'CLOUDAI_BAD_FIELD')
  await bad({ command: 'true', target_worker_id: 'nobody' }, 404, 'CLOUDAI_UNKNOWN_WORKER')
  await bad(null, 400, 'CLOUDAI_BAD_JSON', '{"command": "true"')
  await bad(null, 413, 'CLOUDAI_BODY_TOO_LARGE', JSON.stringify({ command: 'x'.repeat(1024 * 1024 + 10) }))
  assert.equal((await api(master.api, '/api/tasks')).body.total, 0)
  assert.equal((await api(master.api, '/api/tasks/task-nope')).status, 404)
  assert.equal((await api(master.api, '/api/tasks/task-nope', { method: 'DELETE' })).status, 404)
  assert.equal((await api(master.api, '/api/tasks/bad%20id')).status, 400)

  // Accepted even though no registered worker could ever run it, and its status says so.
  await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'small', worker_ip: `127.0.0.1:${await reservePort()}` } })
  const id = await submit(master.api, { command: 'true', req_cpu: 4096 })
  const v = await task(master.api, id)
  assert.equal(v.status, 'queued')
  assert.equal(v.reason, null, 'a worker that never connected may still be large enough')
})
