import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { MasterKey, tokenHash } from '../../src/shared/worker-credential.js'

const specs = { cpu: 4, memory: 8, storage: 100, gpu: 0 }
const usage = { cpu: 10, memory: 20, storage: 30, gpu: 0 }

function code(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof CloudaiError)
    return err.code
  }
  assert.fail('expected a CloudaiError')
}

test('registration is authorization-based: only registered ids may connect', () => {
  const r = new Registry()
  assert.equal(code(() => r.connect('stranger', { specs, reportedAddress: null }, 1)), 'CLOUDAI_WORKER_NOT_REGISTERED')
  assert.equal(r.size, 0)
  r.register('w1', '127.0.0.1:5000', 1)
  const w = r.connect('w1', { specs, reportedAddress: '10.0.0.1:5000' }, 2)
  assert.equal(w.isActive, true)
  assert.deepEqual(w.specs, specs)
  assert.equal(w.address, '127.0.0.1:5000', 'the operator address stays authoritative')
})

test('register is idempotent for the same address and refuses a different one', () => {
  const r = new Registry()
  assert.equal(r.register('w1', 'a:1', 1).created, true)
  assert.equal(r.register('w1', 'a:1', 2).created, false)
  assert.equal(code(() => r.register('w1', 'b:1', 3)), 'CLOUDAI_WORKER_EXISTS')
  assert.equal(r.get('w1')?.address, 'a:1')
})

test('heartbeats: unknown ids and inactive workers are refused without changing anything', () => {
  const r = new Registry()
  assert.equal(code(() => r.heartbeat('nobody', usage, [], 1)), 'CLOUDAI_UNKNOWN_WORKER')
  r.register('w1', 'a:1', 1)
  assert.equal(code(() => r.heartbeat('w1', usage, [], 2)), 'CLOUDAI_WORKER_INACTIVE')
  assert.equal(r.get('w1')?.usage, null)
  r.connect('w1', { specs, reportedAddress: null }, 3)
  r.heartbeat('w1', usage, [], 4)
  assert.equal(r.get('w1')?.lastHeartbeat, 4)
  assert.deepEqual(r.drainHeartbeats(), ['w1'])
  assert.deepEqual(r.drainHeartbeats(), [])
})

test('events: active, inactive (once), reconnect counted, unregistered', () => {
  const r = new Registry()
  const events: string[] = []
  r.on('worker-active', (w, m) => events.push(`active:${w.id}:${m.reconnect}`))
  r.on('worker-inactive', (w, m) => events.push(`inactive:${w.id}:${m.reason}`))
  r.on('worker-unregistered', (w) => events.push(`unregistered:${w.id}`))
  r.register('w1', 'a:1', 1)
  r.connect('w1', { specs, reportedAddress: null }, 2)
  assert.equal(r.markInactive('w1', 'heartbeat-timeout', 3), true)
  assert.equal(r.markInactive('w1', 'heartbeat-timeout', 4), false)
  r.connect('w1', { specs, reportedAddress: null }, 5)
  r.unregister('w1')
  assert.deepEqual(events, ['active:w1:false', 'inactive:w1:heartbeat-timeout', 'active:w1:true', 'unregistered:w1'])
  assert.equal(r.size, 0)
})

test('workers loaded from the store all start inactive', () => {
  const r = new Registry()
  r.load([{ id: 'w1', address: 'a:1', isActive: true, specs, usage, runningTasks: [], reportedAddress: null, registeredAt: 1, connectedAt: 2, lastHeartbeat: 3, disconnectedAt: null, reconnects: 0, credential: null }])
  assert.equal(r.get('w1')?.isActive, false)
  assert.deepEqual(r.counts(), { total: 1, active: 0, inactive: 1, stopped: 0, suspect: 0, cordoned: 0, draining: 0, drained: 0 })
})

test('the registry keeps the token index: issued at registration, loaded from the store, rotated with a grace, presented, revoked', () => {
  const key = MasterKey.generate()
  const r = new Registry()
  const changes: string[] = []
  r.on('worker-credential', (w, meta) => changes.push(`${w.id}:${meta.change}`))
  const first = key.issue('w1', 1)
  const { worker } = r.register('w1', 'a:1', 1, () => first.stored)
  assert.equal(r.register('w1', 'a:1', 2, () => assert.fail('a no-op issues nothing')).created, false)
  assert.deepEqual(r.tokenOwner(first.stored.hash), { worker, which: 'current', expiresAt: null })
  assert.equal(r.tokenOwner(tokenHash('cwt1_other')), undefined)

  const loaded = key.issue('w2', 1)
  r.load([{ ...worker, id: 'w2', credential: loaded.stored }])
  assert.equal(r.tokenOwner(loaded.stored.hash)?.worker.id, 'w2', 'indexed when loaded')

  const second = key.issue('w1', 10)
  const before = r.get('w1')!.credential
  assert.equal(r.rotateCredential('w1', second.stored, 1000, 10).previousValidUntil, 1010)
  assert.notEqual(r.get('w1')!.credential, before, 'a credential is replaced, never edited in place')
  assert.deepEqual(r.tokenOwner(first.stored.hash)?.which, 'previous')
  assert.equal(r.tokenOwner(first.stored.hash)?.expiresAt, 1010)
  r.credentialPresented('w1', 20)
  assert.equal(r.tokenOwner(first.stored.hash), undefined, 'the new one presented: the old one is gone')
  assert.deepEqual({ ...r.get('w1')!.credential, nonce: '', hash: '' }, { nonce: '', hash: '', issuedAt: 10, presentedAt: 20, enforced: true, previous: null })
  r.credentialPresented('w1', 30)
  assert.equal(r.get('w1')!.credential!.presentedAt, 20, 'the first presentation counts')

  const third = key.issue('w1', 40)
  r.rotateCredential('w1', third.stored, 0, 40)
  assert.equal(r.tokenOwner(second.stored.hash), undefined, 'no grace: at once')
  assert.equal(r.get('w1')!.credential!.enforced, true, 'a rotation keeps it required')
  r.unregister('w1')
  assert.equal(r.tokenOwner(third.stored.hash), undefined, 'unregistering revokes')
  assert.deepEqual(changes, ['w1:rotated', 'w1:presented', 'w1:rotated'])
})

test('suspicion: only an active worker, once until cleared; cleared by a probe, an answered AssignTask or going inactive, not by a heartbeat or a registration; each emitted once', () => {
  const r = new Registry()
  const events: string[] = []
  r.on('worker-suspect', (w, s) => events.push(`${w.id}:suspect:${s.reason}`))
  r.on('worker-cleared', (w, meta) => events.push(`${w.id}:cleared:${meta.by}`))
  r.register('w1', 'a:1', 1)
  assert.equal(r.markSuspect('w1', 'x', 2), false, 'not active: nothing to suspect')
  r.connect('w1', { specs, reportedAddress: null }, 3)
  assert.equal(r.markSuspect('w1', 'AssignTask failed (UNAVAILABLE)', 4), true)
  assert.equal(r.markSuspect('w1', 'again', 5), false, 'once per suspicion')
  assert.deepEqual(r.get('w1')?.suspect, { since: 4, reason: 'AssignTask failed (UNAVAILABLE)' })
  assert.deepEqual(r.counts(), { total: 1, active: 1, inactive: 0, stopped: 0, suspect: 1, cordoned: 0, draining: 0, drained: 0 })
  r.heartbeat('w1', usage, [], 6)
  r.connect('w1', { specs, reportedAddress: null }, 7)
  assert.deepEqual(r.get('w1')?.suspect, { since: 4, reason: 'AssignTask failed (UNAVAILABLE)' }, 'its own calls prove only that it reaches us')
  assert.equal(r.clearSuspect('w1', 'probe'), true)
  assert.equal(r.get('w1')?.suspect, null)
  r.markSuspect('w1', 'b', 8)
  r.clearSuspect('w1', 'assign')
  r.markSuspect('w1', 'c', 10)
  assert.equal(r.markInactive('w1', 'heartbeat-timeout', 11), true)
  assert.equal(r.get('w1')?.suspect, null, 'inactive says more')
  assert.equal(r.clearSuspect('w1', 'probe'), false)
  assert.deepEqual(events, ['w1:suspect:AssignTask failed (UNAVAILABLE)', 'w1:cleared:probe', 'w1:suspect:b', 'w1:cleared:assign', 'w1:suspect:c'])
})

test('counts workers by scheduling state, and a drained worker that is stopped is not counted inactive', () => {
  const r = new Registry()
  for (const id of ['w1', 'w2', 'w3', 'w4', 'w5']) r.register(id, `127.0.0.1:${id.slice(1)}`, 1)
  r.connect('w1', { specs, reportedAddress: null }, 2)
  r.setScheduling('w2', { cordonedAt: 3, drain: null })
  r.setScheduling('w3', { cordonedAt: 3, drain: { startedAt: 3, deadline: null, force: false, drainedAt: null } })
  r.setScheduling('w4', { cordonedAt: 3, drain: { startedAt: 3, deadline: null, force: false, drainedAt: 4 } })
  r.connect('w5', { specs, reportedAddress: null }, 2)
  r.setScheduling('w5', { cordonedAt: 3, drain: { startedAt: 3, deadline: null, force: false, drainedAt: 4 } })
  // w2 and w3 are inactive and not drained: an outage; w4 was drained and stopped: planned.
  assert.deepEqual(r.counts(), { total: 5, active: 2, inactive: 2, stopped: 1, suspect: 0, cordoned: 1, draining: 1, drained: 2 })
})

test('active() holds the active workers and no others, in the order they became active, whatever made them active or not', () => {
  const r = new Registry()
  const ids = (): string[] => [...r.active()].map((w) => w.id)
  r.load([{ id: 'loaded', address: 'a:9', isActive: true, specs, usage, runningTasks: [], reportedAddress: null, registeredAt: 1, connectedAt: 2, lastHeartbeat: 3, disconnectedAt: null, reconnects: 0, credential: null }])
  for (const id of ['w1', 'w2', 'w3']) r.register(id, `a:${id.slice(1)}`, 1)
  assert.deepEqual(ids(), [], 'loaded and registered workers start inactive, whatever the store said')
  r.connect('w1', { specs, reportedAddress: null }, 2)
  r.connect('w2', { specs, reportedAddress: null }, 2)
  r.connect('w2', { specs, reportedAddress: null }, 3)
  assert.deepEqual(ids(), ['w1', 'w2'], 'a second RegisterWorker of an active worker adds it once')
  assert.equal(r.markInactive('w1', 'heartbeat-timeout', 4), true)
  assert.deepEqual(ids(), ['w2'])
  r.connect('w1', { specs, reportedAddress: null }, 5)
  r.connect('loaded', { specs, reportedAddress: null }, 5)
  assert.deepEqual(ids(), ['w2', 'w1', 'loaded'])
  r.unregister('w2')
  assert.deepEqual(ids(), ['w1', 'loaded'])
  assert.deepEqual(ids().sort(), r.list().filter((w) => w.isActive).map((w) => w.id).sort(), 'the same as the records say')
})
