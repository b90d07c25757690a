import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { test } from 'node:test'
import { api, FAST_MASTER_FLAGS, msgHas, reservePort, startMaster, startWorker, tempDir, waitUntil } from '../support/cluster.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'
import { Watcher } from '../support/watcher.js'

// /ws on a real master process, with real workers.

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/

test('watchers get a snapshot, then worker_status in the CloudAI shape, in order, and task and telemetry events', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  const watcher = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)
  const snapshot = await watcher.next((m) => m.type === 'snapshot', 'the snapshot')
  assert.equal(watcher.messages[0], snapshot, 'the snapshot comes first')
  assert.deepEqual(snapshot.workers.map((w: { worker_id: string; is_active: boolean }) => [w.worker_id, w.is_active]), [['w1', false]])
  assert.equal(snapshot.status.workers, 1)
  assert.match(snapshot.timestamp, RFC3339)

  // Active, then inactive (kill -9), then active again: one worker_status each, in order.
  let worker = await startWorker(t, 'w1', port)
  const up = await watcher.next((m) => m.type === 'worker_status', 'w1 active')
  assert.deepEqual(Object.keys(up).sort(), ['is_active', 'timestamp', 'type', 'worker_id'], 'exactly the CloudAI fields')
  assert.deepEqual({ ...up, timestamp: 'x' }, { type: 'worker_status', worker_id: 'w1', is_active: true, timestamp: 'x' })
  assert.match(up.timestamp, RFC3339)
  const full = watcher.messages.findLast((m) => m.type === 'worker' && m.worker.worker_id === 'w1')
  assert.equal(full?.worker.is_active, true, 'a full worker record accompanies it')
  assert.ok(full?.worker.total_cpu > 0)

  const metrics = await watcher.next((m) => m.type === 'worker_metrics' && m.worker_id === 'w1', 'telemetry of w1')
  assert.ok(metrics.latest.cpu >= 0 && metrics.latest.cpu <= 100)

  const id = (await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'echo from-ws' } })).body.task_id as string
  const completed = await watcher.next((m) => m.type === 'task_status' && m.task.task_id === id && m.task.status === 'completed', 'the task completed')
  const seen = watcher.messages.filter((m) => m.type === 'task_status' && m.task.task_id === id).map((m) => `${m.previous}->${m.task.status}`)
  assert.deepEqual(seen, ['null->queued', 'queued->assigned', 'assigned->running', 'running->completed'])
  assert.equal(completed.task.logs, 'from-ws\n')
  assert.equal(completed.task_id, id)
  assert.equal(completed.status, 'completed')
  assert.equal(completed.worker_id, 'w1')
  assert.ok(completed.submitted_at && completed.assigned_at && completed.started_at && completed.finished_at, 'with its timestamps')

  let mark = watcher.mark()
  await worker.kill('SIGKILL')
  const down = await watcher.next((m) => m.type === 'worker_status', 'w1 inactive', { from: mark })
  assert.deepEqual({ ...down, timestamp: 'x' }, { type: 'worker_status', worker_id: 'w1', is_active: false, timestamp: 'x' })
  mark = watcher.mark()
  worker = await startWorker(t, 'w1', port)
  const back = await watcher.next((m) => m.type === 'worker_status', 'w1 active again', { from: mark })
  assert.equal(back.is_active, true)
  const statuses = watcher.messages.filter((m) => m.type === 'worker_status').map((m) => m.is_active)
  assert.deepEqual(statuses, [true, false, true], 'in order, one per change')

  // Topics: narrowing telemetry to one worker, and a bad subscription answered with a code.
  mark = watcher.mark()
  watcher.send({ type: 'subscribe', topics: ['metrics/w1'] })
  const subscribed = await watcher.next((m) => m.type === 'subscribed', 'subscribed', { from: mark })
  assert.deepEqual(subscribed.topics, ['metrics/w1', 'tasks', 'workers'])
  await watcher.next((m) => m.type === 'worker_metrics', 'telemetry of w1 on its own topic', { from: watcher.mark() })
  for (const [bad, code] of [[{ type: 'subscribe', topics: ['nope'] }, 'CLOUDAI_BAD_REQUEST'], [{ type: 'subscribe', topics: ['metrics/bad id'] }, 'CLOUDAI_BAD_WORKER_ID'], [{ type: 'dance' }, 'CLOUDAI_BAD_REQUEST']] as const) {
    mark = watcher.mark()
    watcher.send(bad)
    const err = await watcher.next((m) => m.type === 'error', `error for ${JSON.stringify(bad)}`, { from: mark })
    assert.equal(err.code, code)
  }
  mark = watcher.mark()
  watcher.ws.send('not json')
  assert.equal((await watcher.next((m) => m.type === 'error', 'error for bad JSON', { from: mark })).code, 'CLOUDAI_BAD_JSON')

  // Unregistered: removed for watchers too. Shutdown closes the connection with 1001.
  mark = watcher.mark()
  assert.equal((await api(master.api, '/api/workers/w1', { method: 'DELETE' })).status, 200)
  await watcher.next((m) => m.type === 'worker_removed' && m.worker_id === 'w1', 'w1 removed', { from: mark })
  await master.proc.kill('SIGTERM')
  assert.equal((await watcher.closed).code, 1001)
})

test('a subscribe that would pass the topic limit is refused whole: the connection keeps exactly the topics it had', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const watcher = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)
  await watcher.next((m) => m.type === 'snapshot', 'the snapshot')
  // workers + tasks + 997 workers' telemetry (narrowing drops `metrics`): 999 of the 1,000 allowed.
  const some = Array.from({ length: 997 }, (_, i) => `metrics/w${i}`)
  let mark = watcher.mark()
  watcher.send({ type: 'subscribe', topics: some })
  const before = (await watcher.next((m) => m.type === 'subscribed', 'the first 997', { from: mark })).topics as string[]
  assert.equal(before.length, 999)

  // Two more would make 1,001: the first of them must not stay behind.
  mark = watcher.mark()
  watcher.send({ type: 'subscribe', topics: ['metrics/x1', 'metrics/x2'] })
  const err = await watcher.next((m) => m.type === 'error', 'the refusal', { from: mark })
  assert.equal(err.code, 'CLOUDAI_BAD_REQUEST')
  assert.match(err.message, /at most 1000 topics per connection/)
  mark = watcher.mark()
  watcher.send({ type: 'unsubscribe', topics: ['metrics/never'] })
  const after = (await watcher.next((m) => m.type === 'subscribed', 'the topics held', { from: mark })).topics as string[]
  assert.deepEqual(after, before, 'nothing of the refused message was kept')

  // Swapping telemetry for `metrics` shrinks the set, so it is allowed at the limit.
  mark = watcher.mark()
  watcher.send({ type: 'subscribe', topics: ['metrics/x1', 'metrics'] })
  assert.deepEqual((await watcher.next((m) => m.type === 'subscribed', 'back to all telemetry', { from: mark })).topics, ['metrics', 'tasks', 'workers'])
})

/** A WebSocket client that completes the handshake and then never reads: the slowest client there is. */
function stalledClient(port: number): Promise<{ close: () => void }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    })
    socket.once('error', reject)
    socket.once('data', (chunk) => {
      if (!chunk.toString('latin1').startsWith('HTTP/1.1 101')) return reject(new Error(`no upgrade: ${chunk.toString('latin1').slice(0, 80)}`))
      socket.pause()
      resolve({ close: () => socket.destroy() })
    })
  })
}

test('a client that stops reading is closed past --ws-max-buffer while a normal one keeps receiving everything', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--ws-max-buffer', '64KiB'] })
  const normal = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)
  const stalled = await stalledClient(master.httpPort)
  t.after(() => stalled.close())
  // Queued tasks with large commands: megabytes of task events, more than the socket buffers of a
  // loopback connection hold, so the master's own buffer for the stalled client fills.
  const command = `echo ${'x'.repeat(60_000)}`
  const ids: string[] = []
  const closedLine = master.proc.waitForLog(msgHas('Closed a WebSocket client that fell'), 'the stalled client closed', { timeoutMs: 30_000 })
  for (let i = 0; i < 150; i++) {
    const res = await api(master.api, '/api/tasks', { method: 'POST', body: { command, name: `bulk-${i}` } })
    assert.equal(res.status, 201)
    ids.push(res.body.task_id)
  }
  await closedLine
  await normal.next((m) => m.type === 'task_status' && m.task.task_id === ids.at(-1), 'the last task event on the normal client')
  const got = normal.messages.filter((m) => m.type === 'task_status').map((m) => m.task.task_id)
  assert.deepEqual(got, ids, 'the normal client got every event, in order')
  const m = parsePrometheus(await (await fetch(`${master.api}/metrics`)).text())
  assert.ok((promValue(m, 'cloudai_ws_slow_clients_closed_total') ?? 0) >= 1)
  assert.equal(promValue(m, 'cloudai_ws_connections'), 1, 'only the normal client is left')
})

test('limits: WebSocket connections past --ws-max-connections, oversized client messages and request bodies are refused and counted', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--ws-max-connections', '1'] })
  const first = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)
  await first.next((m) => m.type === 'snapshot', 'snapshot')
  await assert.rejects(Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`), (err: { statusCode?: number }) => err.statusCode === 503)
  const m = parsePrometheus(await (await fetch(`${master.api}/metrics`)).text())
  assert.equal(promValue(m, 'cloudai_ws_refused_total'), 1)
  first.ws.close()
  await first.closed
  // The slot is free again.
  await waitUntil(async () => promValue(parsePrometheus(await (await fetch(`${master.api}/metrics`)).text()), 'cloudai_ws_connections') === 0, 'the first connection gone')
  const again = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`)
  await again.next((m2) => m2.type === 'snapshot', 'snapshot on the freed slot')

  // A client message over 16 KiB: uWS cuts the connection (1009 on its side).
  again.ws.send(JSON.stringify({ type: 'subscribe', topics: ['x'.repeat(20_000)] }))
  assert.ok([1006, 1009].includes((await again.closed).code), 'uWS cuts the connection')
  // A request body over 1 MiB is a 413 with its code. The answer goes out while fetch is still
  // sending; the master reads and drops the rest (2 MiB is within its 4 MiB drain) before it
  // closes, so fetch gets the answer, not a reset (write EPIPE when the master closed at once).
  // test/unit/http-linger.test.ts pins that down on a raw socket.
  const big = await fetch(`${master.api}/api/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: 'x'.repeat(2 * 1024 * 1024) }) })
  assert.equal(big.status, 413)
  assert.equal(big.headers.get('connection'), 'close', 'the master closes this connection after the body')
  assert.equal(((await big.json()) as { error: { code: string } }).error.code, 'CLOUDAI_BODY_TOO_LARGE')
  const after = parsePrometheus(await (await fetch(`${master.api}/metrics`)).text())
  assert.equal(promValue(after, 'cloudai_ws_message_too_large_total'), 1)
  assert.equal(promValue(after, 'cloudai_http_body_too_large_total'), 1)
})
