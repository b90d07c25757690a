import assert from 'node:assert/strict'
import { createServer, type Socket } from 'node:net'
import { test } from 'node:test'
import type { DialResult } from '../../src/master/reconnect/protocol.js'
import { PoolDialer, type Dialer, type DialTarget, type PendingDial } from '../../src/master/reconnect/dialer.js'
import { ReconnectMonitor, type ReconnectOptions } from '../../src/master/reconnect/monitor.js'
import { Registry } from '../../src/master/registry.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'
import { checkHealth } from '../../src/master/health.js'
import { reservePort } from '../support/cluster.js'

/** A dialer whose dials stay open until the test settles them. */
class HeldDialer implements Dialer {
  readonly kind = 'inline'
  readonly calls: { target: DialTarget; settle: (outcome: DialResult['outcome']) => void; cancelled: boolean }[] = []

  dial(target: DialTarget): PendingDial {
    let settle!: (outcome: DialResult['outcome']) => void
    const promise = new Promise<DialResult>((resolve) => {
      settle = (outcome) => resolve({ workerId: target.workerId, outcome, message: outcome, elapsedMs: 1 })
    })
    const call = { target, settle, cancelled: false }
    this.calls.push(call)
    return { promise, cancel: () => { call.cancelled = true; settle('cancelled') } }
  }

  callsFor(id: string): number {
    return this.calls.filter((c) => c.target.workerId === id).length
  }

  async close(): Promise<void> {}
}

/** Without `budget`, one so large that only the pass and the schedule decide when dials start. */
function setup(intervalMs = 1000, extra: Partial<ReconnectOptions> = {}) {
  const clock = new ManualClock()
  const registry = new Registry()
  const dialer = new HeldDialer()
  const { log, lines } = memoryLogger()
  const monitor = new ReconnectMonitor(registry, dialer, { intervalMs, dialTimeoutMs: 3000, masterId: 'm', masterAddress: () => '127.0.0.1:1', log, clock, ratePerSec: 100_000, maxInflight: 50_000, random: () => 1, ...extra })
  return { clock, registry, dialer, monitor, lines }
}

const flush = () => new Promise((r) => setImmediate(r))

/** Turns of the event loop until `cond` holds (a few are enough; 1000 means it never will). */
async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await flush()
  assert.ok(cond(), 'the condition never held')
}

test('single flight: one dial in flight per worker, whoever asks', async () => {
  const { registry, dialer, monitor } = setup()
  registry.register('w1', 'h:1', 0)
  const a = monitor.runPass()
  const b = monitor.dialNow('w1')
  const c = monitor.dialNow('w1')
  assert.equal(dialer.callsFor('w1'), 1)
  assert.equal(monitor.isDialing('w1'), true)
  dialer.calls[0]!.settle('refused')
  await Promise.all([a, b, c])
  assert.equal(monitor.isDialing('w1'), false)
  const again = monitor.dialNow('w1')
  assert.equal(dialer.callsFor('w1'), 2, 'a new dial once the first one settled')
  dialer.calls[1]!.settle('refused')
  await again
})

test('a pass that outlasts the interval is not overlapped by the next one', async () => {
  const { clock, registry, dialer, monitor, lines } = setup(1000)
  registry.register('w1', 'h:1', 0)
  registry.register('w2', 'h:2', 0)
  monitor.start()
  clock.advance(1000)
  assert.equal(dialer.calls.length, 2)
  clock.advance(5000)
  await flush()
  assert.equal(dialer.calls.length, 2, 'no new pass while the first is running')
  for (const c of dialer.calls) c.settle('timeout')
  await flush()
  await flush()
  clock.advance(0)
  assert.equal(dialer.calls.length, 4, 'the next pass starts right after a pass that ran past its interval')
  assert.equal(lines.filter((l) => l.msg === 'Attempting to reconnect to 2 inactive worker(s)...').length, 2)
  assert.equal(lines.filter((l) => l.level >= 40).length, 0, 'failed dials are silent above debug')
  for (const c of dialer.calls.slice(2)) c.settle('refused')
  await monitor.close()
})

/** Stalls the main thread for `ms` between ticks of the delay monitor (its first tick only starts its clock). */
async function stall(ms: number): Promise<void> {
  const tick = () => new Promise((r) => setTimeout(r, 2))
  await tick()
  await tick()
  const until = performance.now() + ms
  while (performance.now() < until);
  await tick()
}

test('a heavy pass (more than 256 dials in flight) reports its duration, its dials and the event-loop delay the main thread had during it', async () => {
  const { clock, registry, dialer, monitor } = setup()
  await monitor.runPass()
  assert.equal(monitor.passCount, 0, 'a pass with nobody to dial is not a pass')
  assert.equal(monitor.lastPass, null)
  for (let i = 0; i < 300; i++) registry.register(`w${i}`, `h:${i}`, 0)
  const startedAt = clock.now()
  const pass = monitor.runPass()
  clock.advance(2500)
  while (dialer.calls.length < 300) await flush()
  await stall(40)
  for (const c of dialer.calls) c.settle('refused')
  await pass
  assert.equal(monitor.passCount, 1)
  const last = monitor.lastPass!
  assert.equal(last.startedAt, startedAt)
  assert.equal(last.durationMs, 2500)
  assert.equal(last.dials, 300)
  assert.ok(last.loopDelayMaxMs !== null && last.loopDelayMaxMs >= 30, `the 40 ms stall shows in the max (${last.loopDelayMaxMs} ms)`)
  assert.ok(last.loopDelayP99Ms !== null && last.loopDelayP99Ms > 0 && last.loopDelayP99Ms <= last.loopDelayMaxMs)
})

test('a light pass does not sample the event loop (sampling every millisecond costs more than the dials): its delay reads null, not 0', async () => {
  const { registry, dialer, monitor } = setup()
  registry.register('w1', 'h:1', 0)
  registry.register('w2', 'h:2', 0)
  const pass = monitor.runPass()
  await stall(40)
  for (const c of dialer.calls) c.settle('refused')
  await pass
  const last = monitor.lastPass!
  assert.equal(last.dials, 2)
  assert.equal(last.loopDelayMaxMs, null)
  assert.equal(last.loopDelayP99Ms, null)
})

test('a large pass hands its dials over a chunk per event-loop turn, skipping workers that came back meanwhile', async () => {
  const { registry, dialer, monitor } = setup()
  const ids = Array.from({ length: 200 }, (_, i) => `w${String(i).padStart(3, '0')}`)
  for (const id of ids) registry.register(id, `h:${id}`, 0)
  const pass = monitor.runPass()
  const first = dialer.calls.length
  assert.ok(first > 0 && first < ids.length, `the first turn dials part of the pass (${first})`)
  // Between two turns: one worker comes back on its own, another is unregistered.
  registry.connect('w190', { specs: { cpu: 1, memory: 1, storage: 1, gpu: 0 }, reportedAddress: null }, 1)
  registry.unregister('w199')
  await waitFor(() => dialer.calls.length === ids.length - 2)
  for (const c of dialer.calls) c.settle('refused')
  await pass
  assert.equal(dialer.callsFor('w190'), 0)
  assert.equal(dialer.callsFor('w199'), 0)
  assert.equal(monitor.lastPass!.dials, ids.length - 2)
})

test('unregister cancels the in-flight dial; close cancels the rest and waits', async () => {
  const { registry, dialer, monitor, lines } = setup()
  monitor.start()
  registry.register('w1', 'h:1', 0)
  registry.register('w2', 'h:2', 0)
  const pass = monitor.runPass()
  registry.unregister('w1')
  assert.equal(dialer.calls.find((c) => c.target.workerId === 'w1')?.cancelled, true)
  assert.equal(monitor.isDialing('w1'), false)
  await monitor.close()
  await pass
  assert.equal(dialer.calls.find((c) => c.target.workerId === 'w2')?.cancelled, true)
  assert.equal(monitor.inflightCount, 0)
  assert.ok(lines.some((l) => l.msg === 'Worker reconnection monitor stopped'))
  assert.equal(await monitor.dialNow('w2'), null, 'no dials after close')
})

test('--reconnect-interval 0 disables the monitor with a warning', async () => {
  const { clock, registry, dialer, monitor, lines } = setup(0)
  registry.register('w1', 'h:1', 0)
  monitor.start()
  clock.advance(60_000)
  assert.equal(monitor.status, 'disabled')
  assert.equal(dialer.calls.length, 0)
  assert.ok(lines.some((l) => l.level === 40 && l.msg.includes('disabled')))
  await monitor.close()
})

test('pool dials: refused, timed out, and cancelled across the thread boundary', async (t) => {
  const sockets = new Set<Socket>()
  const tarpit = createServer((s) => sockets.add(s))
  await new Promise<void>((r) => tarpit.listen(0, '127.0.0.1', r))
  t.after(() => {
    for (const s of sockets) s.destroy()
    tarpit.close()
  })
  const tarpitAddr = `127.0.0.1:${(tarpit.address() as { port: number }).port}`
  const closedAddr = `127.0.0.1:${await reservePort()}`
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const base = { masterId: 'm', masterAddress: '127.0.0.1:1' }

  const refused = await pool.dial({ ...base, workerId: 'r', address: closedAddr, timeoutMs: 5000 }).promise
  assert.equal(refused.outcome, 'refused')
  const timedOut = await pool.dial({ ...base, workerId: 't', address: tarpitAddr, timeoutMs: 300 }).promise
  assert.equal(timedOut.outcome, 'timeout')
  const pending = pool.dial({ ...base, workerId: 'c', address: tarpitAddr, timeoutMs: 60_000 })
  setTimeout(() => pending.cancel(), 200)
  const cancelled = await pending.promise
  assert.equal(cancelled.outcome, 'cancelled')
  assert.ok(cancelled.elapsedMs < 10_000, `cancelled promptly, not at the deadline (${cancelled.elapsedMs}ms)`)
})

test('a closed port is refused by the TCP probe, without a gRPC channel; bracketed IPv6 addresses too', async (t) => {
  const v6 = createServer()
  const hasV6 = await new Promise<boolean>((r) => v6.once('error', () => r(false)).listen(0, '::1', () => r(true)))
  const closedV6 = hasV6 ? (v6.address() as { port: number }).port : 0
  await new Promise<void>((r) => (hasV6 ? v6.close(() => r()) : r()))
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const base = { masterId: 'm', masterAddress: '127.0.0.1:1', timeoutMs: 5000 }
  // grpc-js words a refusal "No connection established"; the probe gives the socket's own error.
  const v4 = await pool.dial({ ...base, workerId: 'r4', address: `127.0.0.1:${await reservePort()}` }).promise
  assert.equal(v4.outcome, 'refused')
  assert.match(v4.message, /^ECONNREFUSED/)
  if (!hasV6) return t.diagnostic('no IPv6 loopback here: the [::1] case was not run')
  const six = await pool.dial({ ...base, workerId: 'r6', address: `[::1]:${closedV6}` }).promise
  assert.equal(six.outcome, 'refused')
  assert.match(six.message, /^ECONNREFUSED.*::1/)
})

test('a listener that is not an HTTP/2 server is refused by the probe, naming why', async (t) => {
  // Reads the preface and hangs up, as a non-HTTP/2 service on a reused port would.
  const other = createServer((s) => s.once('data', () => s.end()))
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r))
  t.after(() => other.close())
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const res = await pool.dial({ masterId: 'm', masterAddress: '127.0.0.1:1', timeoutMs: 5000, workerId: 'x', address: `127.0.0.1:${(other.address() as { port: number }).port}` }).promise
  assert.equal(res.outcome, 'refused')
  assert.match(res.message, /not a gRPC server/)
})

test('an address that is not host:port (from a store others write) is the dial\'s error, not a thrown dial', async (t) => {
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const res = await pool.dial({ masterId: 'm', masterAddress: '127.0.0.1:1', timeoutMs: 5000, workerId: 'odd', address: 'no-port-here' }).promise
  assert.equal(res.outcome, 'error')
  assert.match(res.message, /address of worker odd/)
})

const SPECS = { specs: { cpu: 1, memory: 1, storage: 1, gpu: 0 }, reportedAddress: null }

/** Registers `id`, connects it, and loses it (the heartbeat timeout) at the clock's time. */
function lose(registry: Registry, clock: ManualClock, id: string): void {
  if (!registry.get(id)) registry.register(id, `h:${id}`, clock.now())
  registry.connect(id, SPECS, clock.now())
  registry.markInactive(id, 'heartbeat-timeout', clock.now())
}

/** Moves the clock in small steps, letting each settled dial's handlers run. */
async function advance(clock: ManualClock, ms: number, step = 50): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    clock.advance(Math.min(step, ms - t))
    await flush()
  }
}

test('a worker that went inactive is re-dialled within the fast cap from about 250 ms on, not once per interval', async () => {
  const { clock, registry, dialer, monitor } = setup(30_000)
  monitor.start()
  lose(registry, clock, 'w1')
  assert.equal(dialer.callsFor('w1'), 0)
  await advance(clock, 250)
  assert.equal(dialer.callsFor('w1'), 1, 'the first re-dial after ~250 ms')
  // Refused at once, each time: then 500 ms, 1 s, 1.5 s, 1.5 s ... apart.
  const starts: number[] = [clock.now()]
  for (let i = 0; i < 12; i++) {
    dialer.calls.at(-1)!.settle('refused')
    await waitFor(() => true)
    const before = dialer.calls.length
    for (let t = 0; t < 2000 && dialer.calls.length === before; t += 50) await advance(clock, 50)
    assert.equal(dialer.calls.length, before + 1, 'a next re-dial within the cap')
    starts.push(clock.now())
  }
  const gaps = starts.slice(1).map((t, i) => t - starts[i]!)
  // The cap, plus the 250 ms tick dials start on.
  assert.ok(Math.max(...gaps) <= 1500 + 250 + 50, `gaps ${gaps.join(', ')} ms`)
  assert.ok(clock.now() - starts[0]! < 30_000, 'all well inside the interval')
  dialer.calls.at(-1)!.settle('refused')
  await monitor.close()
})

test('a worker lost longer ago than the fast window, or never connected, is dialled by the pass once per interval', async () => {
  const { clock, registry, dialer, monitor, lines } = setup(30_000, { fastWindowMs: 5_000 })
  monitor.start()
  registry.register('never', 'h:never', clock.now())
  lose(registry, clock, 'old')
  // Settle each dial at once: the fast schedule runs its 5 s window, then stops.
  const settleAll = async (): Promise<void> => {
    for (const c of dialer.calls) c.settle('refused')
    await flush()
  }
  for (let t = 0; t < 6_000; t += 50) {
    await settleAll()
    await advance(clock, 50)
  }
  const fastDials = dialer.callsFor('old')
  assert.ok(fastDials >= 4, `re-dialled in its window (${fastDials})`)
  assert.equal(dialer.callsFor('never'), 0, 'a worker that never connected waits for the pass')
  for (let t = 0; t < 23_000; t += 500) {
    await settleAll()
    await advance(clock, 500, 500)
  }
  assert.equal(dialer.callsFor('old'), fastDials, 'past its window: no dials until the pass')
  await advance(clock, 1_500, 500)
  assert.equal(dialer.callsFor('old'), fastDials + 1, 'the pass dials it')
  assert.equal(dialer.callsFor('never'), 1)
  assert.ok(lines.some((l) => l.msg === 'Attempting to reconnect to 2 inactive worker(s)...'))
  await settleAll()
  await monitor.close()
})

test('the budget: at most its rate of dials a second; recently lost workers go before the pass\'s backlog, which still gets its share', async () => {
  const { clock, registry, dialer, monitor, lines } = setup(60_000, { ratePerSec: 10 })
  monitor.start()
  for (let i = 0; i < 100; i++) registry.register(`n${i}`, `h:n${i}`, clock.now())
  const pass = monitor.runPass()
  assert.equal(dialer.calls.length, 10, 'a second\'s worth at once')
  assert.equal(monitor.stats.passBacklog, 90)
  lose(registry, clock, 'lost')
  await advance(clock, 1000)
  assert.equal(dialer.calls.length, 20, 'ten more in the next second')
  assert.equal(dialer.callsFor('lost'), 1, 'the recently lost worker went before the backlog')
  dialer.calls.find((c) => c.target.workerId === 'lost')!.settle('refused')
  await advance(clock, 3000)
  assert.equal(dialer.calls.length, 50)
  const lostDials = dialer.callsFor('lost')
  assert.ok(lostDials >= 2 && lostDials <= 4, `the lost worker is re-dialled on its schedule (${lostDials})`)
  assert.ok(50 - 10 - lostDials >= 30, 'the backlog still moved at three quarters of the rate or more')
  assert.equal(lines.filter((l) => l.level >= 40).length, 0, '100 dials at 10/s fit a 60 s interval: no warning')
  for (let t = 0; t < 10_000; t += 100) {
    for (const c of dialer.calls) c.settle('refused')
    await advance(clock, 100)
  }
  for (const c of dialer.calls) c.settle('refused')
  await pass
  assert.equal(monitor.lastPass!.dials, 100)
  await monitor.close()
})

test('a budget too small to dial every inactive worker once per interval warns and says so in its stats', async () => {
  const { clock, registry, dialer, monitor, lines } = setup(10_000, { ratePerSec: 1 })
  monitor.start()
  for (let i = 0; i < 20; i++) registry.register(`n${i}`, `h:n${i}`, clock.now())
  const pass = monitor.runPass()
  assert.equal(monitor.stats.budgetShort, true)
  const warning = lines.find((l) => l.level === 40 && l.msg.startsWith('Reconnection budget short'))
  assert.ok(warning, 'a warning names the budget')
  assert.match(warning.msg, /--reconnect-rate 1\/s/)
  for (let t = 0; t < 25_000; t += 500) {
    for (const c of dialer.calls) c.settle('refused')
    await advance(clock, 500, 500)
  }
  for (const c of dialer.calls) c.settle('refused')
  await pass
  assert.equal(dialer.calls.length >= 20, true, 'every worker was dialled, later than the interval')
  await monitor.close()
})

test('dials in flight stay under the in-flight cap; a settled dial lets the next one start', async () => {
  const { registry, dialer, monitor } = setup(60_000, { maxInflight: 2 })
  for (let i = 0; i < 5; i++) registry.register(`n${i}`, `h:n${i}`, 0)
  const pass = monitor.runPass()
  assert.equal(dialer.calls.length, 2)
  dialer.calls[0]!.settle('timeout')
  await waitFor(() => dialer.calls.length === 3)
  for (let i = 0; i < 10 && dialer.calls.length < 5; i++) {
    for (const c of dialer.calls) c.settle('timeout')
    await flush()
  }
  for (const c of dialer.calls) c.settle('timeout')
  await pass
  assert.equal(dialer.calls.length, 5)
  assert.equal(monitor.inflightCount, 0)
})

test('an operator\'s dial (dialNow) respects the in-flight cap: it waits for a place, ahead of the pass, and resolves with its own result', async () => {
  const { registry, dialer, monitor } = setup(60_000, { maxInflight: 1 })
  registry.register('p1', 'h:p1', 0)
  registry.register('p2', 'h:p2', 0)
  const pass = monitor.runPass()
  assert.equal(dialer.calls.length, 1, 'the pass holds the only place')
  registry.register('op', 'h:op', 0)
  const asked = monitor.dialNow('op')
  assert.equal(monitor.dialNow('op'), asked, 'asked twice while waiting: one dial')
  assert.equal(dialer.callsFor('op'), 0, 'no dial beyond the cap')
  assert.equal(monitor.inflightCount, 1)
  dialer.calls[0]!.settle('refused')
  await waitFor(() => dialer.calls.length === 2)
  assert.equal(dialer.calls[1]!.target.workerId, 'op', 'the freed place goes to the operator\'s dial before the pass\'s backlog')
  assert.equal(monitor.inflightCount, 1)
  dialer.calls[1]!.settle('refused')
  assert.equal((await asked)?.outcome, 'refused')
  await waitFor(() => dialer.calls.length === 3)
  dialer.calls[2]!.settle('refused')
  await pass
  // Waiting for a place when it joins, or at close: no dial, null.
  registry.register('late', 'h:late', 0)
  const held = monitor.runPass()
  await waitFor(() => dialer.calls.length === 4)
  registry.register('gone', 'h:gone', 0)
  const gone = monitor.dialNow('gone')
  await monitor.close()
  assert.equal(await gone, null)
  await held
  assert.equal(dialer.callsFor('gone'), 0)
})

test('a worker that turns active while its dial is in flight: the dial is cancelled and counted a success', async () => {
  const { clock, registry, dialer, monitor, lines } = setup()
  monitor.start()
  registry.register('w1', 'h:1', 0)
  const pass = monitor.runPass()
  assert.equal(dialer.callsFor('w1'), 1)
  registry.connect('w1', SPECS, clock.now())
  assert.equal(dialer.calls[0]!.cancelled, true, 'the dial is cancelled')
  await pass
  assert.equal(monitor.stats.activeDuringDial, 1)
  assert.ok(lines.some((l) => l.msg === 'Successfully reconnected to worker w1 (h:1)'))
  assert.equal(lines.some((l) => l.msg === 'reconnection dial failed'), false, 'not a failure')
  await monitor.close()
})

test('a worker found while its dial is in flight keeps that one dial until it settles, and an answer that beat the cancel counts as what it was', async () => {
  const { clock, registry, dialer, monitor } = setup(1000, { fastWindowMs: 60_000 })
  // A cancel that reaches the thread too late: the dial's answer (refused) is already on its way.
  const late = dialer.dial.bind(dialer)
  dialer.dial = (target) => {
    const pending = late(target)
    const call = dialer.calls.at(-1)!
    return { promise: pending.promise, cancel: () => { call.cancelled = true } }
  }
  registry.register('w1', 'h:1', 0)
  registry.connect('w1', SPECS, clock.now())
  monitor.start()
  registry.markInactive('w1', 'heartbeat-timeout', clock.now())
  clock.advance(300)
  await flush()
  assert.equal(dialer.callsFor('w1'), 1)
  registry.connect('w1', SPECS, clock.now())
  assert.equal(dialer.calls[0]!.cancelled, true, 'cancelled once found')
  assert.equal(monitor.isDialing('w1'), true, 'still in flight until its thread says it stopped')
  // It flaps back to inactive before the first dial settled: no second dial beside it.
  registry.markInactive('w1', 'heartbeat-timeout', clock.now())
  for (let i = 0; i < 10; i++) {
    clock.advance(300)
    await flush()
  }
  assert.equal(dialer.callsFor('w1'), 1, 'one dial in flight per worker')
  dialer.calls[0]!.settle('refused')
  await flush()
  assert.equal(monitor.stats.activeDuringDial, 0, 'the refusal came first: not a dial the cancel stopped')
  clock.advance(2000)
  await flush()
  assert.equal(dialer.callsFor('w1'), 2, 'the next one once it settled')
  dialer.calls[1]!.settle('refused')
  await monitor.close()
})

test('/healthz holds a recently lost worker to the schedule: undialled for two fast caps and a dial is unhealthy', () => {
  const thresholds = { maxInactiveMs: 300_000, reconnectWithinMs: 60_000 }
  const store = { kind: 'memory', status: 'ok' as const, backlog: 0, degraded_since: null, last_error: null }
  const registry = new Registry()
  registry.register('w1', 'h:1', 0)
  registry.connect('w1', SPECS, 0)
  registry.markInactive('w1', 'heartbeat-timeout', 1000)
  const input = { now: 10_000, startedAt: 0, monitor: 'running' as const, workers: registry.values(), thresholds, store }
  const lastDial = (): number => 2000
  assert.equal(checkHealth({ ...input, lastDialStartedAt: lastDial }).status, 'healthy', 'against the minute, 8 s is fine')
  const fast = checkHealth({ ...input, workers: registry.values(), lastDialStartedAt: lastDial, dialWithinMs: () => 6000 })
  assert.equal(fast.status, 'unhealthy')
  assert.equal(fast.reasons[0]!.check, 'reconnect-latency')
  assert.deepEqual(fast.reasons[0]!.worker_ids, ['w1'])
  assert.match(fast.reasons[0]!.message, /--reconnect-rate/)
  // A stricter --health-reconnect-within than the schedule's promise stays the bound.
  const strict = { ...thresholds, reconnectWithinMs: 3000 }
  const stricter = checkHealth({ ...input, workers: registry.values(), thresholds: strict, now: 7500, lastDialStartedAt: () => 2000, dialWithinMs: () => 6000 })
  assert.equal(stricter.status, 'unhealthy', 'dialled 5.5 s ago: past the operator\'s 3 s, though within the schedule\'s 6 s')
})

test('workers a load heard of a moment ago are dialled at once, outside the rate; one whose dial times out is dialled again within the fast cap, not at the next pass', async () => {
  const { clock, registry, dialer, monitor } = setup(30_000, { ratePerSec: 1 })
  monitor.start()
  const ids = Array.from({ length: 20 }, (_, i) => `l${i}`)
  for (const id of ids) registry.register(id, `h:${id}`, clock.now())
  const loadedAt = clock.now()
  monitor.dialLoaded(ids)
  assert.equal(dialer.calls.length, 20, 'all twenty at once, at a rate of one a second')
  // All but one find their worker (it registers back); the burst times the last one out.
  for (const id of ids.slice(1)) registry.connect(id, SPECS, clock.now())
  await flush()
  dialer.calls.find((c) => c.target.workerId === 'l0')!.settle('timeout')
  await waitFor(() => !monitor.isDialing('l0'))
  for (let t = 0; t < 2000 && dialer.callsFor('l0') === 1; t += 50) await advance(clock, 50)
  assert.equal(dialer.callsFor('l0'), 2, 'l0 re-dialled within the fast cap')
  assert.ok(clock.now() - loadedAt < 30_000, 'long before the next pass')
  assert.equal(dialer.calls.length, 21, 'no one else dialled again: the others are active')
  dialer.calls.at(-1)!.settle('refused')
  await monitor.close()
})
