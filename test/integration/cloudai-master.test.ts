import assert from 'node:assert/strict'
import { test } from 'node:test'
import { reservePort, startWorker } from '../support/cluster.js'
import { startCloudaiMaster } from '../support/cloudai-peers.js'

// Our worker driven by a master that speaks only CloudAI's wire contract (test/support/cloudai-peers.ts):
// it follows MasterRegister, falls back to unary heartbeats, runs what AssignTask asks with no
// attempt number, and reports in CloudAI's words, so that a CloudAI master counts its successes.

test('a CloudAI master drives our worker: it registers, heartbeats, and reports success, failed and cancelled in CloudAI\'s words', async (t) => {
  const master = await startCloudaiMaster(t)
  const port = await reservePort()
  await startWorker(t, 'worker-1', port)
  const worker = `127.0.0.1:${port}`
  const follow = await master.call(worker, 'MasterRegister', { master_id: 'master-1', master_address: `127.0.0.1:${master.port}` })
  assert.equal(follow.success, true, follow.message)
  await master.until(() => master.registered.length > 0 && master.heartbeats.length > 0, 'RegisterWorker and a SendHeartbeat')
  assert.equal(master.registered[0]!.worker_id, 'worker-1')
  assert.equal(master.registered[0]!.worker_ip, worker)
  assert.ok(master.registered[0]!.total_cpu > 0)

  // As CloudAI's master sends a task: no attempt, no timeout, no env.
  const task = (id: string, command: string, extra: object = {}) => ({ task_id: id, docker_image: '', command, req_cpu: 0.5, req_memory: 0.1, task_name: id, user_id: 'u1', task_type: 'batch', submitted_at: 1_700_000_000, ...extra })
  assert.equal((await master.call(worker, 'AssignTask', task('task-ok', 'echo hello CloudAI'))).success, true)
  assert.equal((await master.call(worker, 'AssignTask', task('task-bad', 'echo no >&2; exit 3'))).success, true)
  assert.equal((await master.call(worker, 'AssignTask', task('task-long', 'sleep 300'))).success, true)
  await master.until(() => master.heartbeats.some((h) => h.running_tasks.some((r) => r.task_id === 'task-long' && r.status === 'running')), 'a heartbeat listing task-long as running')
  assert.equal((await master.call(worker, 'CancelTask', { task_id: 'task-long' })).success, true)
  await master.until(() => master.results.length >= 3, 'three results')

  const byId = Object.fromEntries(master.results.map((r) => [r.task_id, r]))
  assert.deepEqual([byId['task-ok']?.status, byId['task-ok']?.logs, byId['task-ok']?.worker_id], ['success', 'hello CloudAI\n', 'worker-1'])
  assert.deepEqual([byId['task-bad']?.status, byId['task-bad']?.logs], ['failed', 'no\n'])
  assert.equal(byId['task-long']?.status, 'cancelled')
  assert.equal(master.results.length, 3, 'each result delivered once (the master acknowledged it)')

  // An image and no command is a task CloudAI sends; on a machine with no Docker engine it is
  // refused with the reason (success=false), not as a malformed call.
  const image = await master.call(worker, 'AssignTask', task('task-image', '', { docker_image: 'alpine:3.20' }))
  if (!image.success) assert.match(image.message, /^docker_image is set but no Docker engine answers/)
})
