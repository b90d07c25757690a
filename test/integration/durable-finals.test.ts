import assert from 'node:assert/strict'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import Database from 'better-sqlite3'
import { api, msgHas, reservePort, startMaster, startWorker, tempDir, waitUntil, type LogLine } from '../support/cluster.js'
import { RawClient } from '../support/grpc-client.js'
import { Watcher, type WatchedMessage } from '../support/watcher.js'

// A final state (completed, failed, cancelled) is in the store before the master acts on it or
// announces it. The outage is real: another process holds SQLite's write lock (BEGIN EXCLUSIVE),
// as in store-outage.test.ts; reads still work in WAL mode, which is how the store is checked.

const FINAL = new Set(['completed', 'failed', 'cancelled'])
const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith('Successfully reconnected')
const notDelivered = (taskId: string) => (l: LogLine): boolean => l.taskId === taskId && l.msg.startsWith(`Could not deliver the result of task ${taskId}`)
const delivered = (taskId: string) => (l: LogLine): boolean => l.taskId === taskId && l.msg.startsWith(`Result of task ${taskId}`) && l.msg.includes('delivered to the master')

interface StoredTask {
  status: string
  attempts: number
  history: { status: string }[]
}

function storedTask(db: Database.Database, id: string): StoredTask | undefined {
  const row = db.prepare('SELECT doc FROM tasks WHERE task_id = ?').get(id) as { doc: string } | undefined
  return row ? (JSON.parse(row.doc) as StoredTask) : undefined
}

/** The statuses a watcher saw the task in, in order: its snapshot's, then each change. */
function seenBy(w: Watcher, id: string): { statuses: string[]; completedEvents: number } {
  const statuses: string[] = []
  let completedEvents = 0
  for (const m of w.messages as WatchedMessage[]) {
    if (m.type === 'snapshot') {
      const t = (m.tasks as { task_id: string; status: string }[]).find((x) => x.task_id === id)
      if (t) statuses.push(t.status)
    } else if (m.type === 'task_status' && m.task_id === id) {
      statuses.push(m.status as string)
      if (m.status === 'completed') completedEvents++
    }
  }
  return { statuses, completedEvents }
}

/** Where a sequence of states leaves a final one for another state (null: it never does). */
function movesBackwards(statuses: readonly string[]): string | null {
  for (let i = 1; i < statuses.length; i++) {
    if (FINAL.has(statuses[i - 1]!) && statuses[i] !== statuses[i - 1]) return `${statuses[i - 1]} -> ${statuses[i]} at ${i} of ${statuses.join(', ')}`
  }
  return null
}

test('a task that finishes while the store is down is not acknowledged; the master killed -9 before the store returns, it still ends completed once and runs once', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const work = tempDir(t)
  const runs = join(work, 'runs')
  const go = join(work, 'go')
  const workerDir = tempDir(t, 'cloudai-worker-a-')
  let master = await startMaster(t, { dataDir })
  const port = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-a', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  const worker = await startWorker(t, 'worker-a', port, { dataDir: workerDir })
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  const first = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)

  // Each run appends a line, then waits for the go-ahead: it finishes only once the store is locked.
  const submitted = await api(master.api, '/api/tasks', { method: 'POST', body: { command: `echo run >> '${runs}'; while [ ! -e '${go}' ]; do sleep 0.05; done; echo finished`, target_worker_id: 'worker-a' } })
  assert.equal(submitted.status, 201)
  const id = submitted.body.task_id as string
  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  await waitUntil(() => storedTask(db, id)?.status === 'running', 'the store to hold the task running')

  db.exec('BEGIN EXCLUSIVE')
  let locked = true
  t.after(() => {
    if (locked) db.exec('ROLLBACK')
  })
  const mark = worker.mark()
  writeFileSync(go, '')
  const answer = await worker.waitForLog((l) => notDelivered(id)(l) || delivered(id)(l), 'the worker to hear back about the result', { from: mark })
  assert.ok(notDelivered(id)(answer), `while the store is down the result is not acknowledged: ${answer.msg}`)
  assert.equal(answer.code, 'UNAVAILABLE', 'a retryable refusal')
  await worker.waitForLog((l) => l.taskId === id && msgHas('still not delivered')(l), 'a redelivery, refused again', { from: mark })
  assert.deepEqual(readdirSync(join(workerDir, 'outbox')).filter((f) => f.endsWith('.json')).length, 1, 'the result stays in the worker\'s outbox file')

  // The same report by hand, as worker-a (loopback, tokenless): UNAVAILABLE with the code in metadata.
  const raw = new RawClient(t, `127.0.0.1:${master.grpcPort}`)
  const refused = await raw.refusal('ReportTaskCompletion', { task_id: id, worker_id: 'worker-a', status: 'success', logs: 'finished\n', attempt: 1 })
  assert.deepEqual([refused.code, refused.cloudai], [grpc.status.UNAVAILABLE, 'CLOUDAI_STORE_DEGRADED'])
  const inMemory = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(inMemory.status, 'running', 'memory does not run ahead of the store with a final state')
  assert.equal(seenBy(first, id).completedEvents, 0, 'nobody was told it completed')
  assert.equal(storedTask(db, id)?.status, 'running')

  await master.proc.kill('SIGKILL')
  db.exec('ROLLBACK')
  locked = false

  master = await startMaster(t, { dataDir, name: 'master-2' })
  const second = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)
  await waitUntil(async () => (await api(master.api, `/api/tasks/${id}`)).body.status === 'completed' || undefined, 'the task completed on the restarted master', 30_000)
  await worker.waitForLog(delivered(id), 'the result delivered to the restarted master')
  await waitUntil(() => readdirSync(join(workerDir, 'outbox')).filter((f) => f.endsWith('.json')).length === 0, 'the outbox emptied')
  await second.next((m) => (m.type === 'snapshot' && m.tasks.some((x: { task_id: string; status: string }) => x.task_id === id && x.status === 'completed')) || (m.type === 'task_status' && m.task_id === id && m.status === 'completed'), 'the second watcher to see it completed')

  const task = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(task.exit_code, 0)
  assert.equal(task.attempts, 1, 'no second attempt')
  assert.equal(readFileSync(runs, 'utf8'), 'run\n', 'the command ran once')
  const stored = storedTask(db, id)!
  assert.equal(stored.status, 'completed')
  const history = stored.history.map((h) => h.status)
  assert.equal(history.filter((s) => s === 'completed').length, 1, `completed once in the store: ${history.join(', ')}`)
  assert.equal(movesBackwards(history), null, 'the stored history never leaves a final state')
  assert.deepEqual(task.history.map((h: { status: string }) => h.status), history, 'memory and the store agree')

  const a = seenBy(first, id)
  const b = seenBy(second, id)
  assert.ok(a.completedEvents <= 1 && b.completedEvents <= 1, `completed announced at most once per master (${a.completedEvents}, ${b.completedEvents})`)
  assert.equal(movesBackwards([...a.statuses, ...b.statuses]), null, 'watchers never see it leave a final state')
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})

test('an operator cancel while the store is down is refused with 503 CLOUDAI_STORE_DEGRADED and changes nothing; once it answers, the cancel goes through', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir })
  const port = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-a', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  const worker = await startWorker(t, 'worker-a', port)
  await master.proc.waitForLog(reconnected('worker-a'), 'worker-a active')
  const id = (await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'sleep 60' } })).body.task_id as string
  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  await waitUntil(() => storedTask(db, id)?.status === 'running', 'the store to hold the task running')
  const before = (await api(master.api, `/api/tasks/${id}`)).body

  db.exec('BEGIN EXCLUSIVE')
  let locked = true
  t.after(() => {
    if (locked) db.exec('ROLLBACK')
  })
  const workerMark = worker.mark()
  const refused = await api(master.api, `/api/tasks/${id}`, { method: 'DELETE' })
  assert.equal(refused.status, 503)
  assert.equal(refused.body.error.code, 'CLOUDAI_STORE_DEGRADED')
  assert.match(refused.body.error.message, /not cancelled/)
  const after = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(after.status, 'running', 'the task stays as it was')
  assert.deepEqual(after.history, before.history, 'nothing was added to its history')
  assert.equal(storedTask(db, id)?.status, 'running')

  const mark = master.proc.mark()
  db.exec('ROLLBACK')
  locked = false
  await master.proc.waitForLog(msgHas('Store sqlite is answering again'), 'the store recovered', { from: mark })
  assert.equal(worker.lines.slice(workerMark).some((l) => l.msg.startsWith(`Cancelling task ${id}`)), false, 'the worker was never told to cancel it during the outage')
  const cancelled = await api(master.api, `/api/tasks/${id}`, { method: 'DELETE' })
  assert.equal(cancelled.status, 200)
  assert.equal(cancelled.body.task.status, 'cancelled')
  assert.equal(storedTask(db, id)?.status, 'cancelled', 'durable when answered')
  await worker.waitForLog((l) => l.msg.startsWith(`Cancelling task ${id}`), 'the worker stops it', { from: workerMark })
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})
