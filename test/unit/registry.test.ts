import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import { CloudaiError } from '../../src/shared/errors.js'

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
  assert.deepEqual(r.counts(), { total: 1, active: 0, inactive: 1 })
})
