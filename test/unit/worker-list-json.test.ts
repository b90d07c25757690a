import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import { toWorkerView } from '../../src/master/views.js'
import { workerJson, workerListJson } from '../../src/master/worker-list-json.js'

const specs = { cpu: 4, memory: 8, storage: 100, gpu: 0 }

function fresh(r: Registry): string {
  return JSON.stringify({ workers: r.list().map(toWorkerView) })
}

test('the cached worker list is byte for byte the fresh rendering, through every registry change', () => {
  const r = new Registry()
  for (let i = 0; i < 5; i++) r.register(`w${i}`, `127.0.0.1:${5000 + i}`, 1_700_000_000_000 + i)
  assert.equal(workerListJson(r.values()), fresh(r))
  r.connect('w1', { specs, reportedAddress: '10.0.0.1:5001' }, 1_700_000_001_000)
  r.connect('w2', { specs, reportedAddress: null }, 1_700_000_001_000)
  assert.equal(workerListJson(r.values()), fresh(r))
  r.heartbeat('w1', { cpu: 10, memory: 20, storage: 30, gpu: 0 }, [{ taskId: 't1', cpu: 1, memory: 1, gpu: 0, status: 'running', attempt: 1 }], 1_700_000_002_000)
  assert.equal(workerListJson(r.values()), fresh(r))
  r.markInactive('w2', 'heartbeat-timeout', 1_700_000_003_000)
  assert.equal(workerListJson(r.values()), fresh(r))
  // Back again: reconnects counted, connectedAt moved, running tasks cleared.
  r.connect('w2', { specs: { ...specs, gpu: 1 }, reportedAddress: null }, 1_700_000_004_000)
  r.heartbeat('w1', { cpu: 11, memory: 20, storage: 30, gpu: 0 }, [], 1_700_000_004_500)
  assert.equal(workerListJson(r.values()), fresh(r))
  // Suspect (an AssignTask got no answer); a heartbeat does not clear it, an answered probe does.
  r.markSuspect('w1', 'AssignTask failed (UNAVAILABLE: connect ECONNREFUSED)', 1_700_000_004_600)
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).suspect, true)
  r.heartbeat('w1', { cpu: 11, memory: 20, storage: 30, gpu: 0 }, [], 1_700_000_004_700)
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).suspect, true)
  r.clearSuspect('w1', 'probe')
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).suspect, false)
  // Cordoned, draining, drained, uncordoned: each one re-rendered.
  r.setScheduling('w1', { cordonedAt: 1_700_000_004_800, drain: null })
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).scheduling, 'cordoned')
  r.setScheduling('w1', { cordonedAt: 1_700_000_004_800, drain: { startedAt: 1_700_000_004_900, deadline: 1_700_000_005_900, force: false, drainedAt: null } })
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).scheduling, 'draining')
  r.setScheduling('w1', { cordonedAt: 1_700_000_004_800, drain: { startedAt: 1_700_000_004_900, deadline: 1_700_000_005_900, force: false, drainedAt: 1_700_000_005_000 } })
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).drain.drained_at, new Date(1_700_000_005_000).toISOString())
  r.setScheduling('w1', null)
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(JSON.parse(workerJson(r.get('w1')!)).scheduling, 'eligible')
  r.unregister('w3')
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.deepEqual(JSON.parse(workerListJson(r.values())).workers.map((w: { worker_id: string }) => w.worker_id), ['w0', 'w1', 'w2', 'w4'])
})

test('a record no registry call changed is not rendered again', () => {
  const r = new Registry()
  r.register('w1', '127.0.0.1:5000', 1)
  const w = r.connect('w1', { specs, reportedAddress: null }, 2)
  r.heartbeat('w1', { cpu: 10, memory: 20, storage: 30, gpu: 0 }, [], 3)
  const first = workerJson(w)
  // Edited in place, behind the registry's back (which it never does): the cached text shows it is
  // the cache answering, not a new rendering.
  w.usage!.cpu = 99
  assert.equal(workerJson(w), first)
  r.heartbeat('w1', { cpu: 99, memory: 20, storage: 30, gpu: 0 }, [], 4)
  assert.equal(JSON.parse(workerJson(w)).usage.cpu, 99)
})

test('under heartbeats the list stays fresh: requests between beats, and after a worker stayed unchanged for several', () => {
  const r = new Registry()
  for (let i = 0; i < 4; i++) {
    r.register(`w${i}`, `127.0.0.1:${6000 + i}`, 1_700_000_000_000 + i)
    r.connect(`w${i}`, { specs, reportedAddress: null }, 1_700_000_000_500)
  }
  let now = 1_700_000_001_000
  for (let round = 0; round < 6; round++) {
    // Some workers beat, others stay as they were (their joined text is reused), then all again.
    for (let i = 0; i < 4; i++) if ((i + round) % 3 === 0) r.heartbeat(`w${i}`, { cpu: round, memory: i, storage: 1.5, gpu: 0 }, round % 2 ? [{ taskId: `t${round}`, cpu: 1, memory: 1, gpu: 0, status: 'running', attempt: 1 }] : [], (now += 1000))
    assert.equal(workerListJson(r.values()), fresh(r))
    assert.equal(workerListJson(r.values()), fresh(r))
    assert.equal(workerJson(r.get('w1')!), JSON.stringify(toWorkerView(r.get('w1')!)))
  }
  r.markSuspect('w2', 'AssignTask timed out', (now += 1000))
  assert.equal(workerListJson(r.values()), fresh(r))
  r.markInactive('w3', 'heartbeat-timeout', (now += 1000))
  assert.equal(workerListJson(r.values()), fresh(r))
  assert.equal(workerListJson(r.values()), fresh(r))
})
