import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import { HttpApi } from '../../src/master/api/http.js'
import type { MasterControl } from '../../src/master/control.js'
import type { ClusterStatus, WorkerView } from '../../src/master/views.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { validateAddress, validateWorkerId } from '../../src/shared/validation.js'
import { memoryLogger } from '../support/log.js'

/** MasterControl over a Map, with the same validation and error codes as the Master. */
class MemoryControl implements MasterControl {
  readonly workers = new Map<string, WorkerView>()
  failStatusWith: Error | null = null

  listWorkers(): WorkerView[] {
    return [...this.workers.values()]
  }

  getWorker(id: string): WorkerView {
    const worker = this.workers.get(validateWorkerId(id, 'worker id'))
    if (!worker) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    return worker
  }

  async registerWorker(body: unknown): Promise<{ worker: WorkerView; created: boolean; persisted: boolean }> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'the body must be a JSON object')
    const b = body as Record<string, unknown>
    const id = validateWorkerId(b.worker_id)
    const address = validateAddress(b.worker_ip ?? b.address, 'worker_ip')
    const existing = this.workers.get(id)
    if (existing) {
      if (existing.address !== address) throw new CloudaiError('CLOUDAI_WORKER_EXISTS', `worker ${id} is registered at ${existing.address}`)
      return { worker: existing, created: false, persisted: true }
    }
    await Promise.resolve() // the Master awaits its store here: make the handler go async too
    const worker = view(id, address)
    this.workers.set(id, worker)
    return { worker, created: true, persisted: true }
  }

  async unregisterWorker(id: string): Promise<{ worker_id: string; persisted: boolean }> {
    validateWorkerId(id, 'worker id')
    if (!this.workers.delete(id)) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    await Promise.resolve()
    return { worker_id: id, persisted: true }
  }

  status(): ClusterStatus {
    if (this.failStatusWith) throw this.failStatusWith
    const active = this.listWorkers().filter((w) => w.is_active).length
    return {
      workers: this.workers.size,
      active,
      inactive: this.workers.size - active,
      reconnect_monitor: 'running',
      store: { kind: 'memory', healthy: true, pending_writes: 0, last_error: null },
      grpc_address: '127.0.0.1:50051',
      started_at: new Date(0).toISOString(),
      uptime_s: 0,
    }
  }
}

function view(id: string, address: string): WorkerView {
  return {
    worker_id: id,
    worker_ip: address,
    address,
    is_active: false,
    status: 'inactive',
    total_cpu: null,
    total_memory: null,
    total_storage: null,
    total_gpu: null,
    usage: null,
    running_tasks: [],
    reported_address: null,
    last_heartbeat: null,
    registered_at: new Date(0).toISOString(),
    connected_at: null,
    disconnected_at: null,
    reconnects: 0,
  }
}

const MAX_BODY = 1024
const JSON_HEADERS = { 'content-type': 'application/json' }

async function startApi(t: TestContext, control: MasterControl = new MemoryControl()) {
  const { log, lines } = memoryLogger('debug')
  const api = new HttpApi({ control, host: '127.0.0.1', port: 0, log, maxBodyBytes: MAX_BODY })
  const port = await api.start()
  t.after(() => api.close())
  const base = `http://127.0.0.1:${port}`
  return { api, port, base, lines }
}

async function call(url: string, init?: RequestInit): Promise<{ status: number; type: string | null; body: any; headers: Headers }> {
  const res = await fetch(url, init)
  const text = await res.text()
  return { status: res.status, type: res.headers.get('content-type'), body: text ? JSON.parse(text) : null, headers: res.headers }
}

function post(base: string, body: unknown): Promise<Awaited<ReturnType<typeof call>>> {
  return call(`${base}/api/workers`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(body) })
}

test('list, register, get and unregister a worker over HTTP', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)

  const empty = await call(`${base}/api/workers`)
  assert.equal(empty.status, 200)
  assert.equal(empty.type, 'application/json; charset=utf-8')
  assert.deepEqual(empty.body, { workers: [] })

  const created = await post(base, { worker_id: 'w1', worker_ip: '127.0.0.1:50052' })
  assert.equal(created.status, 201)
  assert.equal(created.body.message, 'Worker registered (offline, will reconnect automatically)')
  assert.equal(created.body.worker.worker_id, 'w1')
  assert.equal(created.body.worker.worker_ip, '127.0.0.1:50052')
  assert.equal(created.body.persisted, true)

  const again = await post(base, { worker_id: 'w1', address: '127.0.0.1:50052' })
  assert.equal(again.status, 200)
  assert.equal(again.body.message, 'Worker already registered')

  const conflict = await post(base, { worker_id: 'w1', worker_ip: '127.0.0.1:50053' })
  assert.equal(conflict.status, 409)
  assert.equal(conflict.body.error.code, 'CLOUDAI_WORKER_EXISTS')

  const one = await call(`${base}/api/workers/w1`)
  assert.equal(one.status, 200)
  assert.equal(one.body.worker_id, 'w1')

  const list = await call(`${base}/api/workers`)
  assert.deepEqual(list.body.workers.map((w: WorkerView) => w.worker_id), ['w1'])

  const status = await call(`${base}/api/status`)
  assert.equal(status.status, 200)
  assert.equal(status.body.workers, 1)

  const gone = await call(`${base}/api/workers/w1`, { method: 'DELETE' })
  assert.equal(gone.status, 200)
  assert.deepEqual(gone.body, { message: 'Worker unregistered', worker_id: 'w1', persisted: true })
  assert.equal(control.workers.size, 0)

  const missing = await call(`${base}/api/workers/w1`)
  assert.equal(missing.status, 404)
  assert.equal(missing.body.error.code, 'CLOUDAI_UNKNOWN_WORKER')
  const missingDelete = await call(`${base}/api/workers/w1`, { method: 'DELETE' })
  assert.equal(missingDelete.status, 404)
})

test('GET /healthz answers ok', async (t) => {
  const { base } = await startApi(t)
  const res = await call(`${base}/healthz`)
  assert.equal(res.status, 200)
  assert.deepEqual(res.body, { status: 'ok' })
})

test('a POST without a content-type is read as JSON', async (t) => {
  const { base } = await startApi(t)
  // A Uint8Array body makes fetch send no content-type at all (a string would be text/plain).
  const res = await call(`${base}/api/workers`, { method: 'POST', body: new TextEncoder().encode('{"worker_id":"w2","worker_ip":"localhost:1"}') })
  assert.equal(res.status, 201)
})

test('bad requests get their error code and status and change nothing', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  await post(base, { worker_id: 'w1', worker_ip: '127.0.0.1:50052' })
  const before = JSON.stringify([...control.workers])

  const cases: { name: string; url: string; init?: RequestInit; status: number; code: string }[] = [
    { name: 'unknown worker', url: '/api/workers/nope', status: 404, code: 'CLOUDAI_UNKNOWN_WORKER' },
    { name: 'slash in a path id', url: '/api/workers/a%2Fb', status: 400, code: 'CLOUDAI_BAD_WORKER_ID' },
    { name: 'slash in a path id (DELETE)', url: '/api/workers/w1%2F', init: { method: 'DELETE' }, status: 400, code: 'CLOUDAI_BAD_WORKER_ID' },
    { name: 'broken percent-encoding', url: '/api/workers/w%E0%A4%A', status: 400, code: 'CLOUDAI_BAD_WORKER_ID' },
    { name: 'body not JSON', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: '{"worker_id":' }, status: 400, code: 'CLOUDAI_BAD_JSON' },
    { name: 'empty body', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: '' }, status: 400, code: 'CLOUDAI_BAD_JSON' },
    { name: 'invalid UTF-8', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]) }, status: 400, code: 'CLOUDAI_BAD_JSON' },
    { name: 'array body', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: '[{"worker_id":"w9","worker_ip":"127.0.0.1:1"}]' }, status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'string body', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: '"w9"' }, status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'bad address', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: '{"worker_id":"w9","worker_ip":"not an address"}' }, status: 400, code: 'CLOUDAI_BAD_ADDRESS' },
    { name: 'bad id in the body', url: '/api/workers', init: { method: 'POST', headers: JSON_HEADERS, body: '{"worker_id":"w 9","worker_ip":"127.0.0.1:1"}' }, status: 400, code: 'CLOUDAI_BAD_WORKER_ID' },
    {
      name: 'declared body over the limit',
      url: '/api/workers',
      init: { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ worker_id: 'w9', worker_ip: '127.0.0.1:1', pad: 'x'.repeat(4 * MAX_BODY) }) },
      status: 413,
      code: 'CLOUDAI_BODY_TOO_LARGE',
    },
    { name: 'wrong content-type', url: '/api/workers', init: { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"worker_id":"w9","worker_ip":"127.0.0.1:1"}' }, status: 415, code: 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'form content-type', url: '/api/workers', init: { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'worker_id=w9' }, status: 415, code: 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'unknown route', url: '/api/nothing', status: 404, code: 'CLOUDAI_NOT_FOUND' },
    { name: 'unknown nested route', url: '/api/workers/w1/metrics/x', status: 404, code: 'CLOUDAI_NOT_FOUND' },
  ]
  for (const c of cases) {
    const res = await call(`${base}${c.url}`, c.init)
    assert.equal(res.status, c.status, `${c.name}: ${JSON.stringify(res.body)}`)
    assert.equal(res.body.error.code, c.code, c.name)
    assert.equal(typeof res.body.error.message, 'string', c.name)
    assert.equal(res.type, 'application/json; charset=utf-8', c.name)
    assert.equal(JSON.stringify([...control.workers]), before, `${c.name} changed the registry`)
  }
})

test('a streamed body is refused with 413 as soon as it crosses the limit', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  let sent = 0
  const chunks = 64
  // No content-length (chunked): the limit can only be enforced while reading.
  const body = new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (sent++ < chunks) ctl.enqueue(new TextEncoder().encode(sent === 1 ? '{"worker_id":"w9","worker_ip":"127.0.0.1:1","pad":"' : 'x'.repeat(512)))
      else ctl.close()
    },
  })
  const res = await call(`${base}/api/workers`, { method: 'POST', headers: JSON_HEADERS, body, duplex: 'half' } as RequestInit)
  assert.equal(res.status, 413)
  assert.equal(res.body.error.code, 'CLOUDAI_BODY_TOO_LARGE')
  assert.equal(control.workers.size, 0)
  // The server is still serving.
  assert.equal((await call(`${base}/healthz`)).status, 200)
})

test('a wrong method is 405 with an Allow header', async (t) => {
  const { base } = await startApi(t)
  for (const [url, method, allow] of [
    ['/api/workers', 'PUT', 'GET, POST'],
    ['/api/workers', 'DELETE', 'GET, POST'],
    ['/api/workers/w1', 'POST', 'GET, DELETE'],
    ['/api/status', 'POST', 'GET'],
    ['/healthz', 'DELETE', 'GET'],
  ] as const) {
    const res = await call(`${base}${url}`, { method })
    assert.equal(res.status, 405, `${method} ${url}`)
    assert.equal(res.body.error.code, 'CLOUDAI_METHOD_NOT_ALLOWED')
    assert.equal(res.headers.get('allow'), allow, `${method} ${url}`)
  }
})

test('an unexpected exception is a logged 500 CLOUDAI_INTERNAL without its details', async (t) => {
  const control = new MemoryControl()
  const { base, lines } = await startApi(t, control)
  control.failStatusWith = new TypeError('secret detail at /srv/cloudai')
  const res = await call(`${base}/api/status`)
  assert.equal(res.status, 500)
  assert.equal(res.body.error.code, 'CLOUDAI_INTERNAL')
  assert.doesNotMatch(JSON.stringify(res.body), /secret|\/srv|TypeError|at /)
  const logged = lines.find((l) => l.level === 50)
  assert.ok(logged, 'the 500 is logged at error level')
  assert.match(JSON.stringify(logged.err), /secret detail/)
  // The process and the server survive it.
  control.failStatusWith = null
  assert.equal((await call(`${base}/api/status`)).status, 200)
})

test('start() fails with a CloudaiError when the port is taken', async (t) => {
  const { port } = await startApi(t)
  const { log } = memoryLogger('silent')
  const second = new HttpApi({ control: new MemoryControl(), host: '127.0.0.1', port, log })
  t.after(() => second.close())
  await assert.rejects(second.start(), (err: unknown) => err instanceof CloudaiError && err.code === 'CLOUDAI_BAD_CONFIG')
})

/** Resource types by count, without the timers and immediates the test machinery itself holds. */
function handles(): Map<string, number> {
  const counts = new Map<string, number>()
  for (const type of process.getActiveResourcesInfo()) {
    if (type === 'Timeout' || type === 'Immediate') continue
    counts.set(type, (counts.get(type) ?? 0) + 1)
  }
  return counts
}

/** Polls (each turn of the event loop) until `done` holds or 5 s pass; returns whether it held. */
async function eventually(done: () => boolean): Promise<boolean> {
  const deadline = Date.now() + 5000
  while (!done()) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setImmediate(resolve))
  }
  return true
}

const same = (a: Map<string, number>, b: Map<string, number>): boolean => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort())

test('close() closes keep-alive connections and leaves no active handles', async (t) => {
  // Client sockets of the servers closed by earlier tests may still be closing: start from quiet.
  await eventually(() => !handles().has('TCPSocketWrap') && !handles().has('CloseReq'))
  const before = handles()
  const { log } = memoryLogger('silent')
  const api = new HttpApi({ control: new MemoryControl(), host: '127.0.0.1', port: 0, log })
  const port = await api.start()
  t.after(() => api.close())
  // Keep-alive: fetch keeps this connection open in its pool after the answer.
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200)
  assert.equal(handles().get('TCPSocketWrap'), (before.get('TCPSocketWrap') ?? 0) + 1, 'the keep-alive connection is open')
  await api.close()
  await api.close() // idempotent
  // The client closes its side once it reads the server's FIN; wait for that.
  await eventually(() => same(handles(), before))
  assert.deepEqual(handles(), before)
  await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`))
})

test('a process that started and closed the API exits by itself', async () => {
  // uWS's own libuv handles are invisible to getActiveResourcesInfo: only an exit proves they are gone.
  const httpModule = new URL('../../src/master/api/http.js', import.meta.url).href
  // A raw keep-alive connection is ref'd (unlike fetch's pooled idle sockets): the child exits only
  // if close() also closes the server's side of it.
  const script = `
    import net from 'node:net'
    import { HttpApi } from ${JSON.stringify(httpModule)}
    const log = { isLevelEnabled: () => false, debug() {}, info() {}, warn() {}, error() {} }
    const control = { listWorkers: () => [], status: () => ({}) }
    const api = new HttpApi({ control, host: '127.0.0.1', port: 0, log })
    const port = await api.start()
    const res = await fetch('http://127.0.0.1:' + port + '/api/workers')
    if (res.status !== 200) process.exit(3)
    await res.text()
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'))
    await new Promise((resolve) => socket.once('data', resolve))
    await api.close()
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  // Well under uWS's 10 s idle timeout, which would close the connection without us.
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  assert.equal(signal, null, 'the child had to be killed: something kept it alive')
  assert.equal(code, 0, stderr)
})
