import assert from 'node:assert/strict'
import { test } from 'node:test'
import { TaskTable } from '../../src/master/tasks.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { Registry } from '../../src/master/registry.js'
import { StoreJournal } from '../../src/store/journal.js'
import { FlakyStore } from '../support/flaky-store.js'
import { memoryLogger } from '../support/log.js'
import { CloudaiError } from '../../src/shared/errors.js'

function tableOn(store: FlakyStore, now?: () => number): { table: TaskTable; journal: StoreJournal } {
  const journal = new StoreJournal(store, new Registry(), { log: memoryLogger('silent').log, limit: 1000, retryBaseMs: 10, retryCapMs: 20 })
  journal.start(true)
  const table = new TaskTable(journal, now)
  journal.on('tasks-written', (ids) => table.markDurable(ids))
  return { table, journal }
}

const strict = { acceptWhileDegraded: false }

test('every transition is in the store when it resolves, with a timestamp; final states never move', async (t) => {
  const store = new FlakyStore()
  const { table, journal } = tableOn(store)
  t.after(() => journal.close())
  const task = await table.submit(parseTaskInput({ command: 'true' }), strict)
  assert.deepEqual((await store.loadTasks()).map((x) => x.status), ['queued'])
  assert.ok(await table.transition(task.id, 'assigned', { workerId: 'w', attempt: 1 }, null))
  assert.equal((await store.loadTasks())[0]?.status, 'assigned', 'durable once the transition resolves')
  assert.ok(await table.transition(task.id, 'running', {}, null, { workerId: 'w', attempt: 1 }))
  assert.equal(await table.transition(task.id, 'completed', {}, null, { workerId: 'other' }), null, 'a guard that does not hold changes nothing')
  assert.ok(await table.transition(task.id, 'completed', { exitCode: 0 }, null, { workerId: 'w', attempt: 1 }))
  assert.equal(await table.transition(task.id, 'queued', {}, 'late requeue'), null, 'completed is final')
  assert.equal(await table.transition(task.id, 'failed', {}, 'late report'), null)
  const stored = (await store.loadTasks())[0]!
  assert.deepEqual(stored.history.map((h) => h.status), ['queued', 'assigned', 'running', 'completed'])
  assert.ok(stored.history.every((h) => h.at > 0))
  assert.deepEqual(stored, table.get(task.id))
})

test('a store that fails: submissions are refused, or kept as not durable when asked; work goes on from memory', async (t) => {
  const store = new FlakyStore()
  const { table, journal } = tableOn(store)
  t.after(() => journal.close())
  const first = await table.submit(parseTaskInput({ command: 'true' }), strict)
  store.failing = true
  await assert.rejects(table.submit(parseTaskInput({ command: 'true' }), strict), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_DEGRADED')
  assert.equal(table.size, 1, 'a refused task is nowhere')
  const kept = await table.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: true })
  assert.equal(table.isDurable(kept.id), false)
  assert.equal(table.isDurable(first.id), true)
  assert.ok(await table.transition(first.id, 'assigned', { workerId: 'w', attempt: 1 }, null), 'non-final transitions go on from memory')
  assert.equal(table.get(first.id)?.status, 'assigned')

  const written = new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  store.failing = false
  await written
  assert.equal(table.isDurable(kept.id), true, 'durable once the journal wrote it')
  const stored = new Map((await store.loadTasks()).map((x) => [x.id, x.status]))
  assert.deepEqual(Object.fromEntries(stored), { [first.id]: 'assigned', [kept.id]: 'queued' })
})

test('a final transition is written to the store before memory holds it: while the store fails it throws CLOUDAI_STORE_DEGRADED and changes nothing; non-final ones still apply from memory', async (t) => {
  const store = new FlakyStore()
  const { table, journal } = tableOn(store)
  t.after(() => journal.close())
  const task = await table.submit(parseTaskInput({ command: 'true' }), strict)
  assert.ok(await table.transition(task.id, 'assigned', { workerId: 'w', attempt: 1 }, null))
  const heard: string[] = []
  table.on('task-changed', (x) => heard.push(x.status))

  store.failing = true
  for (const to of ['completed', 'failed', 'cancelled'] as const) {
    const before = table.get(task.id)
    await assert.rejects(table.transition(task.id, to, { exitCode: 0 }, null), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_DEGRADED', to)
    assert.equal(table.get(task.id), before, `${to}: memory unchanged`)
  }
  assert.deepEqual(heard, [], 'nothing announced')
  assert.equal(table.onWorkerCount('w'), 1, 'still counted on its worker')
  assert.ok(await table.transition(task.id, 'running', {}, null, { workerId: 'w', attempt: 1 }), 'a non-final transition applies from memory')
  assert.equal(table.get(task.id)?.status, 'running')
  assert.deepEqual(heard, ['running'])
  await assert.rejects(table.transition(task.id, 'completed', {}, null), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_DEGRADED', 'still down')
  assert.equal(table.get(task.id)?.status, 'running')

  const back = new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  store.failing = false
  await back
  const done = await table.transition(task.id, 'completed', { exitCode: 0 }, null, { workerId: 'w', attempt: 1 })
  assert.equal(done?.status, 'completed')
  assert.deepEqual(heard, ['running', 'completed'])
  const stored = (await store.loadTasks())[0]!
  assert.deepEqual(stored, done, 'in the store when it resolves')
  assert.deepEqual(stored.history.map((h) => h.status), ['queued', 'assigned', 'running', 'completed'])
})

test('racing transitions are serialised: only one of two completions lands', async () => {
  const { table, journal } = tableOn(new FlakyStore())
  const t = await table.submit(parseTaskInput({ command: 'true' }), strict)
  await table.transition(t.id, 'assigned', { workerId: 'w', attempt: 1 }, null)
  const results = await Promise.all([
    table.transition(t.id, 'completed', {}, null, { from: ['assigned', 'running'] }),
    table.transition(t.id, 'failed', {}, 'x', { from: ['assigned', 'running'] }),
  ])
  assert.equal(results.filter(Boolean).length, 1)
  await journal.close()
})

test('task ids are unique and not derived from a clock', async () => {
  const { table, journal } = tableOn(new FlakyStore(), () => 42)
  const ids = new Set<string>()
  for (let i = 0; i < 200; i++) ids.add((await table.submit(parseTaskInput({ command: 'true' }), strict)).id)
  assert.equal(ids.size, 200)
  await journal.close()
})

test('task bodies: CloudAI names accepted, bad values refused with a code', () => {
  const ok = parseTaskInput({ command: 'run', cpu_required: 2, memory_required: 4, gpu_required: 1, storage_required: 10, docker_image: 'alpine', extra: 'ignored' })
  assert.deepEqual(ok.req, { cpu: 2, memory: 4, gpu: 1, storage: 10 })
  assert.equal(ok.maxAttempts, 3)
  // CloudAI's API takes an image with no command: the image's entrypoint runs.
  const image = parseTaskInput({ docker_image: 'alpine:3.20', cpu_required: 1 })
  assert.deepEqual({ command: image.command, dockerImage: image.dockerImage }, { command: '', dockerImage: 'alpine:3.20' })
  for (const body of [null, [], 'x', { command: '' }, {}, { docker_image: '' }, { docker_image: '--privileged' }, { docker_image: 'Alpine' }, { docker_image: 'alpine:' }, { docker_image: 'alpine:3:4' }, { docker_image: 'alpine latest' }, { docker_image: 'a//b' }, { docker_image: 'alpine', command: '   ' }, { command: 'echo \ud800' }, { command: 'x', env: { A: 'x\udfff' } }, { command: 'x', req_cpu: -1 }, { command: 'x', req_cpu: '1' }, { command: 'x', req_cpu: 1, cpu_required: 2 },
    { command: 'x', timeout_s: -5 }, { command: 'x', max_attempts: 1.5 }, { command: 'x', env: { A: 1 } }, { command: 'x', env: ['A=1'] }, { command: 'x', target_worker_id: 'bad id' }]) {
    assert.throws(() => parseTaskInput(body), (e: CloudaiError) => e instanceof CloudaiError && e.httpStatus === 400, JSON.stringify(body))
  }
})

test('docker_image must be a reference `docker run` takes: registry, port, path, tag and digest as docker parses them, the name in lowercase', () => {
  const digest = `sha256:${'ab'.repeat(32)}`
  for (const image of ['alpine', 'alpine:3.20', 'library/ubuntu:24.04', 'registry.example.com:5000/team/app:1.2-rc_3', `ghcr.io/owner/repo@${digest}`, `busybox:1@${digest}`, 'localhost/x', 'a__b', 'a--b/c.d', 'Registry.Example.com/x', '[::1]:5000/x']) {
    assert.equal(parseTaskInput({ docker_image: image }).dockerImage, image, image)
  }
  for (const image of ['--privileged', '-v/:/host', 'Alpine', 'team/App', 'alpine:', 'alpine:-x', 'alpine@sha256:abc', 'a_', '_a', 'a/', '/a', 'a..b', `${'a'.repeat(256)}`, 'alpine:3 4']) {
    assert.throws(() => parseTaskInput({ docker_image: image }), (e: CloudaiError) => e.code === 'CLOUDAI_BAD_FIELD' && e.httpStatus === 400, image)
  }
})

test('a queued task moves back to running or to its result only as a resume: its latest placement\'s worker and attempt, no run counted', async (t) => {
  const store = new FlakyStore()
  const { table, journal } = tableOn(store)
  t.after(() => journal.close())
  const task = await table.submit(parseTaskInput({ command: 'true' }), strict)
  assert.equal(await table.transition(task.id, 'running', { workerId: 'w1' }, null, { workerId: 'w1', attempt: 0, resumes: true }), null, 'never placed: nothing to resume')
  assert.ok(await table.transition(task.id, 'assigned', { workerId: 'w1', attempt: 1 }, null, { from: ['queued'] }))
  assert.equal((await table.transition(task.id, 'running', {}, null, { workerId: 'w1', attempt: 1, startsRun: true }))?.attempts, 1)
  assert.ok(await table.transition(task.id, 'queued', { workerId: null }, 'w1 went inactive; requeued', { workerId: 'w1', attempt: 1 }))

  assert.equal(await table.transition(task.id, 'running', { workerId: 'w1' }, null), null, 'queued -> running is no ordinary move')
  assert.equal(await table.transition(task.id, 'running', { workerId: 'w1' }, null, { workerId: 'w1', attempt: 1 }), null, 'not without resumes')
  assert.equal(await table.transition(task.id, 'running', { workerId: 'w2' }, null, { workerId: 'w2', attempt: 1, resumes: true }), null, 'not to a worker it was not last placed on')
  assert.equal(await table.transition(task.id, 'running', { workerId: 'w1' }, null, { workerId: 'w1', attempt: 2, resumes: true }), null, 'not for another attempt')
  assert.equal(await table.transition(task.id, 'running', {}, null, { workerId: 'w1', attempt: 1, resumes: true }), null, 'the patch must put it back on that worker')

  const back = await table.transition(task.id, 'running', { workerId: 'w1' }, 'w1 came back', { workerId: 'w1', attempt: 1, resumes: true, startsRun: true })
  assert.equal(back?.status, 'running')
  assert.equal(back?.workerId, 'w1')
  assert.equal(back?.attempt, 1)
  assert.equal(back?.attempts, 1, 'the run was counted when it started, not again')
  assert.deepEqual(table.onWorkerTasks('w1').map((x) => x.id), [task.id])
  assert.deepEqual(table.queued(), [])

  // Requeued again, its result can land straight from the queue.
  assert.ok(await table.transition(task.id, 'queued', { workerId: null }, 'again', { workerId: 'w1', attempt: 1 }))
  const done = await table.transition(task.id, 'completed', { workerId: 'w1', exitCode: 0 }, null, { workerId: 'w1', attempt: 1, resumes: true })
  assert.equal(done?.status, 'completed')
  assert.equal(done?.attempts, 1)
  assert.deepEqual((await store.loadTasks())[0]?.history.map((h) => `${h.status}:${h.workerId ?? '-'}`), ['queued:-', 'assigned:w1', 'running:w1', 'queued:-', 'running:w1', 'queued:-', 'completed:w1'])
})

test('a task is found by its id or by a unique prefix of it, task- optional; an ambiguous or short prefix is not a task', async (t) => {
  const store = new FlakyStore()
  const { table, journal } = tableOn(store)
  t.after(() => journal.close())
  const a = await table.submit(parseTaskInput({ command: 'true' }), strict)
  const made = (id: string) => ({ ...a, id, history: [...a.history] })
  table.load([made('task-abcd1111-0000-4000-8000-000000000000'), made('task-abcd2222-0000-4000-8000-000000000000'), made('task-abce3333-0000-4000-8000-000000000000'), made('legacy-id')])
  assert.equal(table.resolve(a.id), table.get(a.id), 'the whole id')
  assert.equal(table.resolve('task-abcd1').id, 'task-abcd1111-0000-4000-8000-000000000000')
  assert.equal(table.resolve('abce').id, 'task-abce3333-0000-4000-8000-000000000000', 'without task-')
  assert.equal(table.resolve('legacy-id').id, 'legacy-id', 'an id of any shape, whole')
  const ambiguous = (err: unknown): boolean => err instanceof CloudaiError && err.code === 'CLOUDAI_AMBIGUOUS_TASK_ID' && err.message.includes('task-abcd1111') && err.message.includes('task-abcd2222')
  assert.throws(() => table.resolve('task-abcd'), ambiguous)
  assert.throws(() => table.resolve('abcd'), ambiguous)
  const unknown = (err: unknown): boolean => err instanceof CloudaiError && err.code === 'CLOUDAI_UNKNOWN_TASK'
  assert.throws(() => table.resolve('abc'), unknown, 'three characters are too few to stand for a task')
  assert.throws(() => table.resolve('task-ffff'), unknown)
  assert.throws(() => table.resolve('legacy'), unknown, 'only task- ids are abbreviated')
})

test('with --accept-while-degraded, a submission the store refuses as a deposed master\'s is refused too, never kept in memory (it would never be written)', async (t) => {
  const store = new FlakyStore()
  const mine = await store.acquireLease({ holder: 'master-a', ttlMs: 60_000, api: null, grpc: null })
  store.fence(mine.lease.epoch)
  const { table, journal } = tableOn(store)
  t.after(() => journal.close())
  await table.submit(parseTaskInput({ command: 'true' }), strict)
  // Another master takes the lease: this one's writes are stale from now on.
  const other = store.share()
  await store.releaseLease({ holder: 'master-a', epoch: mine.lease.epoch })
  assert.equal((await other.acquireLease({ holder: 'master-b', ttlMs: 60_000, api: null, grpc: null })).lease.epoch, 2)
  await assert.rejects(table.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: true }), (e: CloudaiError) => e.code === 'CLOUDAI_STALE_EPOCH')
  assert.equal(table.size, 1, 'the refused task is nowhere')
  assert.equal((await other.loadTasks()).length, 1)
})

test('queued(): oldest submission first, kept between reads as tasks leave, enter and come back to the queue', async (t) => {
  const store = new FlakyStore()
  let clock = 1_000
  const { table, journal } = tableOn(store, () => clock)
  t.after(() => journal.close())
  const submitted = []
  for (let i = 0; i < 4; i++) {
    clock += 10
    submitted.push(await table.submit(parseTaskInput({ command: 'true', name: `q${i}` }), strict))
  }
  const [a, b, c, d] = submitted.map((x) => x.id)
  const ids = (): string[] => table.queued().map((x) => x.id)
  assert.deepEqual(ids(), [a, b, c, d])
  assert.ok(await table.transition(b!, 'assigned', { workerId: 'w', attempt: 1 }, null))
  assert.ok(await table.transition(d!, 'cancelled', {}, 'not wanted'))
  assert.deepEqual(ids(), [a, c], 'those that left are gone')
  clock += 10
  const e = (await table.submit(parseTaskInput({ command: 'true', name: 'q4' }), strict)).id
  assert.deepEqual(ids(), [a, c, e], 'a new task at the end')
  assert.ok(await table.transition(b!, 'queued', { workerId: null }, 'requeued', { workerId: 'w', attempt: 1 }))
  assert.deepEqual(ids(), [a, b, c, e], 'a requeued task keeps its place')
  // What queued() returns is the caller's: changing it does not change the queue.
  table.queued().length = 0
  assert.deepEqual(ids(), [a, b, c, e])
  assert.equal(table.queued()[1], table.get(b!), 'the current record of each task')
})
