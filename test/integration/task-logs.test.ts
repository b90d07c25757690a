import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { join } from 'node:path'
import { before, test, type TestContext } from 'node:test'
import { api, CLI, childCwd, childEnv, msgHas, reservePort, runCli, startMaster, startWorker, taskFinished, tempDir, waitUntil, type MasterHandle } from '../support/cluster.js'
import { startCloudaiWorker } from '../support/cloudai-peers.js'
import { cluster, lines, ndjson, register, sse, SLOW, submit, type Ev } from '../support/task-logs.js'

// Live task logs through the master: GET /api/tasks/{id}/logs (SSE and NDJSON) and
// `cloudai logs`, with real processes. Tasks print numbered lines slowly so that readers see them
// while the task runs. The worker's own StreamTaskLogs: worker-task-logs.test.ts.
//
// The tests that only submit tasks and read them share one master and worker (`shared`), each
// with tasks of its own (a master and a worker per test were most of this file's time); those
// that kill, restart or configure a process start their own.

let shared: Awaited<ReturnType<typeof cluster>>
// A top-level hook's context is the file's root test (its after() runs once every test is done).
before(async (t) => {
  shared = await cluster(t as TestContext)
})

test('following a running task gets its lines in order while it runs, numbered without a gap or a repeat, and ends with its exit code', async (t) => {
  const { master } = shared
  const id = await submit(master.api, SLOW(20, 3))
  const arrivedWhileRunning: number[] = []
  const events = await ndjson(master.api, id, '?follow=1', async (e) => {
    if (e.type === 'line' && e.seq === 2) {
      const task = (await api(master.api, `/api/tasks/${id}`)).body
      if (task.status === 'running' || task.status === 'assigned') arrivedWhileRunning.push(e.seq)
    }
  })
  const got = lines(events)
  assert.deepEqual(got.map((e) => e.text), Array.from({ length: 20 }, (_, i) => `line-${i + 1}`))
  assert.deepEqual(got.map((e) => e.seq), Array.from({ length: 20 }, (_, i) => i + 1))
  assert.ok(got.every((e) => e.stream === 'stdout'))
  assert.deepEqual(arrivedWhileRunning, [2], 'line 2 arrived while the task was still running')
  assert.deepEqual(events.at(-1), { type: 'end', seq: 21, complete: true, status: 'failed', exit_code: 3 })
})

test('a reader asking for lines the worker no longer keeps gets a gap saying how many, then every line after it', async (t) => {
  const { master } = shared
  // ~2.6 MB of lines: more than the 1 MiB the worker keeps.
  const id = await submit(master.api, `awk 'BEGIN { for (i = 1; i <= 20000; i++) printf "line-%d %0100d\\n", i, 0 }'`)
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  const events = await ndjson(master.api, id, '')
  const gap = events[0]!
  assert.equal(gap.type, 'gap')
  assert.equal(gap.seq, 1)
  const got = lines(events)
  assert.equal(got[0]!.seq, 1 + gap.missed!)
  assert.ok(got.every((e, i) => e.seq === got[0]!.seq + i && e.text!.startsWith(`line-${e.seq} `)), 'contiguous after the gap')
  assert.equal(got.at(-1)!.seq, 20000)
  assert.equal(events.at(-1)!.type, 'end')
})

test('an HTTP reader of a task that has printed nothing yet has its answer at once, and loses no line while it does not read', async (t) => {
  const { master } = shared
  const go = join(tempDir(t), 'go')
  const id = await submit(master.api, `while [ ! -e ${go} ]; do sleep 0.05; done; awk 'BEGIN { for (i = 1; i <= 4000; i++) printf "line-%d %0120d\\n", i, 0 }'`)
  await waitUntil(async () => (await api(master.api, `/api/tasks/${id}`)).body.status === 'running', 'task running')
  // The task prints nothing until the file is there: the answer must not wait for a first line
  // (nor for the 15 s keepalive).
  const res = await fetch(`${master.api}/api/tasks/${id}/logs?follow=1`, { headers: { accept: 'application/x-ndjson' }, signal: AbortSignal.timeout(10_000) })
  assert.equal(res.status, 200)
  writeFileSync(go, '')
  // Not a byte read until the task is over: the master's writes back up behind this connection
  // (~770 KB of lines: within what the master keeps, so waiting costs no line).
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  const events = (await res.text()).split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Ev)
  const got = lines(events)
  assert.equal(events.filter((e) => e.type === 'gap').length, 0)
  assert.equal(got.length, 4000)
  assert.ok(got.every((e, i) => e.seq === i + 1 && e.text!.startsWith(`line-${i + 1} `)), 'every line, in order')
  assert.equal(events.at(-1)!.type, 'end')
})

test('three readers following one task share one upstream stream and each gets every line', async (t) => {
  const { master, worker } = shared
  const id = await submit(master.api, SLOW(10))
  const [a, b, c] = await Promise.all([ndjson(master.api, id, '?follow=1'), ndjson(master.api, id, '?follow=true'), sse(master.api, id, '?follow=1')])
  assert.equal(worker.lines.filter((l) => l.taskId === id && typeof l.msg === 'string' && l.msg.startsWith('StreamTaskLogs for task')).length, 1, 'one upstream for three readers')
  assert.deepEqual(c!.filter((e) => e.event === 'message').map((e) => e.data.seq), Array.from({ length: 10 }, (_, i) => i + 1))
  assert.deepEqual(lines(a!).map((e) => e.seq), Array.from({ length: 10 }, (_, i) => i + 1))
  assert.deepEqual(lines(b!).map((e) => e.seq), Array.from({ length: 10 }, (_, i) => i + 1))
  assert.equal(a!.at(-1)!.exit_code, 0)
})

test('SSE: id is the sequence number; Last-Event-ID resumes with exactly the rest; tail gives the last lines; a finished task answers at once', async (t) => {
  const { master } = shared
  const id = await submit(master.api, 'for i in $(seq 1 12); do echo line-$i; done; echo oops >&2; exit 0')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  const all = await sse(master.api, id, '')
  assert.deepEqual(all.filter((e) => e.event === 'message').map((e) => e.id), Array.from({ length: 13 }, (_, i) => String(i + 1)))
  // stdout and stderr are two pipes: their order is the order the worker read them in.
  const texts = all.filter((e) => e.event === 'message').map((e) => e.data.text)
  assert.deepEqual([...texts].sort(), ['oops', ...Array.from({ length: 12 }, (_, i) => `line-${i + 1}`)].sort())
  assert.equal(all.find((e) => e.data.text === 'oops')!.data.stream, 'stderr')
  assert.deepEqual(all.at(-1), { id: 'end', event: 'end', data: { type: 'end', seq: 14, complete: true, status: 'completed', exit_code: 0 } })

  const rest = await sse(master.api, id, '', { 'last-event-id': '9' })
  assert.deepEqual(rest.filter((e) => e.event === 'message').map((e) => e.data.seq), [10, 11, 12, 13])
  const after = await ndjson(master.api, id, '?after=11')
  assert.deepEqual(lines(after).map((e) => e.seq), [12, 13])
  const tail = await ndjson(master.api, id, '?tail=3')
  assert.deepEqual(lines(tail).map((e) => e.text), texts.slice(-3))
})

test('a reader that does not follow a running task gets the lines there now and an end that says it still runs', async (t) => {
  const { master } = shared
  const id = await submit(master.api, 'echo first; echo second; sleep 30')
  await waitUntil(async () => (await ndjson(master.api, id, '')).filter((e) => e.type === 'line').length === 2 || undefined, 'two lines', 15_000)
  const events = await ndjson(master.api, id, '?tail=1')
  assert.deepEqual(lines(events).map((e) => e.text), ['second'])
  assert.deepEqual(events.at(-1), { type: 'end', seq: 3, complete: false, status: 'running', exit_code: null })
  await api(master.api, `/api/tasks/${id}`, { method: 'DELETE' })
})

test('a reader that resumes with Last-Event-ID after the master was killed and restarted gets exactly the rest', async (t) => {
  const dataDir = tempDir(t)
  const grpcPort = await reservePort()
  const first = await startMaster(t, { dataDir, grpcPort })
  const workerPort = await reservePort()
  await register(first, workerPort)
  const worker = await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${grpcPort}` })
  await waitUntil(async () => (await api(first.api, '/api/workers/w1')).body?.is_active === true, 'w1 active')
  const id = await submit(first.api, SLOW(30, 6))
  const before: Ev[] = []
  await ndjson(first.api, id, '?follow=1', async (e) => {
    before.push(e)
    if (e.seq === 5) await first.proc.kill('SIGKILL')
  }).catch(() => {}) // the connection dies with the master
  // The kill lands after line 5; a line that was already in the same read may come too.
  const seen = lines(before).map((e) => e.seq)
  assert.deepEqual(seen.slice(0, 5), [1, 2, 3, 4, 5])
  assert.deepEqual(seen, Array.from({ length: seen.length }, (_, i) => i + 1), 'in order, none twice')
  const last = seen.at(-1)!
  const mark = worker.mark()
  // Its HTTP port is another: the first one's closed connections hold the old one for a while
  // (TIME_WAIT). What is tested is that a new master process resumes by sequence number.
  const second = await startMaster(t, { dataDir, grpcPort, name: 'master-again' })
  await worker.waitForLog(msgHas('Registered with master'), 'w1 registered again', { from: mark })
  const rest = await sse(second.api, id, '?follow=1', { 'last-event-id': String(last) })
  assert.deepEqual(rest.filter((e) => e.event === 'message').map((e) => e.data.seq), Array.from({ length: 30 - last }, (_, i) => i + last + 1))
  assert.deepEqual(rest.at(-1)!.data, { type: 'end', seq: 31, complete: true, status: 'failed', exit_code: 6 })
})

test('SSE: Last-Event-ID wins over the URL\'s after (an EventSource reconnects to the URL it was opened with), and a resume after the end event is answered 204', async (t) => {
  const { master } = shared
  const id = await submit(master.api, 'for i in $(seq 1 6); do echo line-$i; done')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  const resumed = await sse(master.api, id, '?after=1', { 'last-event-id': '4' })
  assert.deepEqual(resumed.filter((e) => e.event === 'message').map((e) => e.data.seq), [5, 6])
  assert.equal(resumed.at(-1)!.id, 'end')
  const after = await fetch(`${master.api}/api/tasks/${id}/logs?after=1`, { headers: { 'last-event-id': 'end' } })
  assert.equal(after.status, 204)
  assert.equal(await after.text(), '')
})

test('a CloudAI worker\'s StreamTaskLogs (lines without numbers or streams) is numbered by the master and ends with its status', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const peer = await startCloudaiWorker(t, 'cloudai-w1')
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'cloudai-w1', worker_ip: `127.0.0.1:${peer.port}` } })).status, 201)
  await peer.until(() => peer.heartbeatsAcked > 0, 'a heartbeat accepted')
  const id = await submit(master.api, SLOW(5, 1))
  const events = await ndjson(master.api, id, '?follow=1')
  assert.deepEqual(lines(events).map((e) => [e.seq, e.stream, e.text]), Array.from({ length: 5 }, (_, i) => [i + 1, 'output', `line-${i + 1}`]))
  assert.deepEqual(events.at(-1), { type: 'end', seq: 6, complete: true, status: 'failed', exit_code: null })
})

test('a finished task whose worker is gone is served at once from the output the master kept', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  await register(master, port)
  const worker = await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}` })
  const id = await submit(master.api, 'echo kept-1; echo kept-2; exit 4')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  await worker.kill('SIGKILL')
  await waitUntil(async () => (await api(master.api, '/api/workers/w1')).body?.is_active === false, 'w1 inactive')
  const events = await ndjson(master.api, id, '?follow=1')
  assert.deepEqual(lines(events).map((e) => e.text), ['kept-1', 'kept-2'])
  assert.deepEqual(events.at(-1), { type: 'end', seq: 3, complete: true, status: 'failed', exit_code: 4 })
})

test('bad log requests are refused with the API error format and stable codes', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const id = await submit(master.api, 'true')
  const cases: [string, number, string][] = [
    [`/api/tasks/${id}/logs?tail=abc`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?tail=0`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?after=-1`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?since=10`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?since=tomorrow`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?follow=maybe`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?lines=3`, 400, 'CLOUDAI_BAD_REQUEST'],
    [`/api/tasks/${id}/logs?tail=1&tail=2`, 400, 'CLOUDAI_BAD_REQUEST'],
    ['/api/tasks/task-00000000-0000-0000-0000-000000000000/logs', 404, 'CLOUDAI_UNKNOWN_TASK'],
    ['/api/tasks/not%20a%20task/logs', 400, 'CLOUDAI_BAD_TASK_ID'],
  ]
  for (const [path, status, code] of cases) {
    const res = await api(master.api, path)
    assert.equal(res.status, status, path)
    assert.equal(res.body.error.code, code, path)
  }
  const bad = await fetch(`${master.api}/api/tasks/${id}/logs`, { headers: { 'last-event-id': 'x1' } })
  assert.equal(bad.status, 400)
  assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'CLOUDAI_BAD_REQUEST')
})

test('the logs route needs the API token when the master has one, and serves with it', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), env: { CLOUDAI_API_TOKEN: 'secret-token-0123456789' } })
  const res = await fetch(`${master.api}/api/tasks/task-00000000-0000-0000-0000-000000000000/logs`)
  assert.equal(res.status, 401)
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'CLOUDAI_UNAUTHORIZED')
  const authorized = await fetch(`${master.api}/api/tasks/task-00000000-0000-0000-0000-000000000000/logs`, { headers: { authorization: 'Bearer secret-token-0123456789' } })
  assert.equal(authorized.status, 404)
  assert.equal(((await authorized.json()) as { error: { code: string } }).error.code, 'CLOUDAI_UNKNOWN_TASK')
})

test('cli: cloudai logs -f prints the lines as they come and exits with the task\'s exit code', async (t) => {
  const { master } = shared
  const id = await submit(master.api, SLOW(8, 5))
  const res = await runCli(['logs', id.slice(0, 13), '-f', '--api', master.api])
  assert.equal(res.code, 5, res.stderr)
  assert.equal(res.stdout, Array.from({ length: 8 }, (_, i) => `line-${i + 1}\n`).join(''))
  // Without -f: what is there, exit code 0.
  const tail = await runCli(['logs', id, '--tail', '2', '--timestamps', '--api', master.api])
  assert.equal(tail.code, 0, tail.stderr)
  assert.match(tail.stdout, /^\d{4}-\d\d-\d\dT[\d:.]+Z line-7\n\d{4}-\d\d-\d\dT[\d:.]+Z line-8\n$/)
  const bad = await runCli(['logs', id, '--tail', 'many', '--api', master.api])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /--tail/)
})

/**
 * `cloudai logs -f` (with `args`) through a proxy to the master, of a task that prints lines 1 to
 * 4, waits for the test's word, then prints 5 to 15. Once line 4 is printed, `atLine4` gets the
 * proxy's connections as they are then (to cut or to silence), and the task goes on. Lines 5 on
 * wait for that: on a loaded machine they could otherwise all be in the CLI's socket buffer before
 * it even reads line 4, and nothing would be left to reconnect for.
 */
async function followThroughProxy(t: TestContext, master: MasterHandle, args: string[], atLine4: (conns: Connections) => void): Promise<{ code: number | null; stdout: string; stderr: string; reached: boolean }> {
  const open = new Set<{ client: Socket; upstream: Socket }>()
  const silenced = new Set<Socket>()
  const proxy = createServer((client) => {
    const upstream = connect(master.httpPort, '127.0.0.1')
    const conn = { client, upstream }
    open.add(conn)
    client.pipe(upstream)
    // A silenced connection's answers are read and dropped, and nothing is closed.
    upstream.on('data', (d: Buffer) => {
      if (!silenced.has(client)) client.write(d)
    })
    const drop = (): void => {
      open.delete(conn)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.after(() => proxy.close())
  const port = (proxy.address() as AddressInfo).port
  const go = join(tempDir(t), 'go')
  const id = await submit(master.api, `for i in 1 2 3 4; do echo line-$i; done; while [ ! -e ${go} ]; do sleep 0.05; done; for i in $(seq 5 15); do echo line-$i; sleep 0.02; done`)
  const cli = spawn(process.execPath, [CLI, 'logs', id, '-f', ...args, '--api', `http://127.0.0.1:${port}`], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => cli.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  cli.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => cli.once('exit', resolve))
  let reached = false
  cli.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
    if (!reached && stdout.includes('line-4\n')) {
      reached = true
      const now = [...open]
      atLine4({
        cut: () => {
          for (const c of now) {
            c.client.destroy()
            c.upstream.destroy()
          }
        },
        silence: () => now.forEach((c) => silenced.add(c.client)),
      })
      writeFileSync(go, '')
    }
  })
  return { code: await exited, stdout, stderr, reached }
}

interface Connections {
  cut(): void
  silence(): void
}

const FIFTEEN_LINES = Array.from({ length: 15 }, (_, i) => `line-${i + 1}\n`).join('')

test('cli: cloudai logs -f reconnects by itself after a lost connection and prints every line once', async (t) => {
  const res = await followThroughProxy(t, shared.master, [], (conns) => conns.cut())
  assert.equal(res.code, 0, res.stderr)
  assert.ok(res.reached)
  assert.match(res.stderr, /reconnecting from line \d+/)
  assert.equal(res.stdout, FIFTEEN_LINES)
})

test('cli: cloudai logs -f on a link that goes silent (no FIN, no keepalive) counts it lost after --idle-timeout, reconnects, and prints every line once', async (t) => {
  // Silenced, not cut: a cut link, or a master stopped dead, as the reader sees it.
  const res = await followThroughProxy(t, shared.master, ['--idle-timeout', '1s'], (conns) => conns.silence())
  assert.equal(res.code, 0, res.stderr)
  assert.ok(res.reached)
  assert.match(res.stderr, /nothing from the master for 1s, not even its keepalive \(every 15s\)/)
  assert.match(res.stderr, /reconnecting from line 5/)
  assert.equal(res.stdout, FIFTEEN_LINES)
})

test('cli: cloudai logs --tail N -f whose first connection is lost before any line came asks for the same last lines again', async (t) => {
  const { master } = shared
  const go = join(tempDir(t), 'go')
  const id = await submit(master.api, `for i in $(seq 1 6); do echo line-$i; done; while [ ! -e ${go} ]; do sleep 0.05; done; echo line-7`)
  await waitUntil(async () => lines(await ndjson(master.api, id, '')).length === 6 || undefined, 'six lines printed')
  // A proxy whose first connection passes the answer's headers and nothing after them: the CLI is
  // connected, has seen no line, and reconnects.
  let first = true
  const proxy = createServer((client) => {
    const upstream = connect(master.httpPort, '127.0.0.1')
    const cutAfterHeaders = first
    first = false
    const drop = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.pipe(upstream)
    let head: Buffer | null = Buffer.alloc(0)
    upstream.on('data', (d: Buffer) => {
      if (!cutAfterHeaders) return void client.write(d)
      if (head === null) return
      head = Buffer.concat([head, d])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) return
      client.end(head.subarray(0, end + 4), drop)
      head = null
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.after(() => proxy.close())
  const port = (proxy.address() as AddressInfo).port
  const cli = spawn(process.execPath, [CLI, 'logs', id, '--tail', '2', '-f', '--api', `http://127.0.0.1:${port}`], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => cli.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  cli.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => cli.once('exit', resolve))
  cli.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
    if (stdout.includes('line-6\n')) writeFileSync(go, '')
  })
  assert.equal(await exited, 0, stderr)
  assert.match(stderr, /connection to the master lost/)
  assert.equal(stdout, 'line-5\nline-6\nline-7\n')
})
