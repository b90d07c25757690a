import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { Worker } from 'node:worker_threads'
import { CancelSlots, InlineDialer, PoolDialer, type Dialer, type DialTarget } from '../../src/master/reconnect/dialer.js'
import { refusedExecArgv, withAcceptedExecArgv, withoutRefused } from '../../src/master/reconnect/exec-argv.js'
import { CANCEL_GENERATION } from '../../src/master/reconnect/cancel-watch.js'
import { DIAL_THREAD_NICE } from '../../src/master/reconnect/protocol.js'
import type { DialResult } from '../../src/master/reconnect/protocol.js'
import { reservePort, waitUntil } from '../support/cluster.js'

// The dial pool as the reconnection monitor and the suspect probes use it: dials asked within one
// event-loop turn go to the threads as one batch per thread, their results come back as they
// settle, and a cancel reaches a dial wherever it is. Real threads, real sockets on 127.0.0.1.

const base = { masterId: 'm', masterAddress: '127.0.0.1:1' }

/** Accepts and never answers; counts the connections it holds. */
async function tarpit(t: TestContext): Promise<{ address: string; held: () => number; reached: (n: number) => Promise<void> }> {
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    server.emit('held')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    held: () => sockets.size,
    async reached(n) {
      while (sockets.size < n) await once(server, 'held')
    },
  }
}

function target(workerId: string, address: string, timeoutMs = 60_000): DialTarget {
  return { ...base, workerId, address, timeoutMs }
}

/** A promise's state without waiting for it. */
function watch<T>(p: Promise<T>): { settled: () => boolean } {
  let settled = false
  p.then(() => (settled = true), () => (settled = true))
  return { settled: () => settled }
}

test('the pool starts every thread and spreads a large turn\'s dials over all of them', async (t) => {
  const pool = new PoolDialer({ threads: 3 })
  t.after(() => pool.close())
  const closed = `127.0.0.1:${await reservePort()}`
  const results = await Promise.all(Array.from({ length: 192 }, (_, i) => pool.dial(target(`w${i}`, closed, 5000)).promise))
  assert.ok(results.every((r) => r.outcome === 'refused'), JSON.stringify(results.map((r) => r.outcome)))
  const threads = new Set(results.map((r) => r.thread))
  assert.equal(threads.size, 3, `dials ran on threads ${[...threads].join(', ')}`)
  assert.ok(![...threads].includes(0), 'no dial ran on the main thread')
  assert.equal(pool.threads, 3)
})

test('dials asked within one turn go to the threads as one batch per thread, not one message per dial', async (t) => {
  const pool = new PoolDialer({ threads: 2 })
  t.after(() => pool.close())
  const closed = `127.0.0.1:${await reservePort()}`
  const first = Array.from({ length: 200 }, (_, i) => pool.dial(target(`a${i}`, closed, 5000)).promise)
  await Promise.all(first)
  assert.deepEqual(pool.handed, { batches: 2, dials: 200 })
  // A dial asked alone in a later turn is a batch of its own.
  await pool.dial(target('b', closed, 5000)).promise
  assert.deepEqual(pool.handed, { batches: 3, dials: 201 })
})

test('a small turn (a budgeted tick\'s few dials) goes to one thread as one batch, not one batch per thread', async (t) => {
  const pool = new PoolDialer({ threads: 2 })
  t.after(() => pool.close())
  const closed = `127.0.0.1:${await reservePort()}`
  const results = await Promise.all(Array.from({ length: 15 }, (_, i) => pool.dial(target(`s${i}`, closed, 5000)).promise))
  assert.deepEqual(pool.handed, { batches: 1, dials: 15 })
  assert.equal(new Set(results.map((r) => r.thread)).size, 1, 'one thread dialled them all')
  // Split only in shares worth a batch each: 100 dials are two batches of 50 here, 63 one.
  await Promise.all(Array.from({ length: 63 }, (_, i) => pool.dial(target(`m${i}`, closed, 5000)).promise))
  assert.deepEqual(pool.handed, { batches: 2, dials: 78 })
  await Promise.all(Array.from({ length: 100 }, (_, i) => pool.dial(target(`l${i}`, closed, 5000)).promise))
  assert.deepEqual(pool.handed, { batches: 4, dials: 178 })
})

test('a worker\'s answer comes back when its dial settles, not when the slowest dial of its batch does', async (t) => {
  const pit = await tarpit(t)
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const slow = pool.dial(target('slow', pit.address))
  const fast = pool.dial(target('fast', `127.0.0.1:${await reservePort()}`, 60_000))
  const slowState = watch(slow.promise)
  assert.equal((await fast.promise).outcome, 'refused')
  assert.equal(slowState.settled(), false, 'the tarpit dial is still running')
  assert.deepEqual(pool.handed, { batches: 1, dials: 2 }, 'both were one batch')
  slow.cancel()
  assert.equal((await slow.promise).outcome, 'cancelled')
})

test('a dial cancelled while queued in its turn never reaches a thread; the rest of its batch goes on', async (t) => {
  const pit = await tarpit(t)
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const a = pool.dial(target('a', pit.address))
  const b = pool.dial(target('b', pit.address))
  const c = pool.dial(target('c', `127.0.0.1:${await reservePort()}`))
  b.cancel()
  const cancelled = await b.promise
  assert.equal(cancelled.outcome, 'cancelled')
  assert.equal(cancelled.thread, -1, 'settled on the main thread, never sent')
  assert.equal((await c.promise).outcome, 'refused')
  await pit.reached(1)
  assert.deepEqual(pool.handed, { batches: 1, dials: 2 }, 'the batch carried a and c only')
  const aState = watch(a.promise)
  assert.equal(aState.settled(), false)
  a.cancel()
  assert.equal((await a.promise).outcome, 'cancelled')
})

test('a cancel mid-call stops that dial only, not the others of its batch', async (t) => {
  const pit = await tarpit(t)
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const a = pool.dial(target('a', pit.address))
  const b = pool.dial(target('b', pit.address))
  const bState = watch(b.promise)
  // Both are on the thread, mid-probe.
  await pit.reached(2)
  a.cancel()
  const ra = await a.promise
  assert.equal(ra.outcome, 'cancelled')
  assert.ok(ra.elapsedMs < 30_000, `cancelled promptly (${ra.elapsedMs} ms), not at the deadline`)
  // A later dial on the same thread settles; b is still running all the while.
  assert.equal((await pool.dial(target('later', `127.0.0.1:${await reservePort()}`)).promise).outcome, 'refused')
  assert.equal(bState.settled(), false, 'b was not cancelled with a')
  b.cancel()
  assert.equal((await b.promise).outcome, 'cancelled')
})

const DIALERS: [string, () => Dialer][] = [['pool', () => new PoolDialer({ threads: 1 })], ['inline', () => new InlineDialer()]]
for (const [kind, make] of DIALERS) {
  test(`${kind}: a cancel after its dial settled does not cancel the next dial, which reuses its slot`, async (t) => {
    const pit = await tarpit(t)
    const dialer = make()
    t.after(() => dialer.close())
    const closed = `127.0.0.1:${await reservePort()}`
    const first = dialer.dial(target('first', closed))
    assert.equal((await first.promise).outcome, 'refused')
    const second = dialer.dial(target('second', pit.address))
    const secondState = watch(second.promise)
    await pit.reached(pit.held() + 1)
    first.cancel()
    // A dial after the late cancel settles; the second is still running.
    assert.equal((await dialer.dial(target('third', closed)).promise).outcome, 'refused')
    assert.equal(secondState.settled(), false, 'the late cancel of the first dial cancelled the second')
    second.cancel()
    assert.equal((await second.promise).outcome, 'cancelled')
  })
}

test('close cancels the dials on the threads and those still queued, and waits for their results', async (t) => {
  const pit = await tarpit(t)
  const pool = new PoolDialer({ threads: 2 })
  const running = pool.dial(target('running', pit.address))
  await pit.reached(1)
  const queued = pool.dial(target('queued', pit.address))
  await pool.close()
  const results: DialResult[] = await Promise.all([running.promise, queued.promise])
  assert.deepEqual(results.map((r) => r.outcome), ['cancelled', 'cancelled'])
  await assert.rejects(pool.dial(target('after', pit.address)).promise, /closed/)
})

test('every dial thread runs with a young generation capped at 8 MiB, not V8\'s 48 MiB a thread that a dial burst grows it to', async (t) => {
  const pool = new PoolDialer({ threads: 2 })
  t.after(() => pool.close())
  // One dial each, so that the threads are up and running.
  const closed = `127.0.0.1:${await reservePort()}`
  await Promise.all([0, 1].map((i) => pool.dial(target(`w${i}`, closed, 5000)).promise))
  const threads = (pool as unknown as { pool: { threads: { resourceLimits?: { maxYoungGenerationSizeMb?: number } }[] } }).pool.threads
  assert.equal(threads.length, 2)
  for (const thread of threads) assert.equal(thread.resourceLimits?.maxYoungGenerationSizeMb, 8)
})

/** The nice value of each thread of this process, by thread id (Linux: /proc/self/task/<tid>/stat, field 19). */
function threadNices(): Map<number, number> {
  const out = new Map<number, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]))
    } catch {
      // A thread that ended while we looked.
    }
  }
  return out
}

test('on Linux every dial thread runs below the main thread\'s priority; the main thread and the other threads keep theirs', { skip: process.platform !== 'linux' && 'thread priorities are read from /proc (Linux)' }, async (t) => {
  const before = threadNices()
  const main = before.get(process.pid)!
  if (main >= DIAL_THREAD_NICE) return t.skip(`this test runs at nice ${main} already`)
  const pool = new PoolDialer({ threads: 2 })
  t.after(() => pool.close())
  // Each thread lowers itself once its module has loaded, which on a busy machine can be after the
  // other thread has taken every dial: wait for both (generously), then check who changed.
  const lowered = (): number => [...threadNices()].filter(([, nice]) => nice === DIAL_THREAD_NICE).length
  await waitUntil(() => lowered() >= 2, `both dial threads at nice ${DIAL_THREAD_NICE}`)
  const after = threadNices()
  assert.equal(after.get(process.pid), main, 'the main thread keeps its priority')
  const atNice = [...after].filter(([, nice]) => nice === DIAL_THREAD_NICE)
  assert.equal(atNice.length, 2, `threads at nice ${DIAL_THREAD_NICE}: ${JSON.stringify([...after])}`)
  for (const [tid] of atNice) assert.ok(!before.has(tid), `thread ${tid} was lowered but is not one of the pool's`)
})

test('cancels within one turn set their flags at once and wake the dialling threads once (one generation bump), not once per cancel', async () => {
  const slots = new CancelSlots()
  const taken = Array.from({ length: 200 }, () => slots.take())
  const gen = Atomics.load(slots.flags, CANCEL_GENERATION)
  for (const slot of taken) slots.cancel(slot)
  assert.ok(taken.every((slot) => Atomics.load(slots.flags, slot) === 1), 'every flag is set by the cancel itself')
  await new Promise<void>((r) => queueMicrotask(r))
  assert.equal(Atomics.load(slots.flags, CANCEL_GENERATION), gen + 1)
  slots.cancel(taken[0]!)
  await new Promise<void>((r) => queueMicrotask(r))
  assert.equal(Atomics.load(slots.flags, CANCEL_GENERATION), gen + 2, 'a cancel in a later turn wakes them again')
})

test('a dial thread keeps one cancel waiter however many batches it takes (the flags come once per thread, not with each batch)', async (t) => {
  const pool = new PoolDialer({ threads: 1 })
  t.after(() => pool.close())
  const pit = await tarpit(t)
  // Five batches (one a turn), all held in their probes: each dial is watched for a cancel.
  const dials = []
  for (let i = 0; i < 5; i++) {
    dials.push(pool.dial(target(`t${i}`, pit.address, 30_000)))
    await new Promise((r) => setImmediate(r))
  }
  await pit.reached(5)
  assert.equal(pool.handed.batches, 5)
  // Waking the generation word's waiters (harmless: no flag is set, they scan and wait again) says how many there are.
  const flags = (pool as unknown as { slots: CancelSlots }).slots.flags
  assert.equal(Atomics.notify(flags, CANCEL_GENERATION), 1, 'one waiter for the thread, not one per batch')
  for (const d of dials) d.cancel()
  assert.ok((await Promise.all(dials.map((d) => d.promise))).every((r) => r.outcome === 'cancelled'))
})

test('node flags a dial thread refuses are left out with their values, and the rest kept in order', async () => {
  // Real Workers: Node refuses process-wide flags (--title) first and V8's (--max-old-space-size)
  // only once those are gone, so it takes two tries; what is left is what a Worker accepts.
  const tried: string[][] = []
  const worker = withAcceptedExecArgv(['--no-experimental-require-module', '--max-old-space-size=512', '--title', 'cloudai', '--enable-source-maps'], (execArgv) => {
    tried.push(execArgv)
    return new Worker('', { eval: true, execArgv })
  })
  await worker.terminate()
  assert.deepEqual(tried.at(-1), ['--no-experimental-require-module', '--enable-source-maps'])
  assert.ok(tried.length >= 2, `tries: ${JSON.stringify(tried)}`)
  // A refused flag without a value of its own takes nothing that is a flag.
  assert.deepEqual(withoutRefused(['--jitless', '--enable-source-maps'], new Set(['--jitless'])), ['--enable-source-maps'])
  assert.equal(refusedExecArgv(new Error('something else')).size, 0)
  // An error that names no flag is thrown as it is.
  assert.throws(() => withAcceptedExecArgv(['--a'], () => { throw new Error('not about flags') }), /not about flags/)
})
