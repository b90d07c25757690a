import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { Registry } from '../../src/master/registry.js'
import { WorkerAuth, type CallIdentity, type WorkerAuthMode } from '../../src/master/worker-auth.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { AUTHORIZATION_METADATA, MasterKey, type CallSource } from '../../src/shared/worker-credential.js'
import { memoryLogger } from '../support/log.js'
import { refused } from '../support/refusal.js'

// The master's decision "who is this call from, and may it speak for this worker", without
// traffic: calls are a metadata object and a peer string, so peers off this machine
// ('10.0.0.5:1234') can be tried here; the network-namespace tests do it with real packets.

const REMOTE = '10.0.0.5:1234'
const LOOPBACK = '127.0.0.1:40000'

function call(peer: string, token?: string, raw?: string): CallSource {
  const metadata = new grpc.Metadata()
  if (token !== undefined) metadata.set(AUTHORIZATION_METADATA, `Bearer ${token}`)
  if (raw !== undefined) metadata.set(AUTHORIZATION_METADATA, raw)
  return { metadata, getPeer: () => peer }
}

function setup(mode: WorkerAuthMode = 'token') {
  const { log, lines } = memoryLogger('debug')
  const clock = { now: 1_800_000_000_000 }
  const key = MasterKey.generate()
  const registry = new Registry()
  const tokens = new Map<string, string>()
  for (const id of ['w1', 'w2']) {
    registry.register(id, `10.0.0.9:${id === 'w1' ? 1 : 2}`, clock.now, () => {
      const issued = key.issue(id, clock.now)
      tokens.set(id, issued.token)
      return issued.stored
    })
  }
  const auth = new WorkerAuth({ registry, mode, log, now: () => clock.now, warnEveryMs: 20 })
  const refusals = () => lines.filter((l) => l.level === 40 && String(l.msg).startsWith('Refused '))
  return { auth, registry, key, tokens, clock, lines, refusals }
}


test('no token from off the machine is refused, naming the two ways out, and logged once a minute per address', () => {
  const { auth, clock, refusals } = setup()
  for (let i = 0; i < 3; i++) assert.throws(() => auth.identify('RegisterWorker', call(REMOTE)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED', '--token', '--worker-auth none', '10.0.0.5'))
  // Another port of the same host is the same address; another host is logged on its own.
  assert.throws(() => auth.identify('SendHeartbeat', call('10.0.0.5:999')))
  assert.throws(() => auth.identify('SendHeartbeat', call('[fd00::7]:5000')), refused('CLOUDAI_WORKER_TOKEN_REQUIRED'))
  assert.deepEqual(refusals().map((l) => l.msg.slice(0, 34)), ['Refused RegisterWorker from 10.0.0', 'Refused SendHeartbeat from fd00::7'])
  clock.now += 60_000
  assert.throws(() => auth.identify('RegisterWorker', call(REMOTE)))
  assert.equal(refusals().length, 3)
  assert.equal(refusals()[2]!.suppressed, 3, 'the next minute says how many were held back')
  assert.equal(refusals()[2]!.code, 'CLOUDAI_WORKER_TOKEN_REQUIRED')
  // The status a peer sees: UNAUTHENTICATED.
  try {
    auth.identify('RegisterWorker', call(REMOTE))
  } catch (err) {
    assert.equal((err as CloudaiError).grpcStatus, grpc.status.UNAUTHENTICATED)
  }
})

test('a token binds the call to its worker, from anywhere; it cannot act as another; the first use marks it presented', () => {
  const { auth, registry, tokens } = setup()
  const id = auth.identify('RegisterWorker', call(REMOTE, tokens.get('w1')))
  assert.equal(id.how, 'token')
  assert.equal(id.workerId, 'w1')
  auth.authorize('RegisterWorker', id, 'w1', call(REMOTE))
  assert.throws(() => auth.authorize('SendHeartbeat', id, 'w2', call(REMOTE)), refused('CLOUDAI_WRONG_WORKER', 'w1', 'w2'))
  assert.equal(new CloudaiError('CLOUDAI_WRONG_WORKER', '').grpcStatus, grpc.status.PERMISSION_DENIED)
  assert.notEqual(registry.get('w1')!.credential!.presentedAt, null, 'presented')
  assert.equal(registry.get('w1')!.credential!.enforced, true)
  assert.equal(registry.get('w2')!.credential!.presentedAt, null, 'the other is not')
})

test('no token from loopback: any worker that never presented one; refused for one that has, from loopback too', () => {
  const { auth, tokens } = setup()
  const loop = auth.identify('RegisterWorker', call(LOOPBACK))
  assert.deepEqual(loop, { how: 'loopback', workerId: null })
  for (const peer of ['[::1]:5000', 'ipv4:127.0.0.1:5000', '[::ffff:127.0.0.1]:5000']) assert.equal(auth.identify('SendHeartbeat', call(peer)).how, 'loopback', peer)
  auth.authorize('RegisterWorker', loop, 'w1', call(LOOPBACK))
  auth.authorize('RegisterWorker', loop, 'not-registered', call(LOOPBACK))
  auth.identify('SendHeartbeat', call(REMOTE, tokens.get('w1')))
  assert.throws(() => auth.authorize('RegisterWorker', loop, 'w1', call(LOOPBACK)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED', 'w1 has presented its token'))
  auth.authorize('RegisterWorker', loop, 'w2', call(LOOPBACK))
})

test('a token the master does not hold is refused in every mode: unknown, malformed, the stored hash or nonce, another master\'s', () => {
  for (const mode of ['token', 'none'] as const) {
    const { auth, registry } = setup(mode)
    const stored = registry.get('w1')!.credential!
    const guesses = [`cwt1_${'A'.repeat(43)}`, stored.hash, stored.nonce, MasterKey.generate().tokenFor('w1', stored.nonce)]
    for (const g of guesses) assert.throws(() => auth.identify('RegisterWorker', call(LOOPBACK, g)), refused('CLOUDAI_WORKER_TOKEN_INVALID'), `${mode}: ${g.slice(0, 12)}`)
    for (const raw of ['Basic dXNlcg==', 'Bearer', 'bearer x y']) assert.throws(() => auth.identify('RegisterWorker', call(LOOPBACK, undefined, raw)), refused('CLOUDAI_WORKER_TOKEN_INVALID'), raw)
  }
})

test('rotation: the old token works until the new one is presented, or until its grace ends; tokenless stays refused', () => {
  const { auth, registry, key, tokens, clock } = setup()
  const t1 = tokens.get('w1')!
  auth.identify('RegisterWorker', call(REMOTE, t1))
  const next = key.issue('w1', clock.now)
  const { previousValidUntil } = registry.rotateCredential('w1', next.stored, 10_000, clock.now)
  assert.equal(previousValidUntil, clock.now + 10_000)
  const old = auth.identify('SendHeartbeat', call(REMOTE, t1))
  assert.equal(old.workerId, 'w1', 'the old token, in its grace')
  assert.throws(() => auth.authorize('RegisterWorker', auth.identify('RegisterWorker', call(LOOPBACK)), 'w1', call(LOOPBACK)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED'), 'a rotation does not reopen the tokenless way')
  auth.identify('RegisterWorker', call(REMOTE, next.token))
  assert.throws(() => auth.identify('SendHeartbeat', call(REMOTE, t1)), refused('CLOUDAI_WORKER_TOKEN_INVALID'), 'the new one presented: the old one is done')
  assert.throws(() => auth.authorize('StreamHeartbeats', old, 'w1', call(REMOTE)), refused('CLOUDAI_WORKER_TOKEN_INVALID'), 'and so is a stream opened with it')

  // Not presented: the grace ends it.
  const t2 = tokens.get('w2')!
  registry.rotateCredential('w2', key.issue('w2', clock.now).stored, 10_000, clock.now)
  clock.now += 9_999
  assert.equal(auth.identify('SendHeartbeat', call(REMOTE, t2)).workerId, 'w2')
  clock.now += 1
  assert.throws(() => auth.identify('SendHeartbeat', call(REMOTE, t2)), refused('CLOUDAI_WORKER_TOKEN_INVALID'))
  // No grace: at once.
  const t3 = next.token
  registry.rotateCredential('w1', key.issue('w1', clock.now).stored, 0, clock.now)
  assert.throws(() => auth.identify('SendHeartbeat', call(REMOTE, t3)), refused('CLOUDAI_WORKER_TOKEN_INVALID'))
})

test('unregistering revokes at once, streams opened with the token included', () => {
  const { auth, registry, tokens } = setup()
  const open: CallIdentity = auth.identify('StreamHeartbeats', call(REMOTE, tokens.get('w1')))
  registry.unregister('w1')
  assert.throws(() => auth.identify('RegisterWorker', call(REMOTE, tokens.get('w1'))), refused('CLOUDAI_WORKER_TOKEN_INVALID'))
  assert.throws(() => auth.authorize('StreamHeartbeats', open, 'w1', call(REMOTE)), refused('CLOUDAI_WORKER_TOKEN_INVALID'))
  // Registered again: a new credential; the old token is still nobody's.
  registry.register('w1', '10.0.0.9:1', 0, () => MasterKey.generate().issue('w1', 0).stored)
  assert.throws(() => auth.identify('RegisterWorker', call(REMOTE, tokens.get('w1'))), refused('CLOUDAI_WORKER_TOKEN_INVALID'))
})

test('--worker-auth none: no token is accepted from anywhere for workers that never presented one, and it is warned about every minute', (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] })
  const { auth, tokens, lines } = setup('none')
  assert.match(auth.warning ?? '', /^--worker-auth none/)
  const open = auth.identify('RegisterWorker', call(REMOTE))
  assert.deepEqual(open, { how: 'open', workerId: null })
  auth.authorize('RegisterWorker', open, 'w1', call(REMOTE))
  // Tokens still bind: a worker that uses one cannot be impersonated without it.
  auth.identify('RegisterWorker', call(REMOTE, tokens.get('w2')))
  assert.throws(() => auth.authorize('RegisterWorker', open, 'w2', call(REMOTE)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED'))

  const warnings = () => lines.filter((l) => l.level === 40 && String(l.msg).startsWith('--worker-auth none'))
  auth.start()
  assert.equal(warnings().length, 1, 'at start')
  t.mock.timers.tick(19)
  assert.equal(warnings().length, 1)
  t.mock.timers.tick(1)
  t.mock.timers.tick(20)
  assert.equal(warnings().length, 3, 'again every interval')
  auth.close()
  t.mock.timers.tick(100)
  assert.equal(warnings().length, 3, 'and never after close()')
  assert.equal(setup('token').auth.warning, null)
})
