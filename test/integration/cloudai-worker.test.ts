import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, startMaster, taskFinished, tempDir, type LogLine } from '../support/cluster.js'
import { startCloudaiWorker } from '../support/cloudai-peers.js'

// Our master driving a worker that speaks only CloudAI's wire contract (test/support/cloudai-peers.ts:
// CloudAI's message table, raw grpc-js, no cloudai module): it is dialled, registers, takes tasks
// submitted the way CloudAI's clients submit them, and its results, in CloudAI's words, complete
// each task once with its output.

interface TaskView {
  task_id: string
  status: string
  exit_code: number | null
  logs: string
  attempts: number
  reason: string | null
  command: string
  docker_image: string
  history: { status: string }[]
}

const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Successfully reconnected to worker ${id}`)

test('a CloudAI worker is dialled, runs tasks from CloudAI-style submissions, and each completes once with its output', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const peer = await startCloudaiWorker(t, 'cloudai-w1')
  const reg = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'cloudai-w1', worker_ip: `127.0.0.1:${peer.port}` } })
  assert.equal(reg.status, 201, JSON.stringify(reg.body))
  await master.proc.waitForLog(reconnected('cloudai-w1'), 'the master reconnecting to the CloudAI worker')
  await peer.until(() => peer.heartbeatsAcked > 0, 'a heartbeat accepted')
  assert.equal(peer.masterRegisters[0]?.master_address, `127.0.0.1:${master.grpcPort}`)

  const submit = async (body: object): Promise<string> => {
    const res = await api(master.api, '/api/tasks', { method: 'POST', body })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    assert.equal(res.body.status, 'queued')
    return res.body.task_id as string
  }
  // CloudAI's API: *_required amounts; an image with no command runs the image's entrypoint.
  const hello = await submit({ command: 'echo hello from a CloudAI worker', cpu_required: 1, memory_required: 0.5 })
  const image = await submit({ docker_image: 'alpine:3.20', cpu_required: 0.5 })
  const failing = await submit({ command: 'echo oops >&2; exit 3' })
  for (const id of [hello, image, failing]) await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })
  await peer.until(() => peer.reports.length === 3 && peer.reports.every((r) => r.ack !== null || r.error !== null), 'three reports answered')

  const view = async (id: string): Promise<TaskView> => (await api<TaskView>(master.api, `/api/tasks/${id}`)).body
  const [h, i, f] = await Promise.all([view(hello), view(image), view(failing)])
  assert.equal(h.status, 'completed', JSON.stringify(h))
  assert.equal(h.exit_code, 0, '"success" with no exit code is an exit 0')
  assert.equal(h.logs, 'hello from a CloudAI worker\n')
  assert.equal(i.status, 'completed', JSON.stringify(i))
  assert.equal(i.command, '')
  assert.equal(i.docker_image, 'alpine:3.20')
  assert.equal(i.logs, 'ran the entrypoint of alpine:3.20\n')
  assert.equal(f.status, 'failed', JSON.stringify(f))
  assert.equal(f.exit_code, null, 'CloudAI reports no exit code for a failure: unknown')
  assert.equal(f.logs, 'oops\n')
  assert.equal(f.reason, 'failed')

  const sent = peer.assigned.find((a) => a.task_id === image)!
  assert.deepEqual({ image: sent.docker_image, command: sent.command, cpu: sent.req_cpu }, { image: 'alpine:3.20', command: '', cpu: 0.5 })
  for (const r of peer.reports) assert.deepEqual(r.ack, { success: true, message: 'recorded' }, `the report of ${r.taskId} (${r.status})`)

  // Once: a few more heartbeats later nothing was assigned again, and each task finished once.
  const beats = peer.heartbeatsAcked
  await peer.until(() => peer.heartbeatsAcked >= beats + 3, 'three more heartbeats')
  assert.deepEqual(peer.assigned.map((a) => a.task_id).sort(), [hello, image, failing].sort(), 'each task assigned once')
  assert.deepEqual(peer.cancelled, [], 'nothing cancelled')
  for (const v of await Promise.all([view(hello), view(image), view(failing)])) {
    assert.equal(v.attempts, 1, JSON.stringify(v))
    assert.equal(v.history.filter((e) => ['completed', 'failed', 'cancelled'].includes(e.status)).length, 1, JSON.stringify(v.history))
  }
})
