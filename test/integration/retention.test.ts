import assert from 'node:assert/strict'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { api, FAST_MASTER_FLAGS, msgHas, registerWorker, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil } from '../support/cluster.js'

// Retention with real processes: a master and a worker with a short --task-retention, a task that
// prints 100 kB, and what is left of it afterwards in the API, in the SQLite file (read on its
// own, read-only) and on the worker's disk.
//
// No check races the retention clock: what must still be there is looked at right after the
// event that starts the clock (the worker's first, as its clock starts first), with a retention
// (5 s) many times what those reads take on a loaded machine; what must be gone is waited for
// with deadlines far past it.

interface StoredRow {
  status: string
  doc: string
}

/** The task's row as the SQLite file holds it, read by a connection of the test's own. */
function storedTask(dataDir: string, id: string): StoredRow | undefined {
  const db = new Database(join(dataDir, 'cloudai.db'), { readonly: true, fileMustExist: true })
  try {
    return db.prepare('SELECT status, doc FROM tasks WHERE task_id = ?').get(id) as StoredRow | undefined
  } finally {
    db.close()
  }
}

async function submit(base: string, command: string): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body: { command } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

const PRINT_100K = 'head -c 100000 /dev/zero | tr "\\0" x; echo; echo the-end'

test('a finished task leaves the API, the SQLite file and the worker\'s disk after the retention, and a restart does not bring it back; the master keeps a bounded output tail', async (t) => {
  const dataDir = tempDir(t)
  const retention = ['--task-retention', '5s', '--task-output-tail', '1KiB']
  const master = await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, ...retention] })
  const port = await reservePort()
  await registerWorker(master.api, 'w1', `127.0.0.1:${port}`)
  const workerData = tempDir(t, 'cloudai-w1-')
  const worker = await startWorker(t, 'w1', port, { dataDir: workerData, args: ['--task-retention', '5s'] })
  // Kept running: retention must never touch an unfinished task, however long it runs.
  const long = await submit(master.api, 'sleep 60')
  const id = await submit(master.api, PRINT_100K)
  await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })

  // At once, in the order the clocks started: the worker's, then the master's (store, then API).
  const taskDir = join(workerData, 'tasks', `${id}-1`)
  assert.equal(statSync(join(taskDir, 'output.log')).size, 100_009, 'the worker keeps the whole log')
  const row = storedTask(dataDir, id)
  const view = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(row?.status, 'completed')
  assert.ok(Buffer.byteLength((JSON.parse(row.doc) as { logsTail: string }).logsTail) <= 1024, 'the store holds the bounded tail too')
  assert.equal(view.status, 'completed')
  assert.ok(Buffer.byteLength(view.logs) <= 1024 && view.logs.endsWith('xxx\nthe-end\n'), `the end of the output, at most 1 KiB: ${Buffer.byteLength(view.logs)} bytes`)

  await waitUntil(async () => (await api(master.api, `/api/tasks/${id}`)).status === 404, 'the task to leave the API', 30_000)
  const list = (await api(master.api, '/api/tasks?status=completed')).body
  assert.equal(list.total, 0)
  assert.equal((await api(master.api, '/api/status')).body.tasks.completed, 0)
  await waitUntil(() => storedTask(dataDir, id) === undefined, 'the task to leave the SQLite file', 30_000)
  await waitUntil(() => !existsSync(taskDir), 'the worker to remove the task directory', 30_000)
  assert.equal((await api(master.api, `/api/tasks/${long}`)).body.status, 'running', 'the running task is kept')
  assert.ok(existsSync(join(workerData, 'tasks', `${long}-1`)), 'and so is its directory')
  assert.equal(storedTask(dataDir, long)?.status, 'running')

  await worker.kill('SIGTERM')
  await master.proc.kill('SIGTERM')
  const again = await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, ...retention], name: 'master-again' })
  assert.equal((await api(again.api, `/api/tasks/${id}`)).status, 404, 'a restart does not bring it back')
  assert.equal(storedTask(dataDir, id), undefined)
})

test('at start, tasks already past the retention are removed from the store without being loaded', async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir })
  const port = await reservePort()
  await registerWorker(master.api, 'w1', `127.0.0.1:${port}`)
  await startWorker(t, 'w1', port)
  const ids = [await submit(master.api, 'echo one'), await submit(master.api, 'exit 4')]
  for (const id of ids) await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })
  await master.proc.kill('SIGTERM')
  // The condition itself, not a pause: both finished more than the next start's 1 s retention ago.
  const finishedAt = ids.map((id) => JSON.parse(storedTask(dataDir, id)!.doc).updatedAt as number)
  await waitUntil(() => Date.now() > Math.max(...finishedAt) + 1100, 'the tasks to be older than 1 s')

  const again = await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, '--task-retention', '1s'], name: 'master-again' })
  const removed = await again.proc.waitForLog(msgHas('older than the task retention'), 'the start-up removal')
  assert.equal(removed.removed, 2)
  const loaded = again.proc.lines.find((l) => l.step === 3)
  assert.equal(loaded?.msg.includes('and 0 task(s)'), true, `nothing of them loaded: ${loaded?.msg}`)
  for (const id of ids) {
    assert.equal((await api(again.api, `/api/tasks/${id}`)).status, 404)
    assert.equal(storedTask(dataDir, id), undefined)
  }
})

test('at start, finished tasks past --max-finished-tasks are removed from the store without being loaded; the newest stay', async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir })
  const port = await reservePort()
  await registerWorker(master.api, 'w1', `127.0.0.1:${port}`)
  await startWorker(t, 'w1', port)
  // One after the other, so that the order they finished in is the order they were submitted in.
  const ids: string[] = []
  for (const command of ['echo one', 'exit 4', 'echo three']) {
    const id = await submit(master.api, command)
    await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })
    ids.push(id)
  }
  // Unfinished: never removed, and not counted among the finished.
  const running = await submit(master.api, 'sleep 60')
  await waitUntil(async () => (await api(master.api, `/api/tasks/${running}`)).body.status === 'running', 'the long task running')
  await master.proc.kill('SIGTERM')
  const stored = ids.map((id) => storedTask(dataDir, id))
  assert.ok(stored.every((r) => r !== undefined), 'all three are in the store before the restart')

  const again = await startMaster(t, { dataDir, args: [...FAST_MASTER_FLAGS, '--max-finished-tasks', '2'], name: 'master-again' })
  const removed = again.proc.lines.find(msgHas('past the newest 2'))
  assert.equal(removed?.removed, 1, 'one removed in the store at start')
  const loaded = again.proc.lines.find((l) => l.step === 3)
  assert.equal(loaded?.msg.includes('and 3 task(s)'), true, `only the newest two finished and the running one loaded: ${loaded?.msg}`)
  assert.equal((await api(again.api, `/api/tasks/${ids[0]}`)).status, 404)
  assert.equal(storedTask(dataDir, ids[0]!), undefined)
  for (const id of ids.slice(1)) assert.notEqual(storedTask(dataDir, id), undefined)
  assert.equal((await api(again.api, `/api/tasks/${ids[2]}`)).body.status, 'completed')
  assert.equal((await api(again.api, `/api/tasks/${ids[1]}`)).body.status, 'failed')
  assert.notEqual((await api(again.api, `/api/tasks/${running}`)).status, 404)
  assert.notEqual(storedTask(dataDir, running), undefined)
})
