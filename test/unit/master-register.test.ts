import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { MasterGrpcServer } from '../../src/master/grpc.js'
import { Registry } from '../../src/master/registry.js'
import { callUnary, loadProto } from '../../src/shared/proto.js'
import type { RegisterAckMsg } from '../../src/shared/wire.js'
import type { RunningTaskInfo, WorkerUsage } from '../../src/shared/types.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'

/** The real registry, with the arrival time of each heartbeat noted. */
class TimedRegistry extends Registry {
  readonly beats: number[] = []
  private waiters: { n: number; resolve: () => void }[] = []
  override heartbeat(id: string, usage: WorkerUsage, tasks: RunningTaskInfo[], now: number): void {
    super.heartbeat(id, usage, tasks, now)
    this.beats.push(performance.now())
    this.waiters = this.waiters.filter((w) => (this.beats.length >= w.n ? (w.resolve(), false) : true))
  }
  waitForBeats(n: number): Promise<void> {
    if (this.beats.length >= n) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ n, resolve }))
  }
}

test('MasterRegister is idempotent: racing and repeated calls make one registration and one heartbeat loop', async (t) => {
  const { log } = memoryLogger('warn')
  const registry = new TimedRegistry()
  let activations = 0
  registry.on('worker-active', () => activations++)
  const server = new MasterGrpcServer({ registry, host: '127.0.0.1', port: 0, log })
  const masterPort = await server.start()
  t.after(() => server.close(100))
  const agent = await startAgent(t, {}, log)
  registry.register('w1', `127.0.0.1:${agent.port}`, Date.now())

  const client = new (loadProto().Client)(`127.0.0.1:${agent.port}`, grpc.credentials.createInsecure())
  t.after(() => client.close())
  const masterInfo = { master_id: 'master-1', master_address: `127.0.0.1:${masterPort}` }
  const racing = await Promise.all(Array.from({ length: 5 }, () => callUnary<object, RegisterAckMsg>(client, 'MasterRegister', masterInfo, 5000).promise))
  assert.ok(racing.every((a) => a.success), 'every racing dial succeeds')
  const again = await callUnary<object, RegisterAckMsg>(client, 'MasterRegister', masterInfo, 5000).promise
  assert.equal(again.success, true)
  assert.match(again.message, /already connected/)
  assert.equal(activations, 1)
  assert.equal(registry.get('w1')?.isActive, true)

  // One loop at a 100 ms interval never delivers two heartbeats much closer than the interval
  // (each waits for the previous answer; a timer may fire a little early on a loaded machine); a
  // second loop would put beats within a few ms of each other, or halve the gaps on average.
  await registry.waitForBeats(8)
  const gaps = registry.beats.slice(1).map((b, i) => b - registry.beats[i]!)
  assert.ok(Math.min(...gaps) >= 50, `heartbeat gaps ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`)
})

test('MasterRegister with a malformed master address is refused with INVALID_ARGUMENT', async (t) => {
  const agent = await startAgent(t)
  const client = new (loadProto().Client)(`127.0.0.1:${agent.port}`, grpc.credentials.createInsecure())
  t.after(() => client.close())
  for (const master_address of ['', 'no-port', 'host:99999', 'a b:1']) {
    await assert.rejects(callUnary(client, 'MasterRegister', { master_id: 'm', master_address }, 5000).promise, (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT)
      assert.match(err.details, /CLOUDAI_BAD_ADDRESS/)
      return true
    })
  }
  assert.equal(agent.linkState, 'idle')
})
