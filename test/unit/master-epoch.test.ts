import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { InlineDialer, PoolDialer, type Dialer } from '../../src/master/reconnect/dialer.js'
import { ReconnectMonitor } from '../../src/master/reconnect/monitor.js'
import { Registry } from '../../src/master/registry.js'
import { SuspectProbes } from '../../src/master/suspects.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import { callUnary, loadProto } from '../../src/shared/proto.js'
import type { MasterInfoMsg, TaskIdMsg, TaskMsg } from '../../src/shared/wire.js'
import { memoryLogger } from '../support/log.js'

// The master's side of fencing on the workers (issue 19): every MasterRegister, AssignTask and
// CancelTask carries the epoch the master gives its parts, read when the call goes out. The worker
// is a real gRPC server here that records what it receives; the dials are real, on the pool's
// threads and inline.

interface Received { method: string; epoch: number | undefined }

async function recordingWorker(t: TestContext): Promise<{ address: string; received: Received[]; next: (n: number) => Promise<void> }> {
  const received: Received[] = []
  const waiters: (() => void)[] = []
  const take = (method: string, req: { master_epoch?: number }): void => {
    received.push({ method, epoch: req.master_epoch })
    for (const w of waiters.splice(0)) w()
  }
  const server = new grpc.Server()
  server.addService(loadProto().service, {
    MasterRegister: (call: grpc.ServerUnaryCall<MasterInfoMsg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      take('MasterRegister', call.request)
      cb(null, { success: true, message: 'ok' })
    },
    AssignTask: (call: grpc.ServerUnaryCall<TaskMsg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      take('AssignTask', call.request)
      cb(null, { success: true, message: 'ok' })
    },
    CancelTask: (call: grpc.ServerUnaryCall<TaskIdMsg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      take('CancelTask', call.request)
      cb(null, { success: true, message: 'ok' })
    },
  })
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))))
  t.after(() => server.forceShutdown())
  return {
    address: `127.0.0.1:${port}`,
    received,
    async next(n) {
      while (received.length < n) await new Promise<void>((resolve) => waiters.push(resolve))
    },
  }
}

for (const kind of ['pool', 'inline'] as const) {
  test(`MasterRegister dials of the reconnection monitor and the suspect probes carry the master's epoch as it is at each dial (${kind} dialer)`, async (t) => {
    const worker = await recordingWorker(t)
    const dialer: Dialer = kind === 'pool' ? new PoolDialer({ threads: 1 }) : new InlineDialer()
    t.after(() => dialer.close())
    const registry = new Registry()
    registry.register('w1', worker.address, Date.now())
    let epoch = 7
    const log = memoryLogger('silent').log
    const monitor = new ReconnectMonitor(registry, dialer, { intervalMs: 0, dialTimeoutMs: 5000, masterId: 'm', masterAddress: () => '127.0.0.1:1', epoch: () => epoch, log })
    t.after(() => monitor.close())
    await monitor.dialNow('w1')
    epoch = 8
    await monitor.dialNow('w1')
    // Without the option: NO_EPOCH, a master that holds no lease.
    const plain = new ReconnectMonitor(registry, dialer, { intervalMs: 0, dialTimeoutMs: 5000, masterId: 'm', masterAddress: () => '127.0.0.1:1', log })
    t.after(() => plain.close())
    await plain.dialNow('w1')
    assert.deepEqual(worker.received, [{ method: 'MasterRegister', epoch: 7 }, { method: 'MasterRegister', epoch: 8 }, { method: 'MasterRegister', epoch: 0 }])

    // A probe of a suspect worker is the same dial, with the epoch of its moment.
    registry.connect('w1', { specs: { cpu: 1, memory: 1, storage: 1, gpu: 0 }, reportedAddress: null }, Date.now())
    const probes = new SuspectProbes(registry, dialer, { masterId: 'm', masterAddress: () => '127.0.0.1:1', epoch: () => epoch, dialTimeoutMs: 5000, log, baseDelayMs: 1, maxDelayMs: 1 })
    probes.start()
    t.after(() => probes.close())
    epoch = 9
    registry.markSuspect('w1', 'AssignTask failed (UNAVAILABLE)', Date.now())
    await worker.next(4)
    assert.deepEqual(worker.received[3], { method: 'MasterRegister', epoch: 9 })

  })
}

test('WorkerClients stamps AssignTask and CancelTask with the master\'s epoch when each call goes out; without one, 0', async (t) => {
  const worker = await recordingWorker(t)
  let epoch = 3
  const clients = new WorkerClients(undefined, null, () => epoch)
  t.after(() => clients.close())
  const client = clients.get('w1', worker.address)
  const task = { task_id: 't1', command: 'true' } as TaskMsg
  await callUnary(client, 'AssignTask', task, 5000).promise
  epoch = 4
  // Built before the epoch moved, sent after: it carries the new one (and the caller's object is left alone).
  await callUnary(client, 'CancelTask', { task_id: 't1' }, 5000).promise
  await callUnary(client, 'AssignTask', task, 5000).promise
  assert.equal('master_epoch' in task, false)

  const plain = new WorkerClients()
  t.after(() => plain.close())
  await callUnary(plain.get('w1', worker.address), 'CancelTask', { task_id: 't1' }, 5000).promise
  assert.deepEqual(worker.received, [
    { method: 'AssignTask', epoch: 3 },
    { method: 'CancelTask', epoch: 4 },
    { method: 'AssignTask', epoch: 4 },
    { method: 'CancelTask', epoch: 0 },
  ])
})
