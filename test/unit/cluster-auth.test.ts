import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { MasterGrpcServer } from '../../src/master/grpc.js'
import { Registry } from '../../src/master/registry.js'
import { dialMasterRegister } from '../../src/master/reconnect/dial.js'
import type { DialRequest } from '../../src/master/reconnect/protocol.js'
import {
  CLUSTER_TOKEN_METADATA, ClusterAuth, clusterAuthOf, NO_CLUSTER_AUTH, readClusterMaterial, RefusalThrottle, TokenCheck,
} from '../../src/shared/cluster-auth.js'
import { isCloudaiError } from '../../src/shared/errors.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatAckMsg, HeartbeatMsg } from '../../src/shared/wire.js'
import { startAgent } from '../support/agent.js'
import { makeTestCa } from '../support/ca.js'
import { tempDir } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

const TOKEN = 'correct-horse-battery-staple-0123456789'
const info = { worker_id: 'w1', worker_ip: '127.0.0.1:5000', total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 }
const UNAUTH_DETAILS = 'the cluster token is missing or wrong (CLOUDAI_UNAUTHENTICATED)'

test('TokenCheck accepts only the token, whatever the length or type of the guess', () => {
  const check = new TokenCheck(TOKEN)
  assert.equal(check.accepts(TOKEN), true)
  // Digests are compared, so guesses of any length are compared in full (timingSafeEqual would
  // throw on a length mismatch if the raw strings were compared) and are simply wrong.
  for (const guess of ['', 'x', TOKEN.slice(0, -1), `${TOKEN}x`, TOKEN.toUpperCase(), 'y'.repeat(100_000), ` ${TOKEN}`]) {
    assert.equal(check.accepts(guess), false, JSON.stringify(guess.slice(0, 50)))
  }
  for (const guess of [undefined, null, 42, Buffer.from(TOKEN), {}]) assert.equal(check.accepts(guess), false, String(guess))
})

test('TokenCheck on metadata: missing, wrong, duplicated and right', () => {
  const check = new TokenCheck(TOKEN)
  const md = (...values: string[]): grpc.Metadata => {
    const m = new grpc.Metadata()
    for (const v of values) m.add(CLUSTER_TOKEN_METADATA, v)
    return m
  }
  assert.equal(check.acceptsMetadata(md()), false, 'missing')
  assert.equal(check.acceptsMetadata(md('wrong-token-wrong-token')), false, 'wrong')
  assert.equal(check.acceptsMetadata(md(TOKEN, TOKEN)), false, 'two values: not one token')
  assert.equal(check.acceptsMetadata(md(TOKEN)), true, 'right')
})

test('RefusalThrottle: one line per peer per interval, counting the rest, and bounded', () => {
  const th = new RefusalThrottle(60_000, 3)
  assert.deepEqual(th.admit('10.0.0.1', 0), { suppressed: 0 })
  assert.equal(th.admit('10.0.0.1', 1_000), null)
  assert.equal(th.admit('10.0.0.1', 59_999), null)
  assert.deepEqual(th.admit('10.0.0.2', 2_000), { suppressed: 0 }, 'another peer has its own minute')
  assert.deepEqual(th.admit('10.0.0.1', 60_000), { suppressed: 2 })
  th.admit('10.0.0.3', 61_000)
  th.admit('10.0.0.4', 125_000)
  assert.ok(th.size <= 3, `size ${th.size}`)
})

test('material is read once from the files; unusable files are config errors', (t) => {
  const dir = tempDir(t)
  assert.equal(clusterAuthOf({ clusterToken: null, tls: null }), NO_CLUSTER_AUTH)
  const config = { clusterToken: TOKEN, tls: null }
  const a = clusterAuthOf(config)
  assert.equal(a, clusterAuthOf(config), 'one ClusterAuth per config object')
  assert.equal(a.hasToken, true)
  assert.equal(a.usesTls, false)
  assert.throws(() => readClusterMaterial({ clusterToken: null, tls: { certPath: `${dir}/nope.pem`, keyPath: `${dir}/nope.key`, caPath: null } }),
    (err) => isCloudaiError(err) && err.code === 'CLOUDAI_BAD_CONFIG' && err.message.includes('--tls-cert'))
  assert.throws(() => new ClusterAuth({ token: null, tls: { cert: 'not a pem', key: 'not a key', ca: null } }),
    (err) => isCloudaiError(err) && err.code === 'CLOUDAI_BAD_CONFIG')
})

/** A master gRPC server with a token, a clock for its refusal log, and a client per token. */
async function tokenMaster(t: import('node:test').TestContext, serverToken: string | null) {
  const { log, lines } = memoryLogger('debug')
  const clock = { now: 1_000_000 }
  const registry = new Registry()
  registry.register('w1', '127.0.0.1:5000', Date.now())
  const auth = new ClusterAuth({ token: serverToken, tls: null })
  // The server's clock also drives its refusal log's once-a-minute throttle.
  const completions: unknown[] = []
  const tasks = { onHeartbeat: () => {}, onCompletion: async (r: unknown) => (completions.push(r), true) }
  const server = new MasterGrpcServer({ registry, tasks, host: '127.0.0.1', port: 0, log, auth, now: () => clock.now })
  const port = await server.start()
  t.after(() => server.close(100))
  const client = (token: string | null): MasterWorkerClient => {
    const a = new ClusterAuth({ token, tls: null })
    const c = new (loadProto().Client)(`127.0.0.1:${port}`, a.channelCredentials(), a.clientOptions())
    t.after(() => c.close())
    return c
  }
  return { registry, lines, clock, client, port, completions }
}

const refusedUnauthenticated = (err: grpc.ServiceError): boolean => {
  assert.equal(err.code, grpc.status.UNAUTHENTICATED)
  assert.equal(err.details, UNAUTH_DETAILS)
  assert.equal(err.metadata.get('cloudai-error-code')[0], 'CLOUDAI_UNAUTHENTICATED')
  return true
}

test('a master with a token refuses calls without it or with a wrong one, changes nothing, and logs once a minute per peer', async (t) => {
  const { registry, lines, clock, client, completions } = await tokenMaster(t, TOKEN)
  const before = JSON.stringify(registry.list())
  const refusalLines = () => lines.filter((l) => l.level === 40 && l.msg.includes('cluster token is missing or wrong'))

  await assert.rejects(callUnary(client(null), 'RegisterWorker', info, 5000).promise, refusedUnauthenticated)
  await assert.rejects(callUnary(client('wrong-token-wrong-token'), 'RegisterWorker', info, 5000).promise, refusedUnauthenticated)
  await assert.rejects(callUnary(client('short'), 'SendHeartbeat', { worker_id: 'w1', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] }, 5000).promise, refusedUnauthenticated)
  await assert.rejects(callUnary(client(null), 'ReportTaskCompletion', { task_id: 'task-x', worker_id: 'w1', status: 'completed', logs: '' }, 5000).promise, refusedUnauthenticated)
  assert.equal(JSON.stringify(registry.list()), before, 'no state changed')
  assert.equal(completions.length, 0, 'no completion reached the task table')
  assert.equal(registry.get('w1')?.isActive, false)

  // One line for the peer in this minute, however many refusals; the next minute says how many.
  assert.equal(refusalLines().length, 1, JSON.stringify(refusalLines()))
  assert.equal(refusalLines()[0]!.rpc, 'RegisterWorker')
  clock.now += 60_000
  await assert.rejects(callUnary(client(null), 'RegisterWorker', info, 5000).promise, refusedUnauthenticated)
  assert.equal(refusalLines().length, 2)
  assert.ok(Number(refusalLines()[1]!.suppressed) >= 2, JSON.stringify(refusalLines()[1]))

  // The stream is refused by ending it with the same status, before any heartbeat is taken.
  const stream = client('wrong-token-wrong-token').StreamHeartbeats()
  const status = await new Promise<grpc.StatusObject>((resolve) => {
    stream.on('error', () => {})
    stream.on('data', () => {})
    stream.on('status', resolve)
    stream.write({ worker_id: 'w1', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] } satisfies HeartbeatMsg)
  })
  assert.equal(status.code, grpc.status.UNAUTHENTICATED)
  assert.equal(status.details, UNAUTH_DETAILS)
  assert.equal(status.metadata.get('cloudai-error-code')[0], 'CLOUDAI_UNAUTHENTICATED')
  assert.equal(JSON.stringify(registry.list()), before)

  // The right token gets through, on unary calls and on the stream.
  const ok = client(TOKEN)
  const ack = await callUnary<object, { success: boolean }>(ok, 'RegisterWorker', info, 5000).promise
  assert.equal(ack.success, true)
  assert.equal(registry.get('w1')?.isActive, true)
  const hb = await callUnary<HeartbeatMsg, HeartbeatAckMsg>(ok, 'SendHeartbeat', { worker_id: 'w1', cpu_usage: 5, memory_usage: 5, storage_usage: 5, gpu_usage: 0, running_tasks: [] }, 5000).promise
  assert.equal(hb.success, true)
})

test('a process without a token accepts calls with or without one (rolling rollout)', async (t) => {
  const { registry, client } = await tokenMaster(t, null)
  assert.equal((await callUnary<object, { success: boolean }>(client(TOKEN), 'RegisterWorker', info, 5000).promise).success, true)
  assert.equal((await callUnary<object, { success: boolean }>(client(null), 'RegisterWorker', info, 5000).promise).success, true)
  assert.equal(registry.get('w1')?.isActive, true)
})

test('a MasterRegister dial refused for the token is the outcome "rejected" with the reason', async (t) => {
  const { log } = memoryLogger('silent')
  const agent = await startAgent(t, { clusterToken: TOKEN }, log)
  const req = (): DialRequest => ({
    workerId: 'w1', address: `127.0.0.1:${agent.port}`, masterId: 'master-1', masterAddress: '127.0.0.1:1', timeoutMs: 3000,
    deadline: Date.now() + 3000, cancelSlot: -1, cancelFlags: null, counters: null,
  })
  const without = await dialMasterRegister(req())
  assert.equal(without.outcome, 'rejected', JSON.stringify(without))
  assert.equal(without.message, UNAUTH_DETAILS)
  const wrong = await dialMasterRegister(req(), new ClusterAuth({ token: 'wrong-token-wrong-token', tls: null }))
  assert.equal(wrong.outcome, 'rejected')
  // With the token the dial gets through the check: the worker answers for itself (it cannot
  // reach a master at 127.0.0.1:1, so it says so rather than refusing the call).
  const right = await dialMasterRegister(req(), new ClusterAuth({ token: TOKEN, tls: null }))
  assert.notEqual(right.message, UNAUTH_DETAILS, JSON.stringify(right))
  assert.match(right.message, /could not register with 127\.0\.0\.1:1/)
})

test('TLS with a CA is mutual: only clients with a certificate that CA signed get through', async (t) => {
  const dir = tempDir(t)
  const ca = makeTestCa(dir, 'ca')
  const other = makeTestCa(dir, 'other-ca')
  const pem = (c: { certPath: string; keyPath: string }) => ({ cert: readFileSync(c.certPath, 'utf8'), key: readFileSync(c.keyPath, 'utf8') })
  const caPem = readFileSync(ca.caPath, 'utf8')
  const registry = new Registry()
  registry.register('w1', '127.0.0.1:5000', Date.now())
  const server = new MasterGrpcServer({ registry, host: '127.0.0.1', port: 0, log: memoryLogger('silent').log, auth: new ClusterAuth({ token: null, tls: { ...pem(ca.issue('master')), ca: caPem } }) })
  const port = await server.start()
  t.after(() => server.close(100))
  const call = (auth: ClusterAuth) => {
    const c = new (loadProto().Client)(`127.0.0.1:${port}`, auth.channelCredentials(), auth.clientOptions({ 'grpc.enable_retries': 0 }))
    t.after(() => c.close())
    return callUnary<object, { success: boolean }>(c, 'RegisterWorker', info, 3000).promise
  }
  const unavailable = (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE
  await assert.rejects(call(NO_CLUSTER_AUTH), unavailable, 'plaintext to a TLS server')
  await assert.rejects(call(new ClusterAuth({ token: null, tls: { ...pem(other.issue('stranger')), ca: caPem } })), unavailable, 'a certificate from another CA')
  await assert.rejects(call(new ClusterAuth({ token: null, tls: { ...pem(ca.issue('client')), ca: readFileSync(other.caPath, 'utf8') } })), unavailable, 'a server the client does not trust')
  assert.equal(registry.get('w1')?.isActive, false)
  assert.equal((await call(new ClusterAuth({ token: null, tls: { ...pem(ca.issue('worker')), ca: caPem } }))).success, true)
  assert.equal(registry.get('w1')?.isActive, true)
})
