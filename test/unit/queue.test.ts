import assert from 'node:assert/strict'
import { test } from 'node:test'
import { QueueProcessor } from '../../src/master/queue.js'
import { Registry } from '../../src/master/registry.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskTable } from '../../src/master/tasks.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { StoreJournal } from '../../src/store/journal.js'
import { FlakyStore } from '../support/flaky-store.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'

test('during a store outage the queue still places tasks on workers; the store catches up when it answers', { timeout: 20_000 }, async (t) => {
  const { log } = memoryLogger('silent')
  const agent = await startAgent(t, { heartbeatIntervalMs: 1000 })

  const store = new FlakyStore()
  const registry = new Registry()
  const journal = new StoreJournal(store, registry, { log, limit: 1000, retryBaseMs: 20, retryCapMs: 50 })
  journal.start(true)
  t.after(() => journal.close())
  const tasks = new TaskTable(journal)
  const queue = new QueueProcessor({ tasks, registry, clients: new WorkerClients(), log, heartbeatTimeoutMs: 60_000 })
  queue.start()
  t.after(() => queue.close())
  const task = await tasks.submit(parseTaskInput({ command: 'true' }), { acceptWhileDegraded: false })

  registry.register('w1', `127.0.0.1:${agent.port}`, Date.now())
  store.failing = true
  const running = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (x) => x.id === task.id && x.status === 'running' && resolve(x)))
  registry.connect('w1', { specs: { cpu: 2, memory: 4, storage: 10, gpu: 0 }, reportedAddress: null }, Date.now())
  const placed = await running
  assert.equal(placed.workerId, 'w1')
  assert.equal(journal.healthy, false, 'placed and started while the store refused every write')
  assert.equal((await store.loadTasks())[0]?.status, 'queued', 'the store still holds the old state')

  store.failing = false
  await new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  assert.deepEqual(await store.loadTasks(), [tasks.get(task.id)], 'the store equals memory')
})
