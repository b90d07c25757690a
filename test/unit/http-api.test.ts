import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import net from 'node:net'
import { test, type TestContext } from 'node:test'
import { HttpApi } from '../../src/master/api/http.js'
import type { MasterControl } from '../../src/master/control.js'
import type { TaskView, WorkerView } from '../../src/master/views.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { MemoryControl, workerView } from '../support/memory-control.js'
import { childCwd, childEnv, reservePort, runCli, waitUntil } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

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

function postTask(base: string, body: unknown): Promise<Awaited<ReturnType<typeof call>>> {
  return call(`${base}/api/tasks`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(body) })
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
  assert.equal(created.body.token, control.tokens.get('w1'), 'the 201 carries the new token')

  const again = await post(base, { worker_id: 'w1', address: '127.0.0.1:50052' })
  assert.equal(again.status, 200)
  assert.equal(again.body.message, 'Worker already registered')
  assert.equal('token' in again.body, false, 'a registration that changes nothing shows no token')

  const rotate = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }
  const bare = await call(`${base}/api/workers/w1/token`, { method: 'POST' })
  assert.equal(bare.status, 415, 'like every POST: application/json, so that no other site can send it without a preflight')
  assert.equal(bare.body.error.code, 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE')
  const rotated = await call(`${base}/api/workers/w1/token`, rotate)
  assert.equal(rotated.status, 201)
  assert.equal(rotated.headers.get('cache-control'), 'no-store', 'a token is never cached')
  assert.equal(created.headers.get('cache-control'), 'no-store')
  assert.deepEqual(rotated.body, { message: 'New worker token issued (shown once)', worker_id: 'w1', token: control.tokens.get('w1'), previous_valid_until: new Date(3_600_000).toISOString(), persisted: true })
  assert.notEqual(rotated.body.token, created.body.token)
  assert.equal((await call(`${base}/api/workers/nobody/token`, rotate)).body.error.code, 'CLOUDAI_UNKNOWN_WORKER')
  assert.equal((await call(`${base}/api/workers/w1/token`)).status, 405, 'POST only')

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

test('submit, list, get and cancel a task over HTTP', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  await post(base, { worker_id: 'w1', worker_ip: '127.0.0.1:50052' })

  const empty = await call(`${base}/api/tasks`)
  assert.equal(empty.status, 200)
  assert.equal(empty.type, 'application/json; charset=utf-8')
  assert.deepEqual(empty.body, { tasks: [], total: 0, limit: 100, offset: 0 })
  assert.deepEqual(control.lastQuery, {})

  const created = await postTask(base, { command: 'echo hello', name: 'greet', req_cpu: 1, req_memory: 0.5, target_worker_id: 'w1', timeout_s: 30, max_attempts: 2, env: { MODE: 'fast' } })
  assert.equal(created.status, 201)
  // CloudAI clients read these three.
  assert.equal(created.body.task_id, 'task-1')
  assert.equal(created.body.status, 'queued')
  assert.equal(created.body.message, 'Task queued')
  assert.equal(created.body.task.task_id, 'task-1')
  assert.equal(created.body.task.command, 'echo hello')
  assert.equal(created.body.task.req_memory, 0.5)
  assert.equal(created.body.task.target_worker_id, 'w1')
  // CloudAI's field names are accepted as well.
  const second = await postTask(base, { command: 'sleep 600', cpu_required: 2 })
  assert.equal(second.status, 201)
  assert.equal(second.body.task.req_cpu, 2)

  const list = await call(`${base}/api/tasks`)
  assert.deepEqual(list.body.tasks.map((x: TaskView) => x.task_id), ['task-2', 'task-1'])
  assert.equal(list.body.total, 2)

  const page = await call(`${base}/api/tasks?status=queued&limit=1&offset=1`)
  assert.equal(page.status, 200)
  assert.deepEqual(control.lastQuery, { status: 'queued', limit: 1, offset: 1 })
  assert.deepEqual(page.body.tasks.map((x: TaskView) => x.task_id), ['task-1'])
  assert.deepEqual([page.body.total, page.body.limit, page.body.offset], [2, 1, 1])

  // CloudAI's "pending" is our "queued".
  await call(`${base}/api/tasks?status=pending`)
  assert.deepEqual(control.lastQuery, { status: 'queued' })
  await call(`${base}/api/tasks?limit=1000&offset=0`)
  assert.deepEqual(control.lastQuery, { limit: 1000, offset: 0 })

  const one = await call(`${base}/api/tasks/task-1`)
  assert.equal(one.status, 200)
  assert.equal(one.body.task_id, 'task-1')
  assert.equal(one.body.name, 'greet')

  const cancelled = await call(`${base}/api/tasks/task-2`, { method: 'DELETE' })
  assert.equal(cancelled.status, 200)
  assert.equal(cancelled.body.message, 'Task cancelled')
  assert.equal(cancelled.body.task.task_id, 'task-2')
  assert.equal(cancelled.body.task.status, 'cancelled')
  assert.equal(control.tasks.get('task-2')?.status, 'cancelled')

  const onlyCancelled = await call(`${base}/api/tasks?status=cancelled`)
  assert.deepEqual(onlyCancelled.body.tasks.map((x: TaskView) => x.task_id), ['task-2'])

  // A finished task cannot be cancelled again.
  const again = await call(`${base}/api/tasks/task-2`, { method: 'DELETE' })
  assert.equal(again.status, 409)
  assert.equal(again.body.error.code, 'CLOUDAI_TASK_FINISHED')
})

test('bad task requests get their error code and status and change nothing', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  await postTask(base, { command: 'echo hello' })
  await postTask(base, { command: 'true' })
  await call(`${base}/api/tasks/task-2`, { method: 'DELETE' })
  const before = JSON.stringify([...control.tasks])
  const submit = (body: string, headers: Record<string, string> = JSON_HEADERS): RequestInit => ({ method: 'POST', headers, body })

  const cases: { name: string; url: string; init?: RequestInit; status: number; code: string; message?: RegExp }[] = [
    { name: 'unknown status', url: '/api/tasks?status=done', status: 400, code: 'CLOUDAI_BAD_REQUEST', message: /queued, assigned, running, completed, failed, cancelled/ },
    { name: 'empty status', url: '/api/tasks?status=', status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'status in capitals', url: '/api/tasks?status=QUEUED', status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'limit 0', url: '/api/tasks?limit=0', status: 400, code: 'CLOUDAI_BAD_REQUEST', message: /limit "0".*from 1 to 1000/ },
    { name: 'limit over 1000', url: '/api/tasks?limit=1001', status: 400, code: 'CLOUDAI_BAD_REQUEST', message: /from 1 to 1000/ },
    { name: 'limit not a whole number', url: '/api/tasks?limit=2.5', status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'limit in exponent form', url: '/api/tasks?limit=1e2', status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'limit empty', url: '/api/tasks?limit=', status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'negative offset', url: '/api/tasks?offset=-1', status: 400, code: 'CLOUDAI_BAD_REQUEST', message: /offset "-1".*0 or more/ },
    { name: 'offset in hex', url: '/api/tasks?offset=0x10', status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'unknown parameter', url: '/api/tasks?state=queued', status: 400, code: 'CLOUDAI_BAD_REQUEST', message: /unknown query parameter "state": use status, limit, offset/ },
    { name: 'repeated parameter', url: '/api/tasks?limit=1&limit=2', status: 400, code: 'CLOUDAI_BAD_REQUEST', message: /limit is given more than once/ },
    { name: 'unknown task', url: '/api/tasks/task-9999', status: 404, code: 'CLOUDAI_UNKNOWN_TASK' },
    { name: 'unknown task (DELETE)', url: '/api/tasks/task-9999', init: { method: 'DELETE' }, status: 404, code: 'CLOUDAI_UNKNOWN_TASK' },
    { name: 'cancel of a finished task', url: '/api/tasks/task-2', init: { method: 'DELETE' }, status: 409, code: 'CLOUDAI_TASK_FINISHED' },
    { name: 'bad task id', url: '/api/tasks/task%20one', status: 400, code: 'CLOUDAI_BAD_TASK_ID' },
    { name: 'slash in a task id (DELETE)', url: '/api/tasks/task-1%2F..', init: { method: 'DELETE' }, status: 400, code: 'CLOUDAI_BAD_TASK_ID' },
    { name: 'broken percent-encoding in a task id', url: '/api/tasks/task%E0%A4%A', status: 400, code: 'CLOUDAI_BAD_TASK_ID' },
    { name: 'body not JSON', url: '/api/tasks', init: submit('{"command":'), status: 400, code: 'CLOUDAI_BAD_JSON' },
    { name: 'empty body', url: '/api/tasks', init: submit(''), status: 400, code: 'CLOUDAI_BAD_JSON' },
    { name: 'array body', url: '/api/tasks', init: submit('[{"command":"echo"}]'), status: 400, code: 'CLOUDAI_BAD_REQUEST' },
    { name: 'no command', url: '/api/tasks', init: submit('{"name":"x"}'), status: 400, code: 'CLOUDAI_BAD_FIELD' },
    { name: 'negative cpu', url: '/api/tasks', init: submit('{"command":"echo","req_cpu":-1}'), status: 400, code: 'CLOUDAI_BAD_FIELD' },
    { name: 'unknown target worker', url: '/api/tasks', init: submit('{"command":"echo","target_worker_id":"ghost"}'), status: 404, code: 'CLOUDAI_UNKNOWN_WORKER' },
    { name: 'wrong content-type', url: '/api/tasks', init: submit('{"command":"echo"}', { 'content-type': 'text/plain' }), status: 415, code: 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'body over the limit', url: '/api/tasks', init: submit(JSON.stringify({ command: 'x'.repeat(4 * MAX_BODY) })), status: 413, code: 'CLOUDAI_BODY_TOO_LARGE' },
    { name: 'unknown nested task route', url: '/api/tasks/task-1/logs', status: 404, code: 'CLOUDAI_NOT_FOUND' },
  ]
  for (const c of cases) {
    const res = await call(`${base}${c.url}`, c.init)
    assert.equal(res.status, c.status, `${c.name}: ${JSON.stringify(res.body)}`)
    assert.equal(res.body.error.code, c.code, c.name)
    assert.equal(typeof res.body.error.message, 'string', c.name)
    if (c.message) assert.match(res.body.error.message, c.message, c.name)
    assert.equal(res.type, 'application/json; charset=utf-8', c.name)
    assert.equal(JSON.stringify([...control.tasks]), before, `${c.name} changed the tasks`)
  }
  // Still serving, and the valid list still answers.
  assert.equal((await call(`${base}/api/tasks`)).body.total, 2)
})

test('the cloudai task commands drive the task routes and print what people read', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli([...args, '--api', base], env)

  // --api comes after the command words here: everything after -- is the task's, even flags.
  const submitted = await runCli(['task', 'submit', '--api', base, '--cpu', '1', '--name', 'greet', '--env', 'MODE=fast', '--', 'echo', 'hello'])
  assert.equal(submitted.code, 0, submitted.stderr)
  assert.equal(submitted.stdout, '✅ Task task-1 queued\n')
  const first = control.tasks.get('task-1')!
  assert.equal(first.command, 'echo hello')
  assert.equal(first.req_cpu, 1)
  assert.equal(first.name, 'greet')

  // Numbers and flags after -- stay the command's words as typed; CLOUDAI_CPU is a default,
  // and a CLOUDAI_ENV meant for something else is not read as --env.
  const second = await runCli(['task', 'submit', '--api', base, '--', 'sleep', '600', '--cpu', '0x10'], { CLOUDAI_CPU: '3', CLOUDAI_ENV: 'production' })
  assert.equal(second.code, 0, second.stderr)
  assert.equal(control.tasks.get('task-2')?.command, 'sleep 600 --cpu 0x10')
  assert.equal(control.tasks.get('task-2')?.req_cpu, 3)

  const list = await cli(['tasks'])
  assert.equal(list.code, 0, list.stderr)
  assert.match(list.stdout, /^ID +NAME +STATUS +WORKER +ATTEMPTS +SUBMITTED +EXIT$/m)
  assert.match(list.stdout, /^task-1 +greet +queued +- +0\/3 +\d+[smhd] ago +-$/m)
  assert.match(list.stdout, /^task-2 +sleep 600 --cpu 0x10 +queued /m)
  assert.match(list.stdout, /^2 tasks: 2 queued$/m)
  assert.ok(!list.stdout.includes('\x1b['), 'no colour when stdout is not a terminal')

  const json = await cli(['tasks', '--status', 'pending', '--limit', '1', '--json'])
  assert.equal(json.code, 0, json.stderr)
  assert.deepEqual(control.lastQuery, { status: 'queued', limit: 1 })
  assert.equal(JSON.parse(json.stdout).total, 2)

  const one = await cli(['task', 'task-1'])
  assert.equal(one.code, 0, one.stderr)
  assert.match(one.stdout, /^Task: +task-1$/m)
  assert.match(one.stdout, /^Command: +echo hello$/m)
  assert.match(one.stdout, /^Submitted: +\S+Z \(\d+[smhd] ago\)$/m)
  assert.match(one.stdout, /^History:\n {2}\S+Z {2}queued$/m)
  assert.match(one.stdout, /Logs: none yet/)

  const cancelled = await cli(['cancel', 'task-2'])
  assert.equal(cancelled.code, 0, cancelled.stderr)
  assert.equal(cancelled.stdout, 'Task task-2 cancelled\n')
  assert.equal(control.tasks.get('task-2')?.status, 'cancelled')

  const twice = await cli(['task', 'cancel', 'task-2'])
  assert.equal(twice.code, 1)
  assert.equal(twice.stderr, 'error: task task-2 is already cancelled (CLOUDAI_TASK_FINISHED)\n')
  const missing = await cli(['task', 'task-9999', '--json'])
  assert.equal(missing.code, 1)
  assert.match(missing.stderr, /\(CLOUDAI_UNKNOWN_TASK\)$/m)
  assert.equal(JSON.parse(missing.stdout).error.code, 'CLOUDAI_UNKNOWN_TASK')
  const refused = await runCli(['task', 'submit', '--api', base, '--worker', 'ghost', '--', 'true'])
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /\(CLOUDAI_UNKNOWN_WORKER\)$/m)
  assert.equal(control.tasks.size, 2)
})

test('cloudai task submit with a flag given twice sends its last value, every --env, and still reads CLOUDAI_*', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  // As a wrapper script calls it: its own flags first, the caller's overrides appended.
  const res = await runCli(
    ['task', 'submit', '--api', 'http://127.0.0.1:1', '--cpu', '1', '--name', 'a', '--env', 'A=1', '--api', base, '--cpu', '2', '--name=b', '--env=B=2', '--json', '--', 'true'],
    { CLOUDAI_MEM: '8', CLOUDAI_GPU: '3' },
  )
  assert.equal(res.code, 0, res.stderr)
  assert.deepEqual(control.submitted, [{ command: 'true', name: 'b', req_cpu: 2, req_memory: 8, req_gpu: 3, env: { A: '1', B: '2' } }])
  // A flag typed twice beats its variable, as typed once does.
  assert.equal((await runCli(['task', 'submit', '--api', base, '--gpu', '0', '--gpu', '1', '--', 'true'], { CLOUDAI_GPU: '3' })).code, 0)
  assert.equal((control.submitted[1] as { req_gpu: number }).req_gpu, 1)
})

test('task commands say so when the master cannot be reached', async () => {
  const port = await reservePort()
  const api = `http://127.0.0.1:${port}`
  const runs = await Promise.all([['tasks'], ['task', 'task-1'], ['cancel', 'task-1'], ['task', 'submit', '--cpu', '1', '--', 'true']].map((args) => runCli([...args.slice(0, 2), '--api', api, ...args.slice(2)])))
  for (const res of runs) {
    assert.equal(res.code, 1, res.stderr)
    assert.match(res.stderr, /^error: cannot reach the master at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\): is `cloudai master` running\?.*\(CLOUDAI_API_UNREACHABLE\)$/m)
    assert.equal(res.stdout, '')
  }
})

/** A control with `n` workers, some of them with text beyond ASCII: a list of several MB. */
function bigControl(n: number): MemoryControl {
  const control = new MemoryControl()
  for (let i = 0; i < n; i++) {
    const id = `w${i}`
    control.workers.set(id, workerView(id, `127.0.0.1:${10_000 + (i % 50_000)}`, i % 7 === 0 ? { suspect: true, suspect_reason: 'AssignTask failed: connexion refusée — 拒绝 🙂' } : {}))
  }
  return control
}

/** Sends a raw GET; the socket is paused after each piece and resumed a turn of the loop later (a slow reader). */
function slowGet(port: number, path: string): { socket: net.Socket; received: Buffer[]; first: Promise<void>; ended: Promise<Buffer> } {
  const socket = net.connect(port, '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`))
  const received: Buffer[] = []
  let firstSeen!: () => void
  const first = new Promise<void>((resolve) => (firstSeen = resolve))
  socket.on('data', (d: Buffer) => {
    received.push(d)
    firstSeen()
    socket.pause()
    setImmediate(() => socket.resume())
  })
  const ended = new Promise<Buffer>((resolve, reject) => {
    socket.on('end', () => resolve(Buffer.concat(received)))
    socket.on('error', reject)
  })
  return { socket, received, first, ended }
}

test('GET /api/workers streams a list of many MB whole to a slow reader, with its exact content-length, and answers other requests meanwhile', async (t) => {
  const control = bigControl(20_000)
  const { port, base } = await startApi(t, control)
  const slow = slowGet(port, '/api/workers')
  await slow.first
  // The loop is not held by the long answer: another request is answered while it goes out.
  const status = await call(`${base}/api/status`)
  assert.equal(status.status, 200)
  const raw = await slow.ended
  const split = raw.indexOf('\r\n\r\n')
  const head = raw.subarray(0, split).toString('latin1')
  const body = raw.subarray(split + 4)
  assert.match(head, /^HTTP\/1\.1 200 OK\r\n/)
  assert.match(head, /\r\ncontent-type: application\/json; charset=utf-8\r\n/i)
  assert.doesNotMatch(head, /transfer-encoding/i)
  assert.equal(Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]), body.length)
  assert.ok(body.length > 8_000_000, `a body of ${body.length} bytes`)
  assert.equal(body.toString('utf8'), JSON.stringify({ workers: control.listWorkers() }))
})

test('a client that goes away in the middle of the list stops its answer, and the API goes on answering', async (t) => {
  const control = bigControl(20_000)
  const { port, base, lines } = await startApi(t, control)
  for (let round = 0; round < 3; round++) {
    const slow = slowGet(port, '/api/workers')
    slow.socket.on('error', () => {})
    await slow.first
    slow.socket.destroy()
    await waitUntil(() => lines.filter((l) => l.msg === 'HTTP client went away during the answer').length > round, 'the master to see the client go', 10_000)
  }
  const after = await call(`${base}/api/workers`)
  assert.equal(after.status, 200)
  assert.equal(after.body.workers.length, 20_000)
})

test('GET /healthz answers 200 when healthy and 503 with the reasons when not', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  const ok = await call(`${base}/healthz`)
  assert.equal(ok.status, 200)
  assert.equal(ok.body.status, 'healthy')
  control.healthReport = {
    ...control.healthReport,
    status: 'unhealthy',
    reasons: [{ check: 'inactive-workers', message: '1 worker(s) have been inactive for more than 5 min', worker_ids: ['w1'], count: 1 }],
  }
  const bad = await call(`${base}/healthz`)
  assert.equal(bad.status, 503)
  assert.deepEqual(bad.body.reasons[0].worker_ids, ['w1'])
})

test('GET /metrics answers the Prometheus text format', async (t) => {
  const { base } = await startApi(t)
  const res = await fetch(`${base}/metrics`)
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  assert.match(await res.text(), /^cloudai_workers_active 0$/m)
})

test('GET /api/workers/{id}/metrics validates the id and since', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  assert.equal((await post(base, { worker_id: 'w1', worker_ip: 'localhost:1' })).status, 201)
  const res = await call(`${base}/api/workers/w1/metrics`)
  assert.equal(res.status, 200)
  assert.equal(res.body.has_data, false)
  assert.deepEqual(res.body.history, [])
  assert.deepEqual(control.lastMetricsQuery, {})

  assert.equal((await call(`${base}/api/workers/w1/metrics?since=2026-11-28T10:00:00Z`)).status, 200)
  assert.deepEqual(control.lastMetricsQuery, { since: Date.parse('2026-11-28T10:00:00Z') })
  assert.equal((await call(`${base}/api/workers/w1/metrics?since=1795860000000`)).status, 200)
  assert.deepEqual(control.lastMetricsQuery, { since: 1795860000000 })
  const before = Date.now()
  assert.equal((await call(`${base}/api/workers/w1/metrics?since=15m`)).status, 200)
  const since = control.lastMetricsQuery!.since!
  assert.ok(since <= Date.now() - 900_000 && since >= before - 900_000, 'a duration counts back from now')

  assert.equal((await call(`${base}/api/workers/nobody/metrics`)).body.error.code, 'CLOUDAI_UNKNOWN_WORKER')
  assert.equal((await call(`${base}/api/workers/nobody/metrics`)).status, 404)
  assert.equal((await call(`${base}/api/workers/bad%20id/metrics`)).body.error.code, 'CLOUDAI_BAD_WORKER_ID')
  for (const q of ['since=yesterday', 'since=', 'since=-5m', 'since=1&since=2', 'from=1', 'since=2026-13-45T99:00:00Z', 'since=8d', 'since=March']) {
    const bad = await call(`${base}/api/workers/w1/metrics?${q}`)
    assert.equal(bad.status, 400, q)
    assert.equal(bad.body.error.code, 'CLOUDAI_BAD_REQUEST', q)
  }
})

test('a POST without a content-type is refused with 415 and registers nothing (another site\'s page may send one without a preflight)', async (t) => {
  const control = new MemoryControl()
  const { base } = await startApi(t, control)
  // A Uint8Array body makes fetch send no content-type at all (a string would be text/plain).
  const res = await call(`${base}/api/workers`, { method: 'POST', body: new TextEncoder().encode('{"worker_id":"w2","worker_ip":"localhost:1"}') })
  assert.equal(res.status, 415)
  assert.equal(res.body.error.code, 'CLOUDAI_UNSUPPORTED_MEDIA_TYPE')
  assert.equal(control.workers.size, 0)
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
    ['/metrics', 'POST', 'GET'],
    ['/api/workers/w1/metrics', 'DELETE', 'GET'],
    ['/api/tasks', 'PUT', 'GET, POST'],
    ['/api/tasks', 'DELETE', 'GET, POST'],
    ['/api/tasks/task-1', 'POST', 'GET, DELETE'],
    ['/api/tasks/task-1', 'PATCH', 'GET, DELETE'],
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
    const control = { listWorkers: () => [], listWorkersBody: () => ({ open: '{"workers":[', items: [], close: ']}', bytes: 14 }), status: () => ({}) }
    const api = new HttpApi({ control, host: '127.0.0.1', port: 0, log })
    const port = await api.start()
    const res = await fetch('http://127.0.0.1:' + port + '/api/workers')
    if (res.status !== 200) process.exit(3)
    await res.text()
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'))
    await new Promise((resolve) => socket.once('data', resolve))
    await api.close()
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  // Well under uWS's 10 s idle timeout, which would close the connection without us.
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  assert.equal(signal, null, 'the child had to be killed: something kept it alive')
  assert.equal(code, 0, stderr)
})
