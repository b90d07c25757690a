import assert from 'node:assert/strict'
import { createServer, type Socket } from 'node:net'
import { test } from 'node:test'
import type { DialResult } from '../../src/master/dial.js'
import { PoolDialer, type Dialer, type DialTarget, type PendingDial } from '../../src/master/dialer.js'
import { ReconnectMonitor } from '../../src/master/reconnect.js'
import { Registry } from '../../src/master/registry.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'
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

function setup(intervalMs = 1000) {
  const clock = new ManualClock()
  const registry = new Registry()
  const dialer = new HeldDialer()
  const { log, lines } = memoryLogger()
  const monitor = new ReconnectMonitor(registry, dialer, { intervalMs, dialTimeoutMs: 3000, masterId: 'm', masterAddress: () => '127.0.0.1:1', log, clock })
  return { clock, registry, dialer, monitor, lines }
}

const flush = () => new Promise((r) => setImmediate(r))

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
