import assert from 'node:assert/strict'
import { connect, createServer, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { MasterGrpcServer, type HeartbeatSink } from '../../src/master/grpc.js'
import { Registry } from '../../src/master/registry.js'
import { C, CounterReader, Counters } from '../../src/master/counters.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import type { Logger } from '../../src/shared/log.js'
import { MasterLink } from '../../src/worker/link.js'
import { waitUntil } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

const beat = (workerId: string, cpu = 10): HeartbeatMsg => ({ worker_id: workerId, cpu_usage: cpu, memory_usage: 20, storage_usage: 30, gpu_usage: 0, running_tasks: [] })
const info = (workerId: string): WorkerInfoMsg => ({ worker_id: workerId, worker_ip: '127.0.0.1:5000', total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 })

/** Accepted heartbeats, in order, with a way to wait for the n-th one. */
class BeatSink implements HeartbeatSink {
  readonly beats: { workerId: string; cpu: number; at: number }[] = []
  private waiters: { n: number; resolve: () => void }[] = []
  ingest(workerId: string, usage: { cpu: number }): void {
    this.beats.push({ workerId, cpu: usage.cpu, at: Date.now() })
    this.waiters = this.waiters.filter((w) => (this.beats.length >= w.n ? (w.resolve(), false) : true))
  }
  waitFor(n: number, what = `${n} heartbeat(s)`, timeoutMs = 5000): Promise<void> {
    if (this.beats.length >= n) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs}ms (got ${this.beats.length})`)), timeoutMs)
      this.waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) })
    })
  }
}

interface Master {
  server: MasterGrpcServer
  registry: Registry
  sink: BeatSink
  counts: CounterReader
  lines: ReturnType<typeof memoryLogger>['lines']
  client: MasterWorkerClient
  address: string
  clock: { now: number }
}

/** An in-process master on an OS-chosen port, with a fake clock so heartbeat times are exact. */
async function startMaster(t: TestContext, workers: string[] = ['w1']): Promise<Master> {
  const { log, lines } = memoryLogger('debug')
  const registry = new Registry()
  const sink = new BeatSink()
  const counters = new Counters()
  const clock = { now: 1_000_000 }
  const server = new MasterGrpcServer({ registry, telemetry: sink, counters, host: '127.0.0.1', port: 0, log, now: () => clock.now })
  const port = await server.start()
  t.after(() => server.close(100))
  const address = `127.0.0.1:${port}`
  const client = new (loadProto().Client)(address, grpc.credentials.createInsecure())
  t.after(() => client.close())
  for (const id of workers) {
    registry.register(id, '127.0.0.1:5000', clock.now)
    const ack = await callUnary<WorkerInfoMsg, RegisterAckMsg>(client, 'RegisterWorker', info(id), 5000).promise
    assert.equal(ack.success, true)
  }
  return { server, registry, sink, counts: new CounterReader(counters), lines, client, address, clock }
}

/** A raw StreamHeartbeats call and the status it ends with. */
function openStream(client: MasterWorkerClient): { call: grpc.ClientDuplexStream<HeartbeatMsg, HeartbeatAckMsg>; status: Promise<grpc.StatusObject>; acks: HeartbeatAckMsg[] } {
  const call = client.StreamHeartbeats()
  const acks: HeartbeatAckMsg[] = []
  call.on('data', (ack: HeartbeatAckMsg) => acks.push(ack))
  // A non-OK status is also emitted as 'error'; the status event is the one the test reads.
  call.on('error', () => {})
  const status = new Promise<grpc.StatusObject>((resolve) => call.once('status', resolve))
  return { call, status, acks }
}

/** A TCP hop to the master whose connections the test can cut, like a worker killed mid-stream. */
async function startProxy(t: TestContext, target: number): Promise<{ address: string; cut: () => void }> {
  const sockets = new Set<Socket>()
  const server = createServer((down) => {
    const up = connect(target, '127.0.0.1')
    for (const s of [down, up]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => sockets.delete(s))
    }
    down.pipe(up).pipe(down)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const cut = (): void => {
    for (const s of sockets) s.resetAndDestroy()
  }
  t.after(() => {
    cut()
    server.close()
  })
  const addr = server.address()
  return { address: `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, cut }
}

function assertRefused(status: grpc.StatusObject, code: grpc.status, cloudaiCode: string): void {
  assert.equal(status.code, code, `${grpc.status[status.code]}: ${status.details}`)
  assert.ok(status.details.includes(cloudaiCode), status.details)
  assert.equal(status.metadata.get('cloudai-error-code')[0], cloudaiCode)
}

test('heartbeats on a stream reach the registry; a clean restart of the stream never marks the worker inactive', async (t) => {
  const m = await startMaster(t)
  const inactive: string[] = []
  m.registry.on('worker-inactive', (w) => inactive.push(w.id))

  const first = openStream(m.client)
  first.call.write(beat('w1', 11))
  await m.sink.waitFor(1)
  m.clock.now += 250
  first.call.write(beat('w1', 12))
  await m.sink.waitFor(2)
  assert.equal(m.registry.get('w1')?.lastHeartbeat, m.clock.now)
  assert.equal(m.registry.get('w1')?.usage?.cpu, 12)

  first.call.end()
  const ended = await first.status
  assert.equal(ended.code, grpc.status.OK, ended.details)
  assert.deepEqual(first.acks, [], 'the master writes nothing back while it accepts')
  assert.equal(m.registry.get('w1')?.isActive, true)

  m.clock.now += 250
  const second = openStream(m.client)
  t.after(() => second.call.cancel())
  second.call.write(beat('w1', 13))
  await m.sink.waitFor(3)
  const w = m.registry.get('w1')!
  assert.equal(w.isActive, true)
  assert.equal(w.lastHeartbeat, m.clock.now, 'the new stream carries heartbeats')
  assert.equal(w.usage?.cpu, 13)
  assert.deepEqual(inactive, [])

  assert.equal(m.counts.get('HEARTBEAT_STREAMS_OPENED'), 2)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_ENDED'), 1)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_BROKEN'), 0)
  assert.equal(m.counts.get('HEARTBEATS_RECEIVED'), 3)
  assert.ok(m.lines.some((l) => l.level === 20 && l.msg === 'Heartbeat stream from worker w1 ended'))
  assert.equal(m.lines.some((l) => l.msg.includes('broke')), false)
})

test('a refused heartbeat ends the stream with the status and cloudai-error-code that SendHeartbeat answers', async (t) => {
  const m = await startMaster(t, ['w1', 'w2'])

  const stranger = openStream(m.client)
  stranger.call.write(beat('nobody'))
  assertRefused(await stranger.status, grpc.status.NOT_FOUND, 'CLOUDAI_UNKNOWN_WORKER')

  // Accepted first, then one bad heartbeat: refused, and nothing after it is taken.
  const bad = openStream(m.client)
  bad.call.write(beat('w1', 10))
  await m.sink.waitFor(1)
  bad.call.write(beat('w1', 150))
  bad.call.write(beat('w1', 20))
  assertRefused(await bad.status, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  assert.equal(m.registry.get('w1')?.usage?.cpu, 10)

  // One stream speaks for one worker, even when the other id is a registered, active worker.
  const w2Before = m.registry.get('w2')!.lastHeartbeat
  const switching = openStream(m.client)
  switching.call.write(beat('w1', 30))
  switching.call.write(beat('w2', 40))
  const switched = await switching.status
  assertRefused(switched, grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD')
  assert.match(switched.details, /worker_id changed mid-stream from w1 to w2/)
  assert.equal(m.registry.get('w2')!.lastHeartbeat, w2Before)
  assert.equal(m.registry.get('w2')!.usage, null)

  // Inactive (timed out): refused like the unary call, so the worker registers again.
  m.registry.markInactive('w1', 'heartbeat-timeout', m.clock.now)
  const late = openStream(m.client)
  late.call.write(beat('w1'))
  assertRefused(await late.status, grpc.status.FAILED_PRECONDITION, 'CLOUDAI_WORKER_INACTIVE')

  assert.deepEqual(m.sink.beats.map((b) => b.cpu), [10, 30])
  assert.equal(m.counts.get('HEARTBEATS_REFUSED'), 3, 'the id switch is refused before acceptHeartbeat; the rest inside it')
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_OPENED'), 4)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_ENDED') + m.counts.get('HEARTBEAT_STREAMS_BROKEN'), 0, 'refusals are neither')
})

test('a broken stream is logged once and changes no worker state; close() ends open streams instead of waiting out the grace', async (t) => {
  const m = await startMaster(t)
  const inactive: string[] = []
  m.registry.on('worker-inactive', (w) => inactive.push(w.id))

  const proxy = await startProxy(t, m.server.port)
  const viaProxy = new (loadProto().Client)(proxy.address, grpc.credentials.createInsecure())
  t.after(() => viaProxy.close())
  const broken = openStream(viaProxy)
  broken.call.write(beat('w1'))
  await m.sink.waitFor(1)
  proxy.cut()
  await waitUntil(() => m.counts.get('HEARTBEAT_STREAMS_BROKEN') === 1, 'the master to see the broken stream', 5000)
  const logged = m.lines.filter((l) => l.msg.startsWith('Heartbeat stream from worker w1 broke'))
  assert.equal(logged.length, 1)
  assert.equal(logged[0]!.level, 30)
  assert.equal(logged[0]!.workerId, 'w1')
  assert.equal(logged[0]!.msg, `Heartbeat stream from worker w1 broke (${logged[0]!.reason})`)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_ENDED'), 0, 'a break is not a clean end')
  assert.equal((await broken.status).code, grpc.status.UNAVAILABLE)
  assert.equal(m.registry.get('w1')?.isActive, true)
  assert.deepEqual(inactive, [])

  const open = openStream(m.client)
  open.call.write(beat('w1'))
  await m.sink.waitFor(2)
  const started = performance.now()
  await m.server.close(10_000)
  assert.ok(performance.now() - started < 5000, `close took ${Math.round(performance.now() - started)}ms`)
  assertRefused(await open.status, grpc.status.UNAVAILABLE, 'CLOUDAI_SHUTTING_DOWN')
  assert.match((await open.status).details, /master shutting down/)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_BROKEN'), 1)
})

// ---- The worker's side: MasterLink in-process ----

function startLink(t: TestContext, address: string, log: Logger, extra: Partial<ConstructorParameters<typeof MasterLink>[0]> = {}): { link: MasterLink; connections: () => number } {
  let connections = 0
  const link = new MasterLink({
    workerId: 'w1',
    advertise: () => '127.0.0.1:5000',
    specs: () => ({ cpu: 4, memory: 8, storage: 100, gpu: 0 }),
    usage: () => ({ cpu: 5, memory: 6, storage: 7, gpu: 0 }),
    runningTasks: () => [],
    heartbeatIntervalMs: 50,
    joinMaxBackoffMs: 200,
    onConnected: () => connections++,
    log,
    ...extra,
  })
  t.after(() => link.close())
  link.join([address])
  return { link, connections: () => connections }
}

test('MasterLink heartbeats on a stream, registers again when the master refuses one, and ends the stream cleanly on close', async (t) => {
  const m = await startMaster(t, [])
  m.registry.register('w1', '127.0.0.1:5000', m.clock.now)
  const { log, lines } = memoryLogger('debug')
  const { link, connections } = startLink(t, m.address, log)

  await m.sink.waitFor(3, 'heartbeats from the link')
  assert.equal(link.connected, true)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_OPENED'), 1)
  assert.equal(connections(), 1)

  // The master forgets it (heartbeat timeout): the next heartbeat is refused, the stream ends with
  // that status, and the link registers again and opens a new stream.
  m.registry.markInactive('w1', 'heartbeat-timeout', m.clock.now)
  await waitUntil(() => connections() === 2, 'the link to register again', 5000)
  const n = m.sink.beats.length
  await m.sink.waitFor(n + 2, 'heartbeats on the new stream')
  assert.equal(m.registry.get('w1')?.isActive, true)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_OPENED'), 2)
  const broke = lines.filter((l) => l.msg.startsWith(`Heartbeat stream to master ${m.address} broke`))
  assert.equal(broke.length, 1, 'logged once per break')
  assert.equal(broke[0]!.level, 40)
  assert.equal(broke[0]!.code, 'FAILED_PRECONDITION')
  assert.match(broke[0]!.msg, /CLOUDAI_WORKER_INACTIVE.*; registering again$/)

  link.close()
  await waitUntil(() => m.counts.get('HEARTBEAT_STREAMS_ENDED') === 1, 'the master to see a clean end', 5000)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_BROKEN'), 0)
  assert.equal(lines.some((l) => l.msg.includes('using unary')), false)
})

test('MasterLink with heartbeatMode unary sends SendHeartbeat calls and opens no stream', async (t) => {
  const m = await startMaster(t, [])
  m.registry.register('w1', '127.0.0.1:5000', m.clock.now)
  const { link } = startLink(t, m.address, memoryLogger('silent').log, { heartbeatMode: 'unary' })
  await m.sink.waitFor(3, 'unary heartbeats')
  assert.equal(link.connected, true)
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_OPENED'), 0)
})

test('MasterLink falls back to unary SendHeartbeat with a master that has no StreamHeartbeats', async (t) => {
  // A master of an older build: RegisterWorker and SendHeartbeat only, so grpc-js answers
  // UNIMPLEMENTED to the stream.
  const registers: string[] = []
  const beats: HeartbeatMsg[] = []
  let beatWaiter: { n: number; resolve: () => void } | null = null
  const server = new grpc.Server()
  server.addService(loadProto().service, {
    RegisterWorker: (call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
      registers.push(call.request.worker_id)
      cb(null, { success: true, message: 'ok' })
    },
    SendHeartbeat: (call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => {
      beats.push(call.request)
      if (beatWaiter && beats.length >= beatWaiter.n) beatWaiter.resolve()
      cb(null, { success: true })
    },
  })
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))))
  t.after(() => server.forceShutdown())
  const address = `127.0.0.1:${port}`

  const { log, lines } = memoryLogger('debug')
  const { link } = startLink(t, address, log)
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${beats.length} unary heartbeat(s) within 5s`)), 5000)
    beatWaiter = { n: 3, resolve: () => (clearTimeout(timer), resolve()) }
    if (beats.length >= 3) beatWaiter.resolve()
  })
  assert.equal(link.connected, true)
  assert.deepEqual(registers, ['w1'], 'the fallback does not register again')
  assert.deepEqual(beats[0], { ...beat('w1', 5), memory_usage: 6, storage_usage: 7 }, 'the same content as on a stream')
  const fallback = lines.filter((l) => l.msg === `Master ${address} has no heartbeat stream; using unary SendHeartbeat`)
  assert.equal(fallback.length, 1)
  assert.equal(fallback[0]!.level, 30)
  assert.equal(lines.some((l) => l.level >= 40), false, 'no warning: nothing broke')
})
