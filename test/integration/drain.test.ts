import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { api, msgHas, runCli, startMaster, startWorker, tempDir, waitUntil } from '../support/cluster.js'
import { alive, runs, runsFile } from '../support/runs-file.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'
import { active, addWorker, FLAGS, passes, post, register, startCli, submit, task, worker } from '../support/scheduling.js'

// Drain, end to end: a real master, real workers, real commands. Each run of a task that matters
// appends its pid to a runs file, so a test counts real runs (and kills them at the end).

/**
 * A command whose every run first checks that the run before it is gone (else it appends its pid
 * to `${file}.overlap`: two runs at once), then appends its own pid, then does `then` (by default:
 * the first run sleeps until it is stopped, the next ones finish).
 */
const oneAtATime = (file: string, then = `[ $(wc -l < ${file}) -ge 2 ] || exec sleep 30`): string =>
  `prev=$(tail -n 1 ${file} 2>/dev/null); if [ -n "$prev" ] && kill -0 "$prev" 2>/dev/null; then echo $$ >> ${file}.overlap; fi; echo $$ >> ${file}; ${then}`
const overlaps = (file: string): number[] => runs(`${file}.overlap`)

async function scrape(m: { api: string }): Promise<(name: string) => number | undefined> {
  const res = await fetch(`${m.api}/metrics`, { signal: AbortSignal.timeout(10_000) })
  assert.equal(res.status, 200)
  const families = parsePrometheus(await res.text())
  return (name) => promValue(families, name, {})
}

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

  // Stopped: inactive longer than --health-max-inactive, yet healthy, and not counted inactive.
  await w1.kill('SIGTERM')
  await waitUntil(async () => !(await worker(m, 'w1')).is_active, 'w1 inactive')
  // Each pass dials w1, the one inactive worker, every 300 ms: six of them span more than both 1 s thresholds.
  await passes(m, 6)
  const health = await api(m.api, '/healthz')
  assert.equal(health.status, 200, JSON.stringify(health.body))
  assert.equal(health.body.status, 'healthy', JSON.stringify(health.body))
  assert.deepEqual(health.body.workers, { total: 1, active: 0, inactive: 0 }, 'a drained, stopped worker is no inactive one')
  const metric = await scrape(m)
  assert.equal(metric('cloudai_workers_inactive'), 0, 'an alert on inactive workers does not fire for a planned stop')
  assert.equal(metric('cloudai_workers_drained'), 1)
  assert.equal(metric('cloudai_workers_draining'), 0)
  assert.equal(metric('cloudai_workers_cordoned'), 0)

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
  const id = await submit(m, { command: oneAtATime(file), max_attempts: 1 })
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
  assert.deepEqual(overlaps(file), [], 'the stopped run was gone when the next one started')
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
  const id = await submit(m, { command: oneAtATime(file, 'exec sleep 30') })
  await waitUntil(() => runs(file).length === 1, 'the first run started')
  await waitUntil(async () => (await task(m, id)).status === 'running', 'running on w1')
  const first = runs(file)[0]!
  const from = m.proc.mark()
  const drain = await post(m, '/api/workers/w1/drain', { force: true })
  assert.equal(drain.status, 200, JSON.stringify(drain.body))
  await m.proc.waitForLog((l) => l.taskId === id && msgHas('requeued off worker w1')(l), 'the drain requeued it', { from })
  assert.equal((await post(m, '/api/workers/w1/uncordon')).status, 200)
  await waitUntil(() => runs(file).length === 2, 'it runs again')
  assert.deepEqual(overlaps(file), [], 'the stopped run was gone when the next one started')
  assert.equal(alive(first), false)
  await waitUntil(async () => (await task(m, id)).status === 'running', 'running again')
  await passes(m, 4)
  assert.equal(runs(file).length, 2, 'one run after the drain, not two')
  const t1 = await task(m, id)
  assert.equal(t1.status, 'running')
  assert.equal(t1.attempts, 1, 'the stopped run is not counted')
  assert.equal((await worker(m, 'w1')).scheduling, 'eligible')
})


test('a drain deadline that passed while the master was down stops the run on its worker before the task runs elsewhere: it never runs twice', async (t) => {
  const dataDir = tempDir(t)
  const m1 = await startMaster(t, { dataDir, args: FLAGS, name: 'master-1' })
  const { proc: w1 } = await addWorker(t, m1, 'w1')
  const file = runsFile(t)
  const id = await submit(m1, { command: oneAtATime(file) })
  await waitUntil(() => runs(file).length === 1, 'the first run started')
  await waitUntil(async () => (await task(m1, id)).status === 'running', 'running on w1')
  const res = await post(m1, '/api/workers/w1/drain', { deadline_s: 1 })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  const deadline = Date.parse(res.body.worker.drain.deadline as string)
  // w1 answers nothing until another worker is there to take the task (its run goes on meanwhile),
  // and the master is down at the deadline.
  w1.child.kill('SIGSTOP')
  t.after(() => w1.child.kill('SIGCONT'))
  await m1.proc.kill('SIGKILL')
  await waitUntil(() => Date.now() > deadline, 'past the drain deadline')
  // A requeue wait longer than the test: only the drain may take the task off w1.
  const m2 = await startMaster(t, { dataDir, args: [...FLAGS, '--requeue-after', '1m'], name: 'master-2' })
  await addWorker(t, m2, 'w2')
  await passes(m2, 2)
  const held = await task(m2, id)
  assert.deepEqual({ status: held.status, worker_id: held.worker_id }, { status: 'running', worker_id: 'w1' }, 'not placed elsewhere while w1 may still run it')
  const back = m2.proc.mark()
  w1.child.kill('SIGCONT')
  await m2.proc.waitForLog(active('w1'), 'w1 back', { from: back })
  await waitUntil(async () => (await task(m2, id)).status === 'completed', 'the task completed', 30_000)
  const done = await task(m2, id)
  assert.equal(done.worker_id, 'w2')
  assert.equal(done.attempts, 1, 'the run the drain stopped is not counted')
  assert.ok(done.history.some((h) => h.status === 'queued' && /drain deadline passed while it was inactive/.test(h.reason ?? '')), JSON.stringify(done.history))
  assert.equal(runs(file).length, 2, 'one run stopped on w1, one on w2')
  assert.deepEqual(overlaps(file), [], 'the run on w1 was gone when the one on w2 started')
  await waitUntil(async () => (await worker(m2, 'w1')).scheduling === 'drained', 'w1 drained')
})
