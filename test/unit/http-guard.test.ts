import assert from 'node:assert/strict'
import { after, before, test, type TestContext } from 'node:test'
import WebSocket from 'ws'
import { defaultAllowedHosts } from '../../src/master/api/guard.js'
import { CounterReader, type CounterName } from '../../src/master/counters.js'
import { RawHttp } from '../support/raw-http.js'
import { startTestMaster, type TestMaster } from '../support/test-master.js'

// The HTTP API against what a web page, a proxy or a broken client may send it: requests from
// other sites' pages (CSRF, DNS rebinding, cross-site WebSockets), ambiguous framing (request
// smuggling), oversized and malformed heads. Raw sockets where fetch would not send the request
// as written (Host, two Content-Lengths) or would hide how the connection ended. Against the real
// master (test/support/test-master.ts), one for the file, with --api-allow-origin and
// --api-allow-host set for the tests of what must keep working.

const TIMEOUT = { timeout: 20_000 }
const TASK = JSON.stringify({ command: 'echo hi' })
const SMUGGLED = JSON.stringify({ command: 'echo smuggled' })

let m: TestMaster
before(async () => {
  m = await startTestMaster({ config: { apiAllowOrigins: ['https://ops.example.com'], apiAllowHosts: ['cloudai.example.com', '10.1.2.3'] } })
})
after(() => m.close())

/** The file's master, and what changed in it since this call: tasks queued, refusals counted. */
function watch() {
  const reader = new CounterReader(m.master.counters)
  const counts = new Map<CounterName, number>()
  const counted = (name: CounterName): number => reader.get(name) - (counts.get(name) ?? 0)
  for (const name of ['HTTP_REFUSED_MEDIA_TYPE', 'HTTP_REFUSED_ORIGIN', 'HTTP_REFUSED_HOST', 'HTTP_REFUSED_FRAMING', 'HTTP_REFUSED_URI_TOO_LONG', 'HTTP_REFUSED_HEADERS_TOO_LARGE'] as const) counts.set(name, reader.get(name))
  const tasksBefore = m.control.listTasks({}).total
  return { port: m.port, base: m.base, host: m.host, control: m.control, counted, queued: (): number => m.control.listTasks({}).total - tasksBefore }
}

/** Open WebSockets, as the master's /metrics counts them. */
async function wsConnections(): Promise<number> {
  return Number(/^cloudai_ws_connections (\d+)$/m.exec((await m.control.metrics()).body)?.[1])
}

/** A raw request on its own connection. */
async function send(t: TestContext, port: number, request: string | Buffer): Promise<RawHttp> {
  const client = await RawHttp.open(t, port)
  assert.ok(await client.send(request), 'the request was sent')
  return client
}

function post(host: string, body: string, extra = ''): string {
  return `POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`
}

function errorCode(body: string): string {
  return (JSON.parse(body) as { error: { code: string } }).error.code
}

function upgrade(host: string, origin: string | null): string {
  return `GET /ws HTTP/1.1\r\nhost: ${host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n${origin === null ? '' : `origin: ${origin}\r\n`}\r\n`
}

// --- another site's page ------------------------------------------------------------------------

test('POST /api/tasks without a content-type is 415 and queues nothing: a page of any site may send it without a preflight', TIMEOUT, async (t) => {
  const { base, queued, counted } = watch()
  // A body of bytes, as a page's fetch(url, {method: 'POST', body: blob}) sends it: no content-type.
  const res = await fetch(`${base}/api/tasks`, { method: 'POST', body: new TextEncoder().encode(TASK) })
  assert.equal(res.status, 415)
  assert.equal(errorCode(await res.text()), 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE')
  assert.equal(queued(), 0)
  assert.equal(counted('HTTP_REFUSED_MEDIA_TYPE'), 1)
})

test('POST /api/tasks as text/plain (a form, or a page\'s simple request) is 415 and queues nothing', TIMEOUT, async (t) => {
  const { base, queued } = watch()
  const res = await fetch(`${base}/api/tasks`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: TASK })
  assert.equal(res.status, 415)
  assert.equal(errorCode(await res.text()), 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE')
  assert.equal(queued(), 0)
})

test('a request with the Origin of another site is 403 and changes nothing; Origin: null as well', TIMEOUT, async (t) => {
  const { base, queued, counted } = watch()
  for (const origin of ['http://evil.example', 'null', 'http://127.0.0.1.evil.example', 'not an origin']) {
    const res = await fetch(`${base}/api/tasks`, { method: 'POST', headers: { 'content-type': 'application/json', origin }, body: TASK })
    assert.equal(res.status, 403, origin)
    assert.equal(errorCode(await res.text()), 'CLOUDAI_BAD_ORIGIN', origin)
  }
  // Reads too: without this the page could not read the answer anyway (no CORS headers), but a
  // refusal should not depend on the browser.
  assert.equal((await fetch(`${base}/api/tasks`, { headers: { origin: 'http://evil.example' } })).status, 403)
  assert.equal(queued(), 0)
  assert.equal(counted('HTTP_REFUSED_ORIGIN'), 5)
})

test('a WebSocket upgrade with the Origin of another site is 403: no upgrade, no snapshot', TIMEOUT, async (t) => {
  const { port, host, counted } = watch()
  const open = await wsConnections()
  for (const origin of ['http://evil.example', 'null']) {
    const client = await send(t, port, upgrade(host, origin))
    const res = await client.response()
    assert.equal(res.status, 403, origin)
    assert.equal(errorCode(res.body), 'CLOUDAI_BAD_ORIGIN', origin)
    assert.ok(!res.body.includes('snapshot'))
  }
  assert.equal(await wsConnections(), open)
  assert.equal(counted('HTTP_REFUSED_ORIGIN'), 2)
})

test('a Host the master does not answer to (DNS rebinding) is 421: nothing read, nothing queued', TIMEOUT, async (t) => {
  const { port, control, queued, counted } = watch()
  const shown = (await control.submitTask({ command: 'echo secret' })).task_id
  const mine = queued()
  for (const request of [
    `GET /api/tasks HTTP/1.1\r\nhost: evil.example:${port}\r\n\r\n`,
    post(`evil.example:${port}`, TASK),
    upgrade(`evil.example:${port}`, `http://evil.example:${port}`),
    `GET /api/tasks HTTP/1.1\r\nhost: \r\n\r\n`,
    `GET /api/tasks HTTP/1.1\r\nhost: 127.0.0.1:99999\r\n\r\n`,
  ]) {
    const res = await (await send(t, port, request)).response()
    assert.equal(res.status, 421, request)
    assert.equal(errorCode(res.body), 'CLOUDAI_BAD_HOST', request)
    assert.ok(!res.body.includes(shown), 'no task was shown')
  }
  assert.equal(queued(), mine, 'nothing queued')
  assert.equal(counted('HTTP_REFUSED_HOST'), 5)
})

// --- framing ------------------------------------------------------------------------------------

test('two Content-Length headers are 400 with the connection closed; a request hidden in the body is never served', TIMEOUT, async (t) => {
  const { port, host, queued, counted } = watch()
  // Equal or not, and with more bytes than the first one says: never one task more or less.
  for (const [first, second, rest] of [[TASK.length, TASK.length, ''], [TASK.length, TASK.length + 5, 'xxxxx']] as const) {
    const client = await send(t, port, `POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${first}\r\ncontent-length: ${second}\r\n\r\n${TASK}${rest}`)
    const { text, close, statuses } = await client.untilClosed()
    assert.deepEqual(statuses, [400], `${first}, ${second}`)
    assert.equal(errorCode(text.slice(text.indexOf('\r\n\r\n') + 4)), 'CLOUDAI_BAD_FRAMING')
    assert.match(text, /\r\nconnection: close\r\n/i)
    assert.deepEqual(close, { ended: true, error: null }, 'closed by the server, without a reset')
  }
  // A proxy that reads the second length forwards one request; a server that read the first would
  // run the first task and then the request hidden in the rest of the body (request smuggling).
  // uWS closes the connection when a request arrives before the last one was answered (the 400
  // lingers until the body is in): the hidden request is never served, and the 400 may be lost.
  const smuggled = post(host, SMUGGLED)
  const client = await send(t, port, `POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${TASK.length}\r\ncontent-length: ${TASK.length + smuggled.length}\r\n\r\n${TASK}${smuggled}`)
  const { close, statuses } = await client.untilClosed()
  assert.ok(statuses.every((s) => s === 400), `only the 400, if anything: ${statuses}`)
  assert.deepEqual(close, { ended: true, error: null }, 'closed by the server, without a reset')
  assert.equal(queued(), 0, 'neither the task nor the hidden one')
  assert.equal(counted('HTTP_REFUSED_FRAMING'), 3)
})

test('Content-Length with Transfer-Encoding is 400 and the connection is closed; nothing is queued', TIMEOUT, async (t) => {
  const { port, host, queued } = watch()
  const chunked = `${TASK.length.toString(16)}\r\n${TASK}\r\n0\r\n\r\n`
  for (const framing of [`content-length: ${chunked.length}\r\ntransfer-encoding: chunked`, `transfer-encoding: chunked\r\ncontent-length: ${TASK.length}`]) {
    const client = await send(t, port, `POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\n${framing}\r\n\r\n${chunked}`)
    // uWS answers this one itself, before the API sees it (an HTML page, no JSON code).
    const { close, statuses } = await client.untilClosed()
    assert.deepEqual(statuses, [400], framing)
    assert.deepEqual(close, { ended: true, error: null }, 'closed by the server, without a reset')
  }
  assert.equal(queued(), 0)
})

test('every malformed request gets an HTTP answer and a clean close, not a reset or silence, and reaches no route', TIMEOUT, async (t) => {
  const { port, host, queued } = watch()
  const cases: [name: string, request: string, status: number][] = [
    ['no Host', 'GET /api/status HTTP/1.1\r\n\r\n', 400],
    ['two Hosts', `GET /api/status HTTP/1.1\r\nhost: ${host}\r\nhost: evil.example\r\n\r\n`, 400],
    ['a space before the colon', `GET /api/status HTTP/1.1\r\nhost : ${host}\r\n\r\n`, 400],
    ['HTTP/1.0', 'GET /api/status HTTP/1.0\r\n\r\n', 505],
    ['a Transfer-Encoding other than chunked', `POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ntransfer-encoding: gzip\r\n\r\n${TASK}`, 400],
    ['a Content-Length that is not a number', `POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: 5, 5\r\n\r\nhello`, 400],
    // Past what uWS takes (256 KiB): its own 431, not the API's.
    ['a 300 KB head', `GET /api/tasks?${'q'.repeat(300_000)} HTTP/1.1\r\nhost: ${host}\r\n\r\n`, 431],
  ]
  for (const [name, request, status] of cases) {
    const client = await send(t, port, request)
    const { close, statuses } = await client.untilClosed()
    assert.deepEqual(statuses, [status], name)
    assert.deepEqual(close, { ended: true, error: null }, `${name}: closed by the server, without a reset`)
  }
  assert.equal(queued(), 0)
})

// --- size ---------------------------------------------------------------------------------------

test('a request line over 8 KiB is 414 (a 100 KB path, a 200 KB query), in one write or in many', TIMEOUT, async (t) => {
  const { port, host, counted } = watch()
  const requests = [`GET /api/tasks/${'a'.repeat(100_000)} HTTP/1.1\r\nhost: ${host}\r\n\r\n`, `GET /api/tasks?${'q'.repeat(200_000)} HTTP/1.1\r\nhost: ${host}\r\n\r\n`]
  for (const request of requests) {
    for (const pieces of [1, 50]) {
      const client = await RawHttp.open(t, port)
      // In pieces, each after the last was taken: the head reaches uWS in more than one read.
      const size = Math.ceil(request.length / pieces)
      for (let i = 0; i < request.length; i += size) assert.ok(await client.send(request.slice(i, i + size)))
      const res = await client.response()
      assert.equal(res.status, 414, `${request.slice(0, 20)} in ${pieces}`)
      assert.equal(errorCode(res.body), 'CLOUDAI_URI_TOO_LONG')
      assert.ok(client.open, 'the connection stays usable: the request was framed')
    }
  }
  assert.equal(counted('HTTP_REFUSED_URI_TOO_LONG'), 4)
})

test('headers over 16 KiB are 431 (one 20 KB header, or many small ones)', TIMEOUT, async (t) => {
  const { port, host, counted } = watch()
  const many = Array.from({ length: 90 }, (_, i) => `x-h${i}: ${'v'.repeat(200)}\r\n`).join('')
  for (const headers of [`x-big: ${'b'.repeat(20 * 1024)}\r\n`, many]) {
    const res = await (await send(t, port, `GET /api/status HTTP/1.1\r\nhost: ${host}\r\n${headers}\r\n`)).response()
    assert.equal(res.status, 431)
    assert.equal(errorCode(res.body), 'CLOUDAI_HEADERS_TOO_LARGE')
  }
  assert.equal(counted('HTTP_REFUSED_HEADERS_TOO_LARGE'), 2)
  // Just under both limits: served.
  const ok = await (await send(t, port, `GET /api/tasks?${'q=1&'.repeat(1500)} HTTP/1.1\r\nhost: ${host}\r\nx-big: ${'b'.repeat(15 * 1024)}\r\n\r\n`)).response()
  assert.notEqual(ok.status, 414)
  assert.notEqual(ok.status, 431)
})

// --- what must keep working ---------------------------------------------------------------------

test('the master\'s own pages, clients without an Origin and --api-allow-origin are served', TIMEOUT, async (t) => {
  const { base, port, queued } = watch()
  const submit = (headers: Record<string, string>) => fetch(`${base}/api/tasks`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: TASK })
  // The CLI and curl send no Origin.
  assert.equal((await submit({})).status, 201)
  // The dashboard, loaded from the master by any of its names, on its port.
  for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`, `http://[::1]:${port}`, 'https://ops.example.com']) {
    assert.equal((await submit({ origin })).status, 201, origin)
  }
  // Another port of the same host is another site (any other local web app).
  assert.equal((await submit({ origin: `http://127.0.0.1:${port + 1}` })).status, 403)
  assert.equal(queued(), 5)

  // Reached through a forwarded port (docker -p 9000:8080, ssh -L): Host and Origin carry the
  // client's port, not the bound one.
  const res = await (await send(t, port, post('localhost:9000', TASK, 'origin: http://localhost:9000\r\n'))).response()
  assert.equal(res.status, 201)
  const other = await (await send(t, port, post('localhost:9000', TASK, 'origin: http://localhost:3000\r\n'))).response()
  assert.equal(other.status, 403)
  assert.equal(queued(), 6)

  // A WebSocket from the master's own page opens and gets its snapshot; one with no Origin too.
  for (const origin of [`http://127.0.0.1:${port}`, undefined]) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, origin === undefined ? {} : { origin })
    t.after(() => ws.terminate())
    const first = await new Promise<string>((resolve, reject) => {
      ws.once('message', (data) => resolve(String(data)))
      ws.once('unexpected-response', (_req, r) => reject(new Error(`HTTP ${r.statusCode}`)))
      ws.once('error', reject)
    })
    assert.equal(JSON.parse(first).type, 'snapshot', String(origin))
    ws.terminate()
  }
})

test('DELETE needs no content-type: it has no body, and a page cannot send one without a preflight', TIMEOUT, async (t) => {
  const { base, control } = watch()
  await control.registerWorker({ worker_id: 'w-delete', worker_ip: '127.0.0.2:601' })
  const res = await fetch(`${base}/api/workers/w-delete`, { method: 'DELETE' })
  assert.equal(res.status, 200)
  assert.ok(!control.listWorkers().some((w) => w.worker_id === 'w-delete'))
})

test('the Host names answered by default: loopback and the bound address; bound to a wildcard also the machine\'s name and addresses', () => {
  const machine = { hostname: 'Build-Box', addresses: ['127.0.0.1', '10.1.2.3', '::1', 'fe80::1'] }
  assert.deepEqual([...defaultAllowedHosts('127.0.0.1', machine)].sort(), ['127.0.0.1', '::1', 'localhost'])
  assert.deepEqual([...defaultAllowedHosts('10.9.8.7', machine)].sort(), ['10.9.8.7', '127.0.0.1', '::1', 'localhost'])
  assert.deepEqual([...defaultAllowedHosts('cloudai.internal', machine)].sort(), ['127.0.0.1', '::1', 'cloudai.internal', 'localhost'])
  assert.deepEqual([...defaultAllowedHosts('0.0.0.0', machine)].sort(), ['0.0.0.0', '10.1.2.3', '127.0.0.1', '::1', 'build-box', 'fe80::1', 'localhost'])
  assert.deepEqual([...defaultAllowedHosts('::', machine)].sort(), ['10.1.2.3', '127.0.0.1', '::', '::1', 'build-box', 'fe80::1', 'localhost'])
})

test('Hosts answered: the defaults with any port or none, --api-allow-host names, case and a trailing dot aside', TIMEOUT, async (t) => {
  const { port } = watch()
  for (const host of [`127.0.0.1:${port}`, 'localhost', `LOCALHOST.:${port}`, `[::1]:${port}`, `10.1.2.3:${port}`, 'cloudai.example.com', 'Cloudai.Example.Com:443']) {
    const res = await (await send(t, port, `GET /api/status HTTP/1.1\r\nhost: ${host}\r\n\r\n`)).response()
    assert.equal(res.status, 200, host)
  }
  for (const host of ['evil.example', 'cloudai.example.com.evil.example', '10.1.2.4', '[::2]']) {
    const res = await (await send(t, port, `GET /api/status HTTP/1.1\r\nhost: ${host}\r\n\r\n`)).response()
    assert.equal(res.status, 421, host)
  }
})
