import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { grpcConnectionBudget, openFilesLimit } from '../../src/master/connection-budget.js'
import { MasterGrpcServer, type GrpcLimits, type HeartbeatSink } from '../../src/master/grpc.js'
import { Registry } from '../../src/master/registry.js'
import { ClusterAuth } from '../../src/shared/cluster-auth.js'
import { CounterReader, Counters } from '../../src/master/counters.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatMsg, RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import { MasterLink } from '../../src/worker/link.js'
import { makeTestCa } from '../support/ca.js'
import { tempDir, waitUntil } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

// The gRPC port's connection limits (issue 15), each against a real MasterGrpcServer on
// 127.0.0.1, port 0, with its timeouts shortened through the constructor: the preface timeout,
// the idle timeout (a heartbeat stream is a call), and keepalive in both directions.

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const beat = (workerId: string): HeartbeatMsg => ({ worker_id: workerId, cpu_usage: 10, memory_usage: 20, storage_usage: 30, gpu_usage: 0, running_tasks: [] })
const info = (workerId: string): WorkerInfoMsg => ({ worker_id: workerId, worker_ip: '127.0.0.1:5000', total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 })

class BeatSink implements HeartbeatSink {
  count = 0
  ingest(): void {
    this.count++
  }
}

interface Master {
  server: MasterGrpcServer
  registry: Registry
  sink: BeatSink
  counts: CounterReader
  lines: ReturnType<typeof memoryLogger>['lines']
  port: number
  address: string
}

async function startMaster(t: TestContext, limits: Partial<GrpcLimits>, auth?: ClusterAuth): Promise<Master> {
  const { log, lines } = memoryLogger('debug')
  const registry = new Registry()
  const sink = new BeatSink()
  const counters = new Counters()
  const server = new MasterGrpcServer({ registry, telemetry: sink, counters, host: '127.0.0.1', port: 0, log, limits, ...(auth ? { auth } : {}) })
  const port = await server.start()
  t.after(() => server.close(100))
  registry.register('w1', '127.0.0.1:5000', Date.now())
  return { server, registry, sink, counts: new CounterReader(counters), lines, port, address: `127.0.0.1:${port}` }
}

function client(t: TestContext, address: string, options: grpc.ClientOptions = {}): MasterWorkerClient {
  const c = new (loadProto().Client)(address, grpc.credentials.createInsecure(), { 'grpc.enable_retries': 0, ...options })
  t.after(() => c.close())
  return c
}

/** A raw TCP connection to the port, connected. */
async function raw(t: TestContext, port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  t.after(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  return socket
}

/** Resolves with the ms until the peer closed `socket`; rejects when it is still open after `boundMs`. */
function closedWithin(socket: Socket, boundMs: number, what: string): Promise<number> {
  const started = Date.now()
  // Reading is what notices the peer's FIN.
  socket.resume()
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve(0)
    const timer = setTimeout(() => reject(new Error(`${what}: still open after ${boundMs}ms`)), boundMs)
    socket.once('close', () => {
      clearTimeout(timer)
      resolve(Date.now() - started)
    })
  })
}

/** A TCP hop whose open connections the test can freeze: nothing crosses, nothing is closed. */
async function startProxy(t: TestContext, target: number): Promise<{ address: string; freeze: () => void }> {
  const pairs = new Set<[Socket, Socket]>()
  const server = createServer((down) => {
    const up = connect(target, '127.0.0.1')
    const pair: [Socket, Socket] = [down, up]
    pairs.add(pair)
    for (const s of pair) {
      s.on('error', () => {})
      s.on('close', () => pairs.delete(pair))
    }
    down.pipe(up).pipe(down)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const freeze = (): void => {
    for (const [down, up] of pairs) {
      down.unpipe(up)
      up.unpipe(down)
      down.pause()
      up.pause()
    }
    pairs.clear()
  }
  const sockets: Socket[] = []
  server.on('connection', (s) => sockets.push(s))
  t.after(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  const addr = server.address()
  return { address: `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, freeze }
}

test('a connection that sends nothing is closed after the preface timeout; one that does not speak HTTP/2 at once', async (t) => {
  const m = await startMaster(t, { prefaceTimeoutMs: 300, idleTimeoutMs: 60_000 })
  const silent = await raw(t, m.port)
  const elapsed = await closedWithin(silent, 5000, 'a connection that sent nothing')
  assert.ok(elapsed >= 200, `closed by the preface timer (after ${elapsed}ms), not before`)
  assert.equal(m.counts.get('GRPC_REFUSED_PREFACE_TIMEOUT'), 1)

  // Half a preface is not a preface: the timer still applies.
  const half = await raw(t, m.port)
  half.write(PREFACE.subarray(0, 12))
  await closedWithin(half, 5000, 'a connection that sent half the preface')
  assert.equal(m.counts.get('GRPC_REFUSED_PREFACE_TIMEOUT'), 2)

  const http1 = await raw(t, m.port)
  http1.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  const early = await closedWithin(http1, 5000, 'an HTTP/1.1 request')
  assert.ok(early < 200, `closed at the first wrong byte (after ${early}ms)`)
  assert.equal(m.counts.get('GRPC_REFUSED_BAD_PREFACE'), 1)
  await waitUntil(() => m.server.connections === 0, 'every refused connection forgotten', 2000)
})

test('a connection that sent only the preface and makes no call is closed after the idle timeout', async (t) => {
  const m = await startMaster(t, { prefaceTimeoutMs: 10_000, idleTimeoutMs: 400 })
  const idle = await raw(t, m.port)
  idle.write(PREFACE)
  const elapsed = await closedWithin(idle, 5000, 'a connection that sent only the preface')
  assert.ok(elapsed >= 300, `closed by the idle timeout (after ${elapsed}ms), not before`)
  assert.equal(m.counts.get('GRPC_REFUSED_PREFACE_TIMEOUT'), 0, 'its preface was in time')
  assert.equal(m.counts.get('GRPC_CONNECTIONS_ACCEPTED'), 1)
})

test('an idle heartbeat stream is a call: its connection outlives the idle timeout while preface-only ones are closed', async (t) => {
  const m = await startMaster(t, { idleTimeoutMs: 300 })
  const c = client(t, m.address)
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(c, 'RegisterWorker', info('w1'), 5000).promise).success, true)
  const call = c.StreamHeartbeats()
  let ended: grpc.StatusObject | null = null
  call.on('error', () => {})
  call.on('status', (s: grpc.StatusObject) => (ended = s))
  call.write(beat('w1'))
  await waitUntil(() => m.sink.count >= 1, 'the first streamed heartbeat')
  // Two idle timeouts pass, each shown by a connection that makes no call being closed by it.
  for (let i = 0; i < 2; i++) {
    const control = await raw(t, m.port)
    control.write(PREFACE)
    await closedWithin(control, 5000, `control connection ${i + 1}`)
  }
  assert.equal(ended, null, 'the stream is still open')
  call.write(beat('w1'))
  await waitUntil(() => m.sink.count >= 2, 'a heartbeat on the same stream after the idle timeouts')
  call.end()
})

test('a heartbeat stream that carries no heartbeat for the stream silence is ended; one that heartbeats stays open', async (t) => {
  const m = await startMaster(t, { streamSilenceMs: 300, idleTimeoutMs: 60_000 })
  const c = client(t, m.address)
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(c, 'RegisterWorker', info('w1'), 5000).promise).success, true)
  const open = (): { call: grpc.ClientDuplexStream<HeartbeatMsg, unknown>; status: Promise<grpc.StatusObject> } => {
    const call = c.StreamHeartbeats()
    call.on('error', () => {})
    return { call, status: new Promise((resolve) => call.once('status', resolve)) }
  }
  const mute = open()
  const live = open()
  let liveEnded = false
  live.call.once('status', () => (liveEnded = true))
  live.call.write(beat('w1'))
  const beating = setInterval(() => live.call.write(beat('w1')), 50)
  t.after(() => clearInterval(beating))
  const started = Date.now()
  const status = await mute.status
  const elapsed = Date.now() - started
  assert.equal(status.code, grpc.status.FAILED_PRECONDITION, status.details)
  assert.match(status.details, /no heartbeat on this stream/)
  assert.ok(elapsed >= 250 && elapsed < 3000, `ended after ${elapsed}ms`)
  // The heartbeating stream outlived it by another silence period.
  const seen = m.sink.count
  await waitUntil(() => m.sink.count >= seen + 8, 'more heartbeats on the live stream')
  assert.equal(liveEnded, false)
  clearInterval(beating)
  live.call.end()
})

test('with TLS the preface timeout covers the handshake and the preface: a TLS connection that sends nothing after its handshake is closed', async (t) => {
  const dir = tempDir(t)
  const ca = makeTestCa(dir, 'ca')
  const pem = (c: { certPath: string; keyPath: string }) => ({ cert: readFileSync(c.certPath, 'utf8'), key: readFileSync(c.keyPath, 'utf8') })
  const caPem = readFileSync(ca.caPath, 'utf8')
  const m = await startMaster(t, { prefaceTimeoutMs: 400, idleTimeoutMs: 60_000 }, new ClusterAuth({ token: null, tls: { ...pem(ca.issue('master')), ca: caPem } }))

  const worker = pem(ca.issue('worker'))
  const secured = tlsConnect({ host: '127.0.0.1', port: m.port, ca: caPem, ...worker, ALPNProtocols: ['h2'], servername: 'localhost' })
  secured.on('error', () => {})
  t.after(() => secured.destroy())
  await new Promise<void>((resolve) => secured.once('secureConnect', resolve))
  assert.equal(secured.alpnProtocol, 'h2')
  const elapsed = await closedWithin(secured as unknown as Socket, 5000, 'a TLS connection that sent no preface')
  assert.ok(elapsed >= 250, `closed by the preface timer (after ${elapsed}ms)`)
  assert.equal(m.counts.get('GRPC_REFUSED_PREFACE_TIMEOUT'), 1)

  // No certificate: the handshake itself fails (mutual TLS), counted apart.
  const anonymous = tlsConnect({ host: '127.0.0.1', port: m.port, ca: caPem, ALPNProtocols: ['h2'], servername: 'localhost' })
  anonymous.on('error', () => {})
  t.after(() => anonymous.destroy())
  await closedWithin(anonymous as unknown as Socket, 5000, 'a TLS client without a certificate')
  await waitUntil(() => m.counts.get('GRPC_REFUSED_TLS_HANDSHAKE') === 1, 'the failed handshake counted', 2000)

  // And a real client over TLS still gets its calls through the same port.
  const auth = new ClusterAuth({ token: null, tls: { ...worker, ca: caPem } })
  const c = new (loadProto().Client)(m.address, auth.channelCredentials(), auth.clientOptions({ 'grpc.enable_retries': 0 }))
  t.after(() => c.close())
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(c, 'RegisterWorker', info('w1'), 5000).promise).success, true)
})

test('keepalive: the master closes the connection of a worker that stopped answering within time + timeout', async (t) => {
  const keepalive = { timeMs: 200, timeoutMs: 200 }
  const m = await startMaster(t, { keepalive })
  const proxy = await startProxy(t, m.port)
  // The client itself does not ping: only the master's pings can notice.
  const c = client(t, proxy.address)
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(c, 'RegisterWorker', info('w1'), 5000).promise).success, true)
  const call = c.StreamHeartbeats()
  call.on('error', () => {})
  call.write(beat('w1'))
  await waitUntil(() => m.sink.count >= 1, 'the first streamed heartbeat')
  // Pings were answered so far (the connection is older than one interval).
  assert.equal(m.counts.get('HEARTBEAT_STREAMS_BROKEN'), 0)
  const frozenAt = Date.now()
  proxy.freeze()
  await waitUntil(() => m.counts.get('HEARTBEAT_STREAMS_BROKEN') === 1, 'the master to notice the silent worker', 5000)
  const noticed = Date.now() - frozenAt
  assert.ok(noticed <= keepalive.timeMs + keepalive.timeoutMs + 1000, `noticed after ${noticed}ms`)
  await waitUntil(() => m.server.connections === 0, 'its connection closed', 2000)
})

test('keepalive: a worker notices a master that stopped answering within time + timeout and registers again', async (t) => {
  // The master's own pings are slow here: only the worker's can notice.
  const m = await startMaster(t, { keepalive: { timeMs: 60_000, timeoutMs: 60_000 } })
  const proxy = await startProxy(t, m.port)
  const { log, lines } = memoryLogger('debug')
  const keepalive = { timeMs: 200, timeoutMs: 200 }
  const link = new MasterLink({
    workerId: 'w1',
    advertise: () => '127.0.0.1:5000',
    specs: () => ({ cpu: 4, memory: 8, storage: 100, gpu: 0 }),
    usage: () => ({ cpu: 1, memory: 2, storage: 3, gpu: 0 }),
    runningTasks: () => [],
    heartbeatIntervalMs: 60_000,
    joinMaxBackoffMs: 200,
    keepalive,
    log,
  })
  t.after(() => link.close())
  await link.follow(proxy.address)
  await waitUntil(() => m.sink.count >= 1, 'the first streamed heartbeat')
  const frozenAt = Date.now()
  proxy.freeze()
  const broke = await waitUntil(() => lines.find((l) => /^Heartbeat stream to master .* broke/.test(l.msg)), 'the worker to notice the silent master', 5000)
  const noticed = Date.now() - frozenAt
  assert.ok(noticed <= keepalive.timeMs + keepalive.timeoutMs + 1000, `noticed after ${noticed}ms: ${broke.msg}`)
  // Through a fresh connection (the proxy only froze the old one), it is registered again.
  await waitUntil(() => m.sink.count >= 2 && link.connected, 'registered again with heartbeats flowing', 5000)
})

test('the connection budget: 20,000 by default, less when the file-descriptor limit needs it; a flag above it is refused', () => {
  assert.equal(openFilesLimit(() => 'Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 524288               files\n'), 1024)
  assert.equal(openFilesLimit(() => 'Max open files            unlimited            unlimited            files\n'), null)
  assert.equal(openFilesLimit(() => {
    throw new Error('ENOENT')
  }), null)
  assert.ok((openFilesLimit() ?? 1) > 0, 'this process has a limit, or none is known')

  assert.deepEqual(grpcConnectionBudget(null, 1000, 1_048_576), { max: 20_000, fdLimit: 1_048_576, reserve: 1256 })
  assert.deepEqual(grpcConnectionBudget(null, 1000, 20_000), { max: 18_744, fdLimit: 20_000, reserve: 1256 })
  assert.deepEqual(grpcConnectionBudget(50_000, 1000, 1_048_576).max, 50_000)
  assert.deepEqual(grpcConnectionBudget(50_000, 1000, null).max, 50_000, 'no known limit: the flag stands')
  const refused = (requested: number | null, fdLimit: number) => () => grpcConnectionBudget(requested, 1000, fdLimit)
  const badConfig = (err: unknown): boolean => err instanceof CloudaiError && err.code === 'CLOUDAI_BAD_CONFIG' && err.message.includes('ulimit -n')
  assert.throws(refused(20_000, 20_000), (err) => badConfig(err) && (err as Error).message.includes('--grpc-max-connections 20000') && (err as Error).message.includes('at most 18744'))
  assert.throws(refused(100, 1024), badConfig, 'a limit below the reserve leaves nothing for a number asked for')
  const small = grpcConnectionBudget(null, 1000, 1024)
  assert.equal(small.max, 512, 'no number asked for: half the limit, and a warning')
  assert.match(small.warning ?? '', /ulimit -n/)
})
