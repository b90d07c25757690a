import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { ActivationSlices, SLICE_MS } from '../../src/master/activation-slices.js'
import { MasterGrpcServer } from '../../src/master/grpc.js'
import { Registry } from '../../src/master/registry.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import { memoryLogger } from '../support/log.js'
import type { Logger } from '../../src/shared/log.js'

// A reconnection pass brings hundreds of workers back at once, and their RegisterWorker calls
// arrive together: their activations must not be one long turn of the master's event loop.

/** Counts event-loop turns: one increment per check phase, until stopped. */
function turnCounter(): { readonly turn: number; stop(): void } {
  let turn = 0
  let timer: NodeJS.Immediate | null = null
  const tick = (): void => {
    turn++
    timer = setImmediate(tick)
  }
  timer = setImmediate(tick)
  return {
    get turn() {
      return turn
    },
    stop() {
      if (timer) clearImmediate(timer)
    },
  }
}

/** A master gRPC server on the registry (port 0) and a client connected to it, both stopped after the test. */
async function serverAndClient(t: TestContext, registry: Registry, log: Logger): Promise<MasterWorkerClient> {
  const server = new MasterGrpcServer({ registry, host: '127.0.0.1', port: 0, log })
  const port = await server.start()
  t.after(() => server.close(100))
  const client = new (loadProto().Client)(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  t.after(() => client.close())
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())))
  return client
}

test('activation slices run in order, a time slice per turn, and at least one a turn', async () => {
  let now = 0
  const slices = new ActivationSlices(() => now)
  const ran: number[] = []
  const turns = turnCounter()
  const turnOf: number[] = []
  const all = new Promise<void>((resolve) => {
    for (let i = 0; i < 10; i++) {
      slices.push(() => {
        ran.push(i)
        turnOf.push(turns.turn)
        // Each costs half the slice: two a turn.
        now += SLICE_MS / 2
        if (i === 9) resolve()
      }, () => assert.fail('refused while open'))
    }
  })
  await all
  turns.stop()
  assert.deepEqual(ran, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  assert.equal(slices.turnsUsed, 5)
  assert.equal(slices.pending, 0)
  assert.equal(new Set(turnOf).size, 5, `turns ${turnOf.join(', ')}`)

  // One that overruns the slice alone still runs, and the next waits for the next turn.
  const slow = new ActivationSlices(() => now)
  const order: string[] = []
  await new Promise<void>((resolve) => {
    const never = () => assert.fail('refused while open')
    slow.push(() => {
      order.push('slow')
      now += SLICE_MS * 10
    }, never)
    slow.push(() => {
      order.push('next')
      resolve()
    }, never)
  })
  assert.deepEqual(order, ['slow', 'next'])
  assert.equal(slow.turnsUsed, 2)
})

test('closed activation slices refuse what still waits and whatever comes later, and run nothing', async () => {
  let now = 0
  const slices = new ActivationSlices(() => now)
  const ran: number[] = []
  const refused: number[] = []
  for (let i = 0; i < 3; i++) slices.push(() => ran.push(i), () => refused.push(i))
  slices.close()
  slices.push(() => ran.push(3), () => refused.push(3))
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(ran, [])
  assert.deepEqual(refused, [0, 1, 2, 3])
  assert.equal(slices.pending, 0)
  now++
})

test('a burst of RegisterWorker calls is activated over several turns, each answered once its worker is active', async (t) => {
  const { log } = memoryLogger('warn')
  const registry = new Registry()
  const n = 20
  for (let i = 0; i < n; i++) registry.register(`w${i}`, `127.0.0.1:${1000 + i}`, Date.now())
  const turns = turnCounter()
  t.after(() => turns.stop())
  const turnOf = new Map<string, number>()
  // Each activation costs the main thread 2 ms, as the store, telemetry and the live feed together can.
  registry.on('worker-active', (w) => {
    turnOf.set(w.id, turns.turn)
    const until = performance.now() + 2
    while (performance.now() < until);
  })
  const client = await serverAndClient(t, registry, log)

  const info = (i: number): WorkerInfoMsg => ({ worker_id: `w${i}`, worker_ip: `127.0.0.1:${1000 + i}`, total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 })
  const activeWhenAnswered: boolean[] = []
  const acks = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const ack = await callUnary<WorkerInfoMsg, RegisterAckMsg>(client, 'RegisterWorker', info(i), 10_000).promise
    activeWhenAnswered.push(registry.get(`w${i}`)?.isActive === true)
    return ack
  }))
  assert.ok(acks.every((a) => a.success), JSON.stringify(acks))
  assert.ok(activeWhenAnswered.every(Boolean), 'every answer came after its activation')
  assert.equal(registry.counts().active, n)
  const perTurn = new Map<number, number>()
  for (const turn of turnOf.values()) perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1)
  const most = Math.max(...perTurn.values())
  // 2 ms each in a 4 ms slice: two a turn, three at most with rounding. Unsliced, the calls that
  // arrive in one read of the connection all run in its turn.
  assert.ok(most <= 3, `${most} activations in one turn (${[...perTurn.values()].join(', ')})`)
})

test('a RegisterWorker for a worker unregistered while its activation waited is refused, and changes nothing', async (t) => {
  const { log } = memoryLogger('silent')
  const registry = new Registry()
  registry.register('gone', '127.0.0.1:1001', Date.now())
  registry.register('slow', '127.0.0.1:1002', Date.now())
  // The first activation takes the whole slice; the unregistration lands before the second's turn.
  registry.on('worker-active', (w) => {
    if (w.id !== 'slow') return
    const until = performance.now() + 10
    while (performance.now() < until);
    registry.unregister('gone')
  })
  const client = await serverAndClient(t, registry, log)
  const call = (id: string, ip: string): Promise<RegisterAckMsg> =>
    callUnary<WorkerInfoMsg, RegisterAckMsg>(client, 'RegisterWorker', { worker_id: id, worker_ip: ip, total_cpu: 1, total_memory: 1, total_storage: 1, total_gpu: 0 }, 10_000).promise
  const slow = call('slow', '127.0.0.1:1002')
  const gone = call('gone', '127.0.0.1:1001').then(() => null, (err: grpc.ServiceError) => err)
  assert.equal((await slow).success, true)
  // Refused on arrival or at its activation, whichever it met: the same refusal either way.
  const refusal = await gone
  assert.equal(refusal?.code, grpc.status.PERMISSION_DENIED, String(refusal))
  assert.match(refusal.message, /CLOUDAI_WORKER_NOT_REGISTERED/)
  assert.equal(registry.get('gone'), undefined)
})
