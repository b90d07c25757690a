import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import type { DialOutcome } from '../../src/master/reconnect/protocol.js'
import type { Dialer } from '../../src/master/reconnect/dialer.js'
import { Registry } from '../../src/master/registry.js'
import { SuspectProbes } from '../../src/master/suspects.js'
import type { SuspicionCleared } from '../../src/shared/types.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'
import { startPlacement } from '../support/placement.js'
import { RawWorker } from '../support/raw-worker.js'

// A worker whose AssignTask gets no answer is suspect at once, takes no placements, and is dialled
// (MasterRegister, with backoff) until it answers; its heartbeats do not clear it. Real gRPC: a refusing
// address on 127.0.0.2 (nothing listens there), a port that accepts and never answers, and raw
// workers that answer as each test says.

/** A port on 127.0.0.2 where nothing listens (it did a moment ago: it refuses now). */
async function refusingAddress(): Promise<{ host: string; port: number; address: string }> {
  const srv = createServer()
  srv.listen(0, '127.0.0.2')
  await once(srv, 'listening')
  const port = (srv.address() as { port: number }).port
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return { host: '127.0.0.2', port, address: `127.0.0.2:${port}` }
}

/** A port that accepts connections and never says a word. */
async function muteAddress(t: TestContext): Promise<string> {
  const sockets = new Set<Socket>()
  const srv: Server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  })
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  t.after(() => {
    for (const s of sockets) s.destroy()
    srv.close()
  })
  return `127.0.0.1:${(srv.address() as { port: number }).port}`
}

function cleared(registry: Registry, id: string): Promise<SuspicionCleared> {
  return new Promise((resolve) => {
    const on = (w: { id: string }, meta: { by: SuspicionCleared }): void => {
      if (w.id !== id) return
      registry.off('worker-cleared', on)
      resolve(meta.by)
    }
    registry.on('worker-cleared', on)
  })
}

test('a worker that refuses connections is suspect at its first AssignTask: the task runs elsewhere at once with one attempt; a probe clears it once it answers, and it gets work again', async (t) => {
  const p = startPlacement(t)
  const dead = await refusingAddress()
  const live = await new RawWorker().start(t)
  const id = await p.submit()
  // Same load, same number of tasks: the lower id, the dead one, is picked first.
  p.join('a-dead', dead.address)
  p.join('b-live', live.address)
  const ran = await p.until(id, (x) => x.status === 'running')
  assert.equal(ran.workerId, 'b-live')
  assert.equal(ran.attempts, 1, 'the placement that never reached a worker spent nothing')
  assert.deepEqual(ran.history.filter((h) => h.status === 'assigned').map((h) => h.workerId), ['a-dead', 'b-live'])
  const suspect = p.registry.get('a-dead')!
  assert.equal(suspect.isActive, true, 'still active: the heartbeat timeout decides that')
  assert.match(suspect.suspect?.reason ?? '', /UNAVAILABLE/)
  assert.equal(p.registry.counts().suspect, 1)
  assert.equal(p.lines.filter((l) => l.workerId === 'a-dead' && / is suspect: /.test(l.msg)).length, 1, 'logged once')

  // It comes back on its address: the next probe's MasterRegister gets an answer.
  const back = cleared(p.registry, 'a-dead')
  const again = await new RawWorker().start(t, dead.host, dead.port)
  assert.equal(await back, 'probe')
  assert.equal(p.registry.get('a-dead')?.suspect, null)
  assert.ok(again.count('MasterRegister') >= 1)
  const next = await p.submit()
  assert.equal((await p.until(next, (x) => x.status === 'running')).workerId, 'a-dead', 'the idle one again')
  assert.equal(again.count('AssignTask'), 1)
})

test('a worker that accepts connections and never answers is suspect at the AssignTask deadline; it stays suspect until a probe gets an answer', async (t) => {
  const p = startPlacement(t, { rpcTimeoutMs: 300, dialTimeoutMs: 200 })
  const mute = await muteAddress(t)
  const live = await new RawWorker().start(t)
  const id = await p.submit()
  p.join('a-mute', mute)
  p.join('b-live', live.address)
  const ran = await p.until(id, (x) => x.status === 'running')
  assert.equal(ran.workerId, 'b-live')
  assert.equal(ran.attempts, 1)
  assert.match(p.registry.get('a-mute')?.suspect?.reason ?? '', /DEADLINE_EXCEEDED/)
  p.registry.heartbeat('a-mute', { cpu: 1, memory: 1, storage: 1, gpu: 0 }, [], Date.now())
  assert.match(p.registry.get('a-mute')?.suspect?.reason ?? '', /DEADLINE_EXCEEDED/, 'a heartbeat proves only that it reaches us')
  assert.equal(p.registry.counts().suspect, 1)
})

test('a worker the master cannot reach stays suspect through its heartbeats and RegisterWorker calls: one AssignTask, not one per heartbeat; a probe answered clears it and it gets the task', async (t) => {
  const p = startPlacement(t)
  const w = await new RawWorker().start(t)
  let reachable = false
  const cut = { code: grpc.status.UNAVAILABLE, details: 'no route to host' }
  w.onAssign = () => (reachable ? { success: true, message: 'started' } : cut)
  w.onRegister = () => (reachable ? { success: true, message: 'already connected' } : cut)
  const id = await p.submit()
  p.join('worker-1', w.address)
  await p.until(id, (x) => x.status === 'queued' && x.attempt === 1)
  const usage = { cpu: 1, memory: 1, storage: 1, gpu: 0 }
  for (let i = 0; i < 20; i++) {
    p.registry.heartbeat('worker-1', usage, [], Date.now())
    p.queue.onHeartbeat('worker-1', [])
    if (i === 10) p.registry.connect('worker-1', { specs: { cpu: 4, memory: 8, storage: 100, gpu: 0 }, reportedAddress: null }, Date.now())
    await new Promise((resolve) => setImmediate(resolve))
  }
  await w.when(() => w.count('MasterRegister', 'answered') >= 2)
  assert.equal(w.count('AssignTask'), 1, '20 heartbeats and a RegisterWorker: still one AssignTask')
  assert.ok(p.registry.get('worker-1')?.suspect)
  assert.equal(p.tasks.get(id)?.status, 'queued')

  reachable = true
  const back = cleared(p.registry, 'worker-1')
  assert.equal(await back, 'probe')
  const ran = await p.until(id, (x) => x.status === 'running')
  assert.deepEqual({ workerId: ran.workerId, attempts: ran.attempts }, { workerId: 'worker-1', attempts: 1 })
  assert.equal(w.count('AssignTask'), 2)
})

test('a paused worker (its AssignTask answered after the deadline) is suspect; resumed, a probe clears it within its backoff and it gets work again', async (t) => {
  const p = startPlacement(t, { rpcTimeoutMs: 300, dialTimeoutMs: 200 })
  const w = await new RawWorker().start(t)
  // Paused: every call waits until it is resumed (as a SIGSTOPped process's would).
  let resume!: () => void
  let paused: Promise<void> | null = new Promise<void>((resolve) => (resume = resolve))
  const later = async <T>(answer: T): Promise<T> => {
    if (paused) await paused
    return answer
  }
  w.onAssign = () => later({ success: false, message: 'not started' })
  w.onRegister = () => later({ success: true, message: 'already connected' })
  const id = await p.submit()
  p.join('worker-1', w.address)
  await p.until(id, (x) => x.status === 'queued' && x.attempt === 1)
  assert.match(p.registry.get('worker-1')?.suspect?.reason ?? '', /DEADLINE_EXCEEDED/)
  await w.when(() => w.count('MasterRegister') >= 2)
  p.registry.heartbeat('worker-1', { cpu: 1, memory: 1, storage: 1, gpu: 0 }, [], Date.now())
  assert.ok(p.registry.get('worker-1')?.suspect, 'its heartbeats do not clear it')

  w.onAssign = () => ({ success: true, message: 'started' })
  const back = cleared(p.registry, 'worker-1')
  paused = null
  resume()
  assert.equal(await back, 'probe')
  const ran = await p.until(id, (x) => x.status === 'running')
  assert.deepEqual({ workerId: ran.workerId, attempt: ran.attempt, attempts: ran.attempts }, { workerId: 'worker-1', attempt: 2, attempts: 1 })
})

test('while every worker is suspect tasks wait, and nothing is sent again until a probe gets an answer; then they are placed', async (t) => {
  const p = startPlacement(t)
  const w = await new RawWorker().start(t)
  let up = false
  w.onAssign = () => (up ? { success: true, message: 'started' } : { code: grpc.status.UNAVAILABLE, details: 'the worker is shutting down (CLOUDAI_SHUTTING_DOWN)' })
  w.onRegister = () => (up ? { success: true, message: 'already connected' } : { code: grpc.status.UNAVAILABLE, details: 'the worker is shutting down (CLOUDAI_SHUTTING_DOWN)' })
  const id = await p.submit()
  p.join('worker-1', w.address)
  await p.until(id, (x) => x.status === 'queued' && x.attempt === 1)
  // Probes come, spaced by the backoff; placements do not.
  await w.when(() => w.count('MasterRegister', 'answered') >= 3)
  assert.equal(w.count('AssignTask'), 1, 'one AssignTask while suspect')
  assert.equal(p.tasks.get(id)?.status, 'queued')
  assert.equal(p.tasks.get(id)?.attempts, 0)
  up = true
  const ran = await p.until(id, (x) => x.status === 'running')
  assert.equal(ran.workerId, 'worker-1')
  assert.equal(ran.attempts, 1)
  assert.equal(w.count('AssignTask'), 2)
})

test('probes back off: each failed probe doubles the wait up to the cap, and a worker suspect again soon after it was cleared goes on from there', async (t) => {
  const clock = new ManualClock()
  const delays: number[] = []
  const schedule = clock.setTimeout.bind(clock)
  clock.setTimeout = (fn, ms) => {
    delays.push(ms)
    return schedule(fn, ms)
  }
  const outcomes: DialOutcome[] = []
  let dials = 0
  const dialer: Dialer = {
    kind: 'inline',
    dial: () => {
      dials++
      const outcome = outcomes.shift() ?? 'refused'
      return { promise: Promise.resolve({ workerId: 'w1', outcome, message: outcome, elapsedMs: 1 }), cancel: () => {} }
    },
    close: async () => {},
  }
  const registry = new Registry()
  registry.register('w1', '127.0.0.2:1', clock.now())
  registry.connect('w1', { specs: { cpu: 1, memory: 1, storage: 1, gpu: 0 }, reportedAddress: null }, clock.now())
  const probes = new SuspectProbes(registry, dialer, { masterId: 'm', masterAddress: () => '127.0.0.1:1', dialTimeoutMs: 100, log: memoryLogger('silent').log, clock, random: () => 1 })
  probes.start()
  t.after(() => probes.close())
  /** Fires the pending probe and lets its dial's answer be handled. */
  const fire = async (): Promise<void> => {
    clock.advance(delays.at(-1)!)
    await new Promise((resolve) => setImmediate(resolve))
  }

  outcomes.push('refused', 'timeout', 'success')
  registry.markSuspect('w1', 'AssignTask failed (UNAVAILABLE)', clock.now())
  for (let i = 0; i < 3; i++) await fire()
  assert.deepEqual(delays, [200, 400, 800], 'no dial until its wait has passed, each wait twice the last')
  assert.equal(dials, 3)
  assert.equal(registry.get('w1')?.suspect, null, 'the third probe got an answer')
  assert.equal(probes.size, 0)

  // It answers probes yet fails AssignTask again: probed less and less often, never every 200 ms.
  outcomes.push('success')
  registry.markSuspect('w1', 'AssignTask failed (UNAVAILABLE)', clock.now())
  await fire()
  registry.markSuspect('w1', 'AssignTask failed (UNAVAILABLE)', clock.now())
  for (let i = 0; i < 3; i++) await fire()
  assert.deepEqual(delays.slice(3), [1600, 3200, 5000, 5000, 5000], 'on from where it was, up to the cap')

  // A heartbeat does not end that suspicion; an answered AssignTask does; one a minute later starts from the beginning.
  registry.heartbeat('w1', { cpu: 1, memory: 1, storage: 1, gpu: 0 }, [], clock.now())
  assert.equal(probes.size, 1)
  registry.clearSuspect('w1', 'assign')
  assert.equal(probes.size, 0)
  assert.equal(clock.pending, 0, 'no probe left scheduled')
  clock.advance(61_000)
  registry.markSuspect('w1', 'AssignTask failed (DEADLINE_EXCEEDED)', clock.now())
  assert.equal(delays.at(-1), 200)
})
