import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { MasterGrpcServer } from '../../src/master/grpc.js'
import { Registry } from '../../src/master/registry.js'
import { callUnary, loadProto } from '../../src/shared/proto.js'
import { memoryLogger } from '../support/log.js'

const goodInfo = { worker_id: 'w1', worker_ip: '127.0.0.1:5000', total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 }
const goodBeat = { worker_id: 'w1', cpu_usage: 10, memory_usage: 20, storage_usage: 30, gpu_usage: 0, running_tasks: [] as object[] }

test('the master refuses bad RegisterWorker and SendHeartbeat input with a status and a reason, and changes nothing', async (t) => {
  const registry = new Registry()
  const server = new MasterGrpcServer({ registry, host: '127.0.0.1', port: 0, log: memoryLogger('silent').log })
  const port = await server.start()
  t.after(() => server.close(100))
  const client = new (loadProto().Client)(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  t.after(() => client.close())
  registry.register('w1', '127.0.0.1:5000', Date.now())

  const refused = async (method: 'RegisterWorker' | 'SendHeartbeat', msg: object, status: grpc.status, code: string): Promise<void> => {
    await assert.rejects(callUnary(client, method, msg, 5000).promise, (err: grpc.ServiceError) => {
      assert.equal(err.code, status, `${method} ${JSON.stringify(msg).slice(0, 120)}: ${err.details}`)
      assert.ok(err.details.includes(code), err.details)
      assert.equal(err.metadata.get('cloudai-error-code')[0], code)
      return true
    })
  }
  const snapshot = () => JSON.stringify(registry.list())

  // Before it registered: heartbeats are refused, the worker stays inactive.
  let before = snapshot()
  await refused('SendHeartbeat', goodBeat, grpc.status.FAILED_PRECONDITION, 'CLOUDAI_WORKER_INACTIVE')
  await refused('RegisterWorker', { ...goodInfo, worker_id: 'stranger' }, grpc.status.PERMISSION_DENIED, 'CLOUDAI_WORKER_NOT_REGISTERED')
  await refused('RegisterWorker', { ...goodInfo, worker_id: '' }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_WORKER_ID')
  await refused('RegisterWorker', { ...goodInfo, worker_id: 'x'.repeat(65) }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_WORKER_ID')
  await refused('RegisterWorker', { ...goodInfo, worker_id: 'w 1' }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_WORKER_ID')
  await refused('RegisterWorker', { ...goodInfo, total_cpu: -1 }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('RegisterWorker', { ...goodInfo, total_memory: Number.NaN }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('RegisterWorker', { ...goodInfo, total_gpu: Number.POSITIVE_INFINITY }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('RegisterWorker', { ...goodInfo, worker_ip: 'h'.repeat(300) }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  assert.equal(snapshot(), before)

  const ack = await callUnary<object, { success: boolean }>(client, 'RegisterWorker', goodInfo, 5000).promise
  assert.equal(ack.success, true)
  assert.equal(registry.get('w1')?.isActive, true)

  before = snapshot()
  await refused('SendHeartbeat', { ...goodBeat, worker_id: 'nobody' }, grpc.status.NOT_FOUND, 'CLOUDAI_UNKNOWN_WORKER')
  await refused('SendHeartbeat', { ...goodBeat, cpu_usage: -0.1 }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('SendHeartbeat', { ...goodBeat, memory_usage: 100.5 }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('SendHeartbeat', { ...goodBeat, storage_usage: Number.NaN }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('SendHeartbeat', { ...goodBeat, running_tasks: [{ task_id: '', cpu_allocated: 1, memory_allocated: 1, status: 'running', gpu_allocated: 0 }] }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('SendHeartbeat', { ...goodBeat, running_tasks: [{ task_id: 't'.repeat(300), cpu_allocated: 1, memory_allocated: 1, status: 'running', gpu_allocated: 0 }] }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  await refused('SendHeartbeat', { ...goodBeat, running_tasks: [{ task_id: 't1', cpu_allocated: -2, memory_allocated: 1, status: 'running', gpu_allocated: 0 }] }, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  assert.equal(snapshot(), before, 'no refused heartbeat touched the registry')

  const beat = await callUnary<object, { success: boolean }>(client, 'SendHeartbeat', goodBeat, 5000).promise
  assert.equal(beat.success, true)
  assert.deepEqual(registry.get('w1')?.usage, { cpu: 10, memory: 20, storage: 30, gpu: 0 })
  // A master built without the task side does not pretend to take reports: grpc-js answers UNIMPLEMENTED.
  await assert.rejects(callUnary(client, 'ReportTaskCompletion', { task_id: 't' }, 5000).promise, (err: grpc.ServiceError) => err.code === grpc.status.UNIMPLEMENTED)
})
