import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, runCli, startMaster, tempDir, waitUntil } from '../support/cluster.js'
import { runs, runsFile } from '../support/runs-file.js'
import { addWorker, FLAGS, post, register, startCli, submit, task, worker } from '../support/scheduling.js'
import { Watcher } from '../support/watcher.js'

// Cordon, end to end, and what cordon, uncordon and drain refuse: a real master, real workers.

test('a cordoned worker takes no new task, one that targets it waits, and it runs once uncordoned; the CLI and the worker list show it', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  await addWorker(t, m, 'w1')
  await addWorker(t, m, 'w2')
  const ws = await Watcher.open(t, `${m.api.replace('http', 'ws')}/ws`)
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
  // Watchers are told: the worker message carries the whole view.
  const told = await ws.next((msg) => msg.type === 'worker' && msg.worker?.worker_id === 'w1' && msg.worker?.scheduling === 'cordoned', 'w1 cordoned on /ws')
  assert.equal(told.worker.cordoned, true)
  // Oldest first: the targeted task is looked at before the others, every time the queue is.
  const targeted = await submit(m, { command: 'true', target_worker_id: 'w1' })
  const others = [await submit(m, { command: 'true' }), await submit(m, { command: 'true' }), await submit(m, { command: 'true' })]
  for (const id of others) await waitUntil(async () => (await task(m, id)).status === 'completed', `${id} completed`)
  for (const id of others) assert.equal((await task(m, id)).worker_id, 'w2', 'nothing new goes to a cordoned worker')
  assert.equal((await task(m, targeted)).status, 'queued', 'a task for a cordoned worker waits')
  const beforeUncordon = ws.mark()
  const uncordon = await runCli(['uncordon', 'w1', '--api', m.api])
  assert.equal(uncordon.code, 0, uncordon.stderr)
  assert.match(uncordon.stdout, /Worker w1 uncordoned: it takes tasks again/)
  await waitUntil(async () => (await task(m, targeted)).status === 'completed', 'the targeted task ran once uncordoned')
  assert.equal((await task(m, targeted)).worker_id, 'w1')
  assert.equal((await worker(m, 'w1')).scheduling, 'eligible')
  await ws.next((msg) => msg.type === 'worker' && msg.worker?.worker_id === 'w1' && msg.worker?.scheduling === 'eligible', 'w1 uncordoned on /ws', { from: beforeUncordon })
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

test('Ctrl-C stops the waiting of cloudai drain, not the drain', async (t) => {
  const m = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  await addWorker(t, m, 'w1')
  const file = runsFile(t)
  const id = await submit(m, { command: `echo $$ >> ${file}; exec sleep 30` })
  await waitUntil(() => runs(file).length === 1, 'the task started')
  await waitUntil(async () => (await worker(m, 'w1')).running_tasks.length === 1, 'w1 lists the task')
  const cli = startCli(t, ['drain', 'w1', '--api', m.api])
  await waitUntil(() => cli.out.stderr.includes('draining worker w1: 1 task still running there (no deadline)'), 'the CLI waits')
  cli.child.kill('SIGINT')
  assert.equal(await cli.exited, 130)
  assert.match(cli.out.stderr, /Stopped waiting: the drain of worker w1 goes on on the master/)
  assert.equal((await worker(m, 'w1')).scheduling, 'draining', 'the drain goes on')
  assert.equal((await task(m, id)).status, 'running')
})
