import assert from 'node:assert/strict'
import { after, before, test, type TestContext } from 'node:test'
import { HttpApi, type HttpApiOptions } from '../../src/master/api/http.js'
import { chunkFrame, postHead, RawHttp } from '../support/raw-http.js'
import { startTestMaster, type TestMaster } from '../support/test-master.js'

// A body refused before it has all arrived (413 over the limit, 415 for its type) is answered at
// once, then read and dropped to its end before the server closes: closing with unread bytes would
// reset the connection, and a client still sending could lose the answer to the reset. Raw sockets,
// because fetch hides both when the answer arrives and how the connection ends.
//
// The body limit and the drain's cap and deadline are the HTTP API's own (no flag of the master
// sets them): most tests give the real master's control service (test/support/test-master.ts) an
// HTTP API of their own with small limits, so that a limit is crossed in KiB and a deadline in ms;
// the first checks the master's own API with its defaults.

const MAX_BODY = 1024
// These tests end by an event or fail by the test's own timeout; nothing here sleeps.
const TIMEOUT = { timeout: 20_000 }

let m: TestMaster
before(async () => {
  m = await startTestMaster()
})
after(() => m.close())

async function startApi(t: TestContext, bodyDrain?: HttpApiOptions['bodyDrain']) {
  const api = new HttpApi({ control: m.control, host: '127.0.0.1', port: 0, log: m.log, maxBodyBytes: MAX_BODY, ...(bodyDrain ? { bodyDrain } : {}) })
  const port = await api.start()
  t.after(() => api.close())
  return { api, port, control: m.control, lines: m.lines }
}

function errorCode(body: string): string {
  return (JSON.parse(body) as { error: { code: string } }).error.code
}

/** Active timers, the test runner's own included (compare counts taken within one test). */
function timers(): number {
  return process.getActiveResourcesInfo().filter((type) => type === 'Timeout').length
}

/** Polls each turn of the event loop until `done` holds (for what has no event of its own). */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setImmediate(resolve))
}

test('the master\'s own API answers a body over its 1 MiB limit with 413 while it is sent, reads the rest, and closes cleanly', TIMEOUT, async (t) => {
  const client = await RawHttp.open(t, m.port)
  const size = 2 * 1024 * 1024
  assert.ok(await client.send(postHead('/api/workers', size)))
  const res = await client.response()
  assert.equal(res.status, 413)
  assert.equal(errorCode(res.body), 'CLOUDAI_BODY_TOO_LARGE')
  assert.ok(await client.sendFiller(size, 64 * 1024), 'the master took the body after answering')
  assert.deepEqual(await client.closed, { ended: true, error: null }, 'closed once the body was in, without a reset')
  assert.deepEqual(m.control.listWorkers(), [])
})

test('a client that sends the whole of a refused body gets the answer with its code, and then the server closes cleanly', TIMEOUT, async (t) => {
  // A deadline no slow machine reaches: these connections must close because their body ended.
  const { port, control } = await startApi(t, { maxMs: 60_000 })
  const filler = (n: number) => Buffer.alloc(n, 0x20)
  const cases = [
    { name: 'declared over the limit', head: postHead('/api/workers', 64 * MAX_BODY), body: (n: number) => filler(n), status: 413, code: 'CLOUDAI_BODY_TOO_LARGE' },
    { name: 'wrong content-type', head: postHead('/api/workers', 64 * MAX_BODY, 'text/plain'), body: (n: number) => filler(n), status: 415, code: 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE' },
    // No length declared: refused only once the chunks cross the limit.
    { name: 'chunked over the limit', head: postHead('/api/workers', null), body: (n: number) => chunkFrame(filler(n)), end: '0\r\n\r\n', status: 413, code: 'CLOUDAI_BODY_TOO_LARGE' },
  ]
  for (const c of cases) {
    const client = await RawHttp.open(t, port)
    // Headers and the first half of the body back to back, as fetch and curl send them.
    assert.ok(await client.send(c.head), c.name)
    for (let i = 0; i < 32; i++) assert.ok(await client.send(c.body(MAX_BODY)), c.name)
    // The answer arrives while the client is still sending: a server that closed with it would
    // reset the connection at the next write, and this client would never finish.
    const res = await client.response()
    assert.equal(res.status, c.status, c.name)
    assert.equal(errorCode(res.body), c.code, c.name)
    assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8', c.name)
    assert.equal(res.headers.get('connection'), 'close', c.name)
    for (let i = 0; i < 32; i++) assert.ok(await client.send(c.body(MAX_BODY)), `${c.name}: the rest of the body was taken`)
    if (c.end) assert.ok(await client.send(c.end), c.name)
    assert.deepEqual(await client.closed, { ended: true, error: null }, `${c.name}: the server closed once the body was in, without a reset`)
  }

  // Small enough to arrive whole with its headers, in one read: answered and closed in one go,
  // and the answer is still not lost to the close.
  const whole = await RawHttp.open(t, port)
  assert.ok(await whole.send(Buffer.concat([Buffer.from(postHead('/api/workers', 4 * MAX_BODY)), Buffer.alloc(4 * MAX_BODY, 0x20)])))
  const res = await whole.response()
  assert.equal(res.status, 413)
  assert.equal(errorCode(res.body), 'CLOUDAI_BODY_TOO_LARGE')
  assert.deepEqual(await whole.closed, { ended: true, error: null }, 'in one read: the server closed, without a reset')
  assert.deepEqual(control.listWorkers(), [], 'nothing registered')
})

test('the 413 is sent as soon as the headers declare too much, before any of the body, and the connection waits for the body', TIMEOUT, async (t) => {
  const { port } = await startApi(t, { maxMs: 60_000 })
  const client = await RawHttp.open(t, port)
  await client.send(postHead('/api/tasks', 64 * MAX_BODY))
  const res = await client.response()
  assert.equal(client.sent, postHead('/api/tasks', 64 * MAX_BODY).length, 'nothing but the headers was sent')
  assert.equal(res.status, 413)
  assert.equal(errorCode(res.body), 'CLOUDAI_BODY_TOO_LARGE')
  assert.ok(client.open, 'the server did not close with the answer')
  // The client learns of the answer only now; it may still send what it declared, and it is read.
  assert.ok(await client.sendFiller(64 * MAX_BODY, 4 * MAX_BODY), 'the server took the body after answering')
  assert.deepEqual(await client.closed, { ended: true, error: null }, 'the server closed after the body, without a reset')
})

test('a body that goes on past the drain cap is cut off at the cap', TIMEOUT, async (t) => {
  const drainBytes = 256 * 1024
  const { port, lines } = await startApi(t, { maxBytes: drainBytes, maxMs: 60_000 })
  // Declares nearly 1 GB and would send it all (999,999,999 is the most uWS parses: it drops a
  // connection declaring more, unanswered); then the same with a chunked body that never ends.
  for (const chunked of [false, true]) {
    const client = await RawHttp.open(t, port)
    await client.send(postHead('/api/workers', chunked ? null : 999_999_999))
    const filler = Buffer.alloc(16 * 1024, 0x20)
    while (await client.send(chunked ? chunkFrame(filler) : filler)) {
      if (client.sent > 64 * drainBytes) assert.fail(`${chunked ? 'chunked' : 'declared'}: still open after ${client.sent} bytes`)
    }
    await client.closed
    const closedBy = lines.findLast((l) => l.reason !== undefined)
    assert.equal(closedBy?.reason, 'drain cap', chunked ? 'chunked' : 'declared')
    assert.ok((closedBy?.drained as number) > drainBytes, 'the rest was read up to the cap')
    assert.ok((closedBy?.drained as number) <= drainBytes + 512 * 1024, 'and not much past it (uSockets reads up to 512 KiB at a time)')
    lines.length = 0
  }
})

test('a client that stops sending a refused body is disconnected at the drain deadline', TIMEOUT, async (t) => {
  const { port, lines } = await startApi(t, { maxMs: 200 })
  const client = await RawHttp.open(t, port)
  // Declares 8 KiB, sends 1 KiB, and then nothing, as curl does once it sees an error answer.
  await client.send(postHead('/api/workers', 8 * MAX_BODY))
  await client.sendFiller(MAX_BODY)
  const res = await client.response()
  assert.equal(res.status, 413)
  assert.deepEqual(await client.closed, { ended: true, error: null }, 'closed by the server, without a reset (nothing was left unread)')
  assert.equal(lines.findLast((l) => l.reason !== undefined)?.reason, 'drain deadline')
})

test('the drain deadline timer is cleared whichever way the drain ends', TIMEOUT, async (t) => {
  const { port, api } = await startApi(t, { maxMs: 60_000 })
  const draining = async (): Promise<RawHttp> => {
    const client = await RawHttp.open(t, port)
    await client.send(postHead('/api/workers', 4 * MAX_BODY))
    assert.equal((await client.response()).status, 413)
    return client
  }
  const idle = timers()

  // The body ends.
  let client = await draining()
  assert.equal(timers(), idle + 1, 'a drain has its deadline')
  await client.sendFiller(4 * MAX_BODY)
  await client.closed
  assert.equal(timers(), idle, 'cleared when the body ended')

  // The client goes away.
  client = await draining()
  assert.equal(timers(), idle + 1)
  client.destroy()
  await until(() => timers() === idle)

  // The API closes with a drain under way.
  client = await draining()
  assert.equal(timers(), idle + 1)
  await api.close()
  await client.closed
  await until(() => timers() === idle)
})
