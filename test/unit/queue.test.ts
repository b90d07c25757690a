import assert from 'node:assert/strict'
import { test } from 'node:test'
import { QueueProcessor } from '../../src/master/queue.js'
import { Registry } from '../../src/master/registry.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskTable } from '../../src/master/tasks.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { MemoryStore } from '../../src/store/memory.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'

/** The in-memory store, able to refuse task writes for a while (an outage). */
class FlakyStore extends MemoryStore {
  failing = false
  failures = 0
  override async writeTasks(tasks: TaskRecord[]): Promise<void> {
    if (this.failing) {
      this.failures++
      throw new Error('database is locked')
    }
    await super.writeTasks(tasks)
  }
}

test('a placement the store refused is tried again once the store answers, with no other event to trigger it', { timeout: 20_000 }, async (t) => {
  const { log } = memoryLogger('silent')
  const agent = await startAgent(t, { heartbeatIntervalMs: 1000 })

  const store = new FlakyStore()
  const registry = new Registry()
  const tasks = new TaskTable(store)
  const queue = new QueueProcessor({ tasks, registry, clients: new WorkerClients(), log, heartbeatTimeoutMs: 60_000 })
  queue.start()
  t.after(() => queue.close())
  const task = await tasks.submit(parseTaskInput({ command: 'true' }))

  registry.register('w1', `127.0.0.1:${agent.port}`, Date.now())
  store.failing = true
  const refused = new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (store.failures > 0) {
        clearInterval(check)
        resolve()
      }
    }, 5)
  })
  registry.connect('w1', { specs: { cpu: 2, memory: 4, storage: 10, gpu: 0 }, reportedAddress: null }, Date.now())
  await refused
  assert.equal(tasks.get(task.id)?.status, 'queued', 'nothing changed while the store refused it')

  const running = new Promise<TaskRecord>((resolve) => tasks.on('task-changed', (t) => t.id === task.id && t.status === 'running' && resolve(t)))
  store.failing = false
  const placed = await running
  assert.equal(placed.workerId, 'w1')
  assert.equal(placed.attempts, 1)
})
