import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import { toWorkerView } from '../../src/master/views.js'
import { listBodyText } from '../../src/master/api/list-body.js'
import { type ListWalk, workerJson, workerListBody, workerListBodyInTurns, workerListJson } from '../../src/master/worker-list-json.js'

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

/** The body as GET /api/workers streams it: the same text, and the UTF-8 bytes it announces. */
function assertFresh(r: Registry): void {
  const body = workerListBody(r.values())
  const text = listBodyText(body)
  assert.equal(text, fresh(r))
  assert.equal(body.bytes, Buffer.byteLength(text), 'content-length is the UTF-8 size of what is sent')
  assert.equal(body.items.length, r.size)
}

const credential = (n: number) => ({ nonce: `nonce-${n}`, hash: `hash-${n}`, issuedAt: 1_700_000_000_000 + n, presentedAt: null, enforced: false, previous: null })

test('the streamed list and its byte count stay fresh through every kind of change: token rotation and presentation, specs, reported address, a move to another address, multi-byte text', () => {
  const r = new Registry()
  let now = 1_700_000_000_000
  for (let i = 0; i < 3; i++) r.register(`w${i}`, `127.0.0.1:${7000 + i}`, (now += 1), () => credential(i))
  assertFresh(r)
  r.connect('w0', { specs, reportedAddress: '10.0.0.1:7000' }, (now += 1000))
  assertFresh(r)
  // A worker that restarted within the heartbeat timeout: still active, new specs and address.
  r.connect('w0', { specs: { ...specs, memory: 16 }, reportedAddress: '10.0.0.9:7000' }, (now += 1000))
  assertFresh(r)
  r.credentialPresented('w0', (now += 1))
  assertFresh(r)
  r.rotateCredential('w0', credential(10), 60_000, (now += 1))
  assertFresh(r)
  r.rotateCredential('w1', credential(11), 0, (now += 1))
  r.certificatePresented('w2')
  assertFresh(r)
  r.markSuspect('w0', 'AssignTask failed: connexion refusée — 拒绝 🙂', (now += 1))
  assertFresh(r)
  r.heartbeat('w0', { cpu: 1.25, memory: 2, storage: 3, gpu: 0 }, [{ taskId: 'tâche-1', cpu: 1, memory: 1, gpu: 0, status: 'running', attempt: 1 }], (now += 1))
  assertFresh(r)
  // Moved: unregistered, then registered again under the same id at another address.
  r.unregister('w1')
  assertFresh(r)
  r.register('w1', '127.0.0.1:7999', (now += 1), () => credential(12))
  assertFresh(r)
  r.connect('w1', { specs, reportedAddress: null }, (now += 1))
  r.markInactive('w0', 'heartbeat-timeout', (now += 1))
  assertFresh(r)
  assert.deepEqual(JSON.parse(workerListJson(r.values())).workers.map((w: { worker_id: string; address: string }) => `${w.worker_id}@${w.address}`), ['w0@127.0.0.1:7000', 'w2@127.0.0.1:7002', 'w1@127.0.0.1:7999'])
})

test('a list taken while the reply is still being written is not changed by what happens after', () => {
  const r = new Registry()
  r.register('w0', '127.0.0.1:7000', 1)
  r.connect('w0', { specs, reportedAddress: null }, 2)
  r.heartbeat('w0', { cpu: 1, memory: 2, storage: 3, gpu: 0 }, [], 3)
  const body = workerListBody(r.values())
  const before = listBodyText(body)
  r.heartbeat('w0', { cpu: 9, memory: 9, storage: 9, gpu: 0 }, [], 4)
  r.unregister('w0')
  assert.equal(listBodyText(body), before)
  assert.equal(body.bytes, Buffer.byteLength(before))
})

const walkOf = (r: Registry, wanted = (): boolean => true): ListWalk => ({ isCurrent: (w) => r.get(w.id) === w, wanted })

test('the list walked in turns is the same body, lets other work run between turns, and takes the registry as each worker is reached', async () => {
  const r = new Registry()
  for (let i = 0; i < 300; i++) r.register(`t${i}`, `127.0.0.1:${6000 + i}`, 1_700_000_000_000 + i)
  for (let i = 0; i < 300; i += 3) r.connect(`t${i}`, { specs, reportedAddress: null }, 1_700_000_001_000)
  const whole = workerListBody(r.values())
  const inTurns = await workerListBodyInTurns(r.list(), walkOf(r))
  assert.deepEqual(inTurns, whole, 'a walk that fits in one turn')

  // A turn of 0 ms: a turn every 64 workers. Work queued after the walk's first turn runs before
  // its last: a walk that never yielded would finish first.
  let ranDuring = false
  const walk = workerListBodyInTurns(r.list(), walkOf(r), 0)
  setImmediate(() => (ranDuring = true))
  const turned = await walk
  assert.equal(ranDuring, true, 'other work ran between two turns')
  assert.deepEqual(turned, whole)
  assert.equal(listBodyText(turned!), fresh(r))

  // Changed between turns: the last worker, reached in a later turn, is shown as it is then.
  const later = workerListBodyInTurns(r.list(), walkOf(r), 0)
  r.heartbeat('t297', { cpu: 50, memory: 20, storage: 30, gpu: 0 }, [], 1_700_000_002_000)
  const body = await later
  assert.equal(listBodyText(body!), fresh(r))
  assert.equal(Buffer.byteLength(listBodyText(body!)), body!.bytes)
})

test('the walk in turns leaves out a worker unregistered before it is reached, lists a worker registered again once, and stops when nobody wants the list', async () => {
  const r = new Registry()
  for (let i = 0; i < 200; i++) r.register(`u${i}`, `127.0.0.1:${7000 + i}`, 1_700_000_000_000 + i)
  const pending = workerListBodyInTurns(r.list(), walkOf(r), 0)
  // After the walk's first turn (64 workers): u0 was listed, u150 not reached yet.
  r.unregister('u0')
  r.register('u0', '127.0.0.1:7000', 1_700_000_005_000)
  r.unregister('u150')
  const ids = JSON.parse(listBodyText((await pending)!)).workers.map((w: { worker_id: string }) => w.worker_id) as string[]
  assert.equal(ids.filter((id) => id === 'u0').length, 1, 'u0 once, as it was when reached')
  assert.ok(!ids.includes('u150'), 'u150 was gone when the walk reached it')
  assert.equal(ids.length, 199)

  let wanted = true
  const stopped = workerListBodyInTurns(r.list(), walkOf(r, () => wanted), 0)
  wanted = false
  assert.equal(await stopped, null, 'nobody waits for it: no list')
})
