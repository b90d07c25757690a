import assert from 'node:assert/strict'
import { test } from 'node:test'
import { TaskTable } from '../../src/master/tasks.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { MemoryStore } from '../../src/store/memory.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { CloudaiError } from '../../src/shared/errors.js'

class FlakyStore extends MemoryStore {
  failing = false
  override async writeTasks(tasks: TaskRecord[]): Promise<void> {
    if (this.failing) throw new Error('disk full')
    await super.writeTasks(tasks)
  }
}

test('every transition is persisted before it is applied, with a timestamp; final states never move', async () => {
  const store = new FlakyStore()
  const table = new TaskTable(store)
  const t = await table.submit(parseTaskInput({ command: 'true' }))
  assert.deepEqual((await store.loadTasks()).map((x) => x.status), ['queued'])
  assert.ok(await table.transition(t.id, 'assigned', { workerId: 'w', attempts: 1 }, null))
  assert.ok(await table.transition(t.id, 'running', {}, null, { workerId: 'w', attempts: 1 }))
  assert.equal(await table.transition(t.id, 'completed', {}, null, { workerId: 'other' }), null, 'a guard that does not hold changes nothing')
  assert.ok(await table.transition(t.id, 'completed', { exitCode: 0 }, null, { workerId: 'w', attempts: 1 }))
  assert.equal(await table.transition(t.id, 'queued', {}, 'late requeue'), null, 'completed is final')
  assert.equal(await table.transition(t.id, 'failed', {}, 'late report'), null)
  const stored = (await store.loadTasks())[0]!
  assert.deepEqual(stored.history.map((h) => h.status), ['queued', 'assigned', 'running', 'completed'])
  assert.ok(stored.history.every((h) => h.at > 0))
  assert.deepEqual(stored, table.get(t.id))
})

test('a store that fails: nothing is acknowledged and nothing changes in memory', async () => {
  const store = new FlakyStore()
  const table = new TaskTable(store)
  const t = await table.submit(parseTaskInput({ command: 'true' }))
  store.failing = true
  await assert.rejects(table.submit(parseTaskInput({ command: 'true' })), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_FAILED')
  await assert.rejects(table.transition(t.id, 'cancelled', {}, 'x'), (e: CloudaiError) => e.code === 'CLOUDAI_STORE_FAILED')
  assert.equal(table.size, 1)
  assert.equal(table.get(t.id)?.status, 'queued')
})

test('racing transitions are serialised: only one of two completions lands', async () => {
  const table = new TaskTable(new MemoryStore())
  const t = await table.submit(parseTaskInput({ command: 'true' }))
  await table.transition(t.id, 'assigned', { workerId: 'w', attempts: 1 }, null)
  const results = await Promise.all([
    table.transition(t.id, 'completed', {}, null, { from: ['assigned', 'running'] }),
    table.transition(t.id, 'failed', {}, 'x', { from: ['assigned', 'running'] }),
  ])
  assert.equal(results.filter(Boolean).length, 1)
})

test('task ids are unique and not derived from a clock', async () => {
  const table = new TaskTable(new MemoryStore(), () => 42)
  const ids = new Set<string>()
  for (let i = 0; i < 200; i++) ids.add((await table.submit(parseTaskInput({ command: 'true' }))).id)
  assert.equal(ids.size, 200)
})

test('task bodies: CloudAI names accepted, bad values refused with a code', () => {
  const ok = parseTaskInput({ command: 'run', cpu_required: 2, memory_required: 4, gpu_required: 1, storage_required: 10, docker_image: 'alpine', extra: 'ignored' })
  assert.deepEqual(ok.req, { cpu: 2, memory: 4, gpu: 1, storage: 10 })
  assert.equal(ok.maxAttempts, 3)
  for (const body of [null, [], 'x', { command: '' }, { command: 'x', req_cpu: -1 }, { command: 'x', req_cpu: '1' }, { command: 'x', req_cpu: 1, cpu_required: 2 },
    { command: 'x', timeout_s: -5 }, { command: 'x', max_attempts: 1.5 }, { command: 'x', env: { A: 1 } }, { command: 'x', env: ['A=1'] }, { command: 'x', target_worker_id: 'bad id' }]) {
    assert.throws(() => parseTaskInput(body), (e: CloudaiError) => e instanceof CloudaiError && e.httpStatus === 400, JSON.stringify(body))
  }
})
