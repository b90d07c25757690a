import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import type { ControlService } from '../../src/master/control-service.js'
import { Master } from '../../src/master/master.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { MemoryStore } from '../../src/store/memory.js'
import { memoryLogger } from '../support/log.js'
import { startTestMaster, testMasterConfig } from '../support/test-master.js'

// The operator's control service of a real master (control-service.ts): whether it may act is
// decided in one place, the guard the Master gives it. While the master is not running, every
// change an operator can ask for is refused with CLOUDAI_SHUTTING_DOWN and changes nothing; every
// read is answered.

/** Every change an operator can ask for, on the worker `w` and the task `task`. */
function changes(control: ControlService, task: string): Record<string, () => unknown> {
  return {
    registerWorker: () => control.registerWorker({ worker_id: 'w-new', worker_ip: '127.0.0.2:604' }),
    rotateWorkerToken: () => control.rotateWorkerToken('w'),
    unregisterWorker: () => control.unregisterWorker('w'),
    cordonWorker: () => control.cordonWorker('w'),
    uncordonWorker: () => control.uncordonWorker('w'),
    drainWorker: () => control.drainWorker('w', {}),
    stopDrain: () => control.stopDrain('w'),
    submitTask: () => control.submitTask({ command: 'true' }),
    cancelTask: () => control.cancelTask(task),
    readTaskLogs: () => control.readTaskLogs(task, { follow: false, after: 0, notBefore: null, tail: 0 }, { write: () => true, onWritable: () => {}, close: () => {} }),
  }
}

async function refusedAll(control: ControlService, task: string, phase: RegExp, except: string[] = []): Promise<void> {
  for (const [name, change] of Object.entries(changes(control, task))) {
    if (except.includes(name)) continue
    await assert.rejects(async () => change(), (err: unknown) => err instanceof CloudaiError && err.code === 'CLOUDAI_SHUTTING_DOWN' && phase.test(err.message), name)
  }
}

test('once the master stops, every change an operator asks for is refused with CLOUDAI_SHUTTING_DOWN and changes nothing; reads are answered', async () => {
  const m = await startTestMaster()
  const { control } = m
  await control.registerWorker({ worker_id: 'w', worker_ip: '127.0.0.2:605' })
  const task = (await control.submitTask({ command: 'sleep 60' })).task_id
  await m.close()
  const before = JSON.stringify([control.listWorkers(), control.listTasks({})])
  await refusedAll(control, task, /^the master is shutting down$/)
  assert.equal(JSON.stringify([control.listWorkers(), control.listTasks({})]), before, 'nothing changed')
  // Reads: what the master holds, as it was when it stopped.
  assert.equal(control.getWorker('w').worker_id, 'w')
  assert.equal(control.getTask(task).status, 'queued')
  assert.equal(control.status().workers, 1)
  assert.equal(typeof control.health().status, 'string')
  assert.equal(control.workerMetrics('w', {}).worker_id, 'w')
})

test('before the master has started, a change is refused with CLOUDAI_SHUTTING_DOWN: "the master is starting"', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cloudai-test-master-'))
  t.after(() => rmSync(dataDir, { recursive: true, force: true }))
  const master = new Master(testMasterConfig(dataDir), { log: memoryLogger('silent').log, store: new MemoryStore() })
  t.after(() => master.close())
  // No task exists yet: a cancel names one that does not, and that is said first, whatever the phase.
  await refusedAll(master.control, 'task-zzzz', /^the master is starting$/, ['cancelTask'])
  await assert.rejects(master.control.cancelTask('task-zzzz'), (err: unknown) => err instanceof CloudaiError && err.code === 'CLOUDAI_UNKNOWN_TASK')
  assert.deepEqual(master.control.listWorkers(), [])
  assert.equal(master.control.listTasks({}).total, 0)
})
