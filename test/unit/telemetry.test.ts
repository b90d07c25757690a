import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import { TelemetryHub, type TelemetryPlacement } from '../../src/master/telemetry/hub.js'
import { CounterReader, Counters } from '../../src/master/counters.js'
import { RING_CAPACITY, type LaneSummary } from '../../src/master/telemetry/lane.js'
import { memoryLogger } from '../support/log.js'
import { waitUntil } from '../support/cluster.js'
import { LANES_PER_CHUNK } from '../../src/master/telemetry/slab.js'

// The telemetry hub with its real threads: lanes, ordering, averages, thread lifecycle, restarts.

const specs = { cpu: 4, memory: 8, storage: 100, gpu: 0 }

function startHub(t: TestContext, placement: TelemetryPlacement, opts: { watchAll?: boolean; queueSlots?: number } = {}) {
  const registry = new Registry()
  const counters = new Counters()
  const { log, lines } = memoryLogger('debug')
  const hub = new TelemetryHub(registry, { placement, counters, log, historyMs: 3_600_000, stepMs: 60_000, summaryMs: 20, ...(opts.queueSlots ? { queueSlots: opts.queueSlots } : {}) })
  hub.start()
  // Summaries are sent only for what somebody watches: most tests watch everything.
  if (opts.watchAll ?? true) hub.want('*', true)
  t.after(() => hub.close())
  const connect = (id: string): void => {
    registry.register(id, `127.0.0.1:${5000 + registry.size}`, Date.now())
    registry.connect(id, { specs, reportedAddress: null }, Date.now())
  }
  /** Resolves with the first summary of `id` that has processed at least `n` samples. */
  const processed = (id: string, n: number): Promise<LaneSummary> => {
    const now = hub.summary(id)
    if (now && now.processed >= n) return Promise.resolve(now)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        hub.off('summary', on)
        reject(new Error(`lane ${id} did not report ${n} processed samples within 20s (last: ${JSON.stringify(hub.summary(id))})`))
      }, 20_000)
      const on = (s: LaneSummary): void => {
        if (s.workerId !== id || s.processed < n) return
        clearTimeout(timer)
        hub.off('summary', on)
        resolve(s)
      }
      hub.on('summary', on)
    })
  }
  const send = (id: string, cpu: number, running = 0): void => hub.ingest(id, { cpu, memory: cpu / 2, storage: 10, gpu: 0 }, Array.from({ length: running }, () => ({ taskId: 'x', cpu: 0, memory: 0, gpu: 0, status: 'running', attempt: 1 })))
  return { registry, counters, hub, lines, connect, processed, send }
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
/** History values are float32 and rounded to two decimals for display. */
const near = (actual: number, expected: number, what: string): void => assert.ok(Math.abs(actual - expected) <= 0.011, `${what}: ${actual} is not ${expected}`)

test('a thread under steady heartbeats drains them on a 250 ms tick: a few wakes a second, not twenty', async (t) => {
  const { hub, connect, send } = startHub(t, 1, { watchAll: false })
  connect('w1')
  send('w1', 1)
  await waitUntil(() => (hub.summary('w1')?.processed ?? 0) >= 1 || undefined, 'the first heartbeat processed')
  const r0 = hub.rounds
  const t0 = performance.now()
  let sent = 1
  // A heartbeat every 20 ms: work for every tick, far from half a ring per tick (no early wake).
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      send('w1', 1 + (sent++ % 50))
      if (performance.now() - t0 >= 2000) {
        clearInterval(timer)
        resolve()
      }
    }, 20)
  })
  const rounds = hub.rounds - r0
  const elapsed = performance.now() - t0
  // A busy machine only makes ticks later (fewer rounds): the bound holds however slow it is.
  assert.ok(rounds <= Math.ceil(elapsed / 250) + 3, `${rounds} drain rounds in ${Math.round(elapsed)} ms`)
  await waitUntil(() => (hub.summary('w1')?.processed ?? 0) >= sent || undefined, `all ${sent} heartbeats processed`)
})

for (const placement of ['per-worker', 2] as const) {
  test(`placement ${placement}: heartbeats of several workers land in their own lanes, in order, with the right averages and peaks`, async (t) => {
    const { hub, connect, processed, send, counters } = startHub(t, placement)
    const ids = ['w1', 'w2', 'w3']
    for (const id of ids) connect(id)
    assert.equal(hub.laneCount, 3)
    assert.equal(hub.threadCount, placement === 'per-worker' ? 3 : 2)
    const sent = new Map<string, number[]>(ids.map((id) => [id, []]))
    // Interleaved, as heartbeats from many workers arrive; in two bursts, each within a lane's ring
    // (the thread drains on its tick, and a burst larger than the ring would lap it).
    for (let i = 0; i < 40; i++) {
      for (const [k, id] of ids.entries()) {
        const cpu = (k + 1) * 10 + (i % 7)
        sent.get(id)!.push(cpu)
        send(id, cpu, k)
      }
      if (i === 19) for (const id of ids) await processed(id, 20)
    }
    assert.ok(RING_CAPACITY >= 20)
    for (const [k, id] of ids.entries()) {
      const s = await processed(id, 40)
      const cpus = sent.get(id)!
      assert.equal(s.latest!.cpu, cpus.at(-1), `${id}: the last heartbeat sent is the latest processed (arrival order)`)
      assert.equal(s.windows['1m']!.samples, 40)
      near(s.windows['1m']!.average.cpu, mean(cpus), `${id} cpu average`)
      near(s.windows['1m']!.average.memory, mean(cpus.map((c) => c / 2)), `${id} memory average`)
      near(s.windows['1m']!.average.running, k, `${id} running tasks average`)
      assert.equal(s.windows['1m']!.peak.cpu, Math.max(...cpus))
      assert.equal(s.dropped, 0)
      const history = hub.history(id)!
      assert.equal(history.reduce((n, p) => n + p.samples, 0), 40, `${id}: every sample is in the history`)
    }
    assert.equal(new CounterReader(counters).get('HEARTBEATS_PROCESSED'), 120)
    if (placement === 2) {
      assert.deepEqual(hub.queueDepths().map((q) => q.lanes).sort(), [1, 2], 'lanes are spread over the threads')
    }
  })

  test(`placement ${placement}: unregistering a worker stops its lane${placement === 'per-worker' ? ' and frees its thread' : ''}`, async (t) => {
    const { hub, registry, connect, processed, send } = startHub(t, placement)
    connect('w1')
    connect('w2')
    send('w1', 10)
    await processed('w1', 1)
    registry.unregister('w1')
    assert.equal(hub.hasLane('w1'), false)
    assert.equal(hub.summary('w1'), null)
    assert.equal(hub.history('w1'), null)
    if (placement === 'per-worker') await waitUntil(() => hub.threadCount === 1, 'the thread of w1 to stop')
    else assert.equal(hub.threadCount, 2, 'pinned threads stay')
    send('w1', 99) // a late heartbeat for a lane that is gone changes nothing
    send('w2', 20)
    assert.equal((await processed('w2', 1)).latest!.cpu, 20)
  })

  test(`placement ${placement}: a killed telemetry thread is restarted, its lanes rebuilt, and metrics keep flowing`, async (t) => {
    const { hub, connect, processed, send, lines, counters } = startHub(t, placement)
    connect('w1')
    connect('w2')
    for (let i = 0; i < 5; i++) send('w1', 50 + i)
    await processed('w1', 5)
    const victim = hub.threadOf('w1')!
    const exited = new Promise((resolve) => victim.once('exit', resolve))
    await victim.terminate()
    await exited
    await waitUntil(() => hub.threadOf('w1') !== null && hub.threadOf('w1') !== victim, 'a new thread for w1')
    assert.ok(lines.some((l) => l.level === 50 && l.thread !== undefined && /^Telemetry thread \d+ died/.test(l.msg)), 'the crash is logged as an error')
    assert.equal(new CounterReader(counters).get('TELEMETRY_THREAD_RESTARTS'), 1)
    for (let i = 0; i < 5; i++) send('w1', 90)
    const s = await processed('w1', 10)
    assert.equal(s.latest!.cpu, 90)
    assert.equal(s.windows['1m']!.samples, 10, 'the history from before the crash is still there')
    assert.equal(s.windows['1m']!.peak.cpu, 90)
    send('w2', 7)
    assert.equal((await processed('w2', 1)).latest!.cpu, 7, 'the other lanes flow too')
  })
}

test('close() stops every telemetry thread', async (t) => {
  const { hub, connect } = startHub(t, 'per-worker')
  connect('w1')
  connect('w2')
  const threads = [hub.threadOf('w1')!, hub.threadOf('w2')!]
  const exits = threads.map((w) => new Promise((resolve) => w.once('exit', resolve)))
  await hub.close()
  await Promise.all(exits)
  assert.equal(hub.threadCount, 0)
})

test('a full queue of lanes with work loses no lane: the heartbeats of every lane are processed', async (t) => {
  // One slot for 300 lanes (more than a slab chunk): nearly every push finds the queue full.
  const { hub, connect, send, counters } = startHub(t, 1, { queueSlots: 1 })
  const ids = Array.from({ length: LANES_PER_CHUNK + 44 }, (_, i) => `w${i}`)
  for (const id of ids) connect(id)
  for (const [k, id] of ids.entries()) send(id, k % 100)
  assert.ok(hub.queueDepths()[0]!.overflows > 0, 'the queue was full')
  await waitUntil(() => new CounterReader(counters).get('HEARTBEATS_PROCESSED') === ids.length, 'every lane processed')
  for (const [k, id] of ids.entries()) assert.equal(hub.summary(id)?.latest?.cpu, k % 100, id)
  assert.equal(new CounterReader(counters).get('HEARTBEATS_DROPPED'), 0)
  // And the lanes keep flowing after the sweep.
  send('w7', 55)
  await waitUntil(() => hub.summary('w7')?.latest?.cpu === 55, 'w7 again')
})

test('summaries are sent only for watched workers; the API reads a fresh one of any worker', async (t) => {
  const { hub, connect, send, processed } = startHub(t, 1, { watchAll: false })
  connect('w1')
  connect('w2')
  const seen: string[] = []
  hub.on('summary', (s) => seen.push(s.workerId))
  hub.want('w2', true)
  send('w1', 10)
  send('w2', 20)
  // Same thread, same drain: had w1 been summarized, its summary would come first.
  assert.equal((await processed('w2', 1)).latest!.cpu, 20)
  assert.deepEqual(seen, ['w2'])
  assert.equal(hub.summary('w1')!.latest!.cpu, 10, 'read from shared memory when asked')
  hub.want('w2', false)
  hub.want('*', true)
  send('w1', 30)
  assert.equal((await processed('w1', 2)).latest!.cpu, 30, 'watching everyone')
})
