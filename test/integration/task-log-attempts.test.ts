import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import { api, CLI, childCwd, childEnv, FAST_MASTER_FLAGS, reservePort, startMaster, startWorker, tempDir, waitUntil } from '../support/cluster.js'
import { cluster, lines, ndjson, register, sse, SLOW, submit } from '../support/task-logs.js'

// Task logs across a task's attempts and across feeds, with real processes: a follow goes on
// while the task does (a run that ends on its worker is not the task's end), and a line keeps its
// number whichever feed serves it (a reader resuming later, a stored tail). The rest of the
// route: task-logs.test.ts.

/** The README's numbering: line k of placement A is (A - 1) * ATTEMPT_SPAN + k. */
const ATTEMPT_SPAN = 1_000_000_000

test('a follower of a task whose worker is killed and restarted mid-task gets the first attempt\'s lines, a notice, then the whole rerun in its placement\'s numbers, the same for a reader that resumes later on a new feed', async (t) => {
  const dataDir = tempDir(t)
  const { master, workerPort, worker } = await cluster(t, dataDir)
  const id = await submit(master.api, SLOW(10, 0))
  let killed = false
  const events = await ndjson(master.api, id, '?follow=1', async (e) => {
    if (e.seq === 3 && !killed) {
      killed = true
      await worker.kill('SIGKILL')
      await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${master.grpcPort}`, dataDir, name: 'w1-again' })
    }
  })
  const attempt = (await api(master.api, `/api/tasks/${id}`)).body.attempt as number
  assert.ok(attempt >= 2)
  const base = (attempt - 1) * ATTEMPT_SPAN
  const got = lines(events)
  const notice = got.findIndex((e) => e.stream === 'cloudai')
  assert.ok(notice >= 3, JSON.stringify(got))
  assert.deepEqual(got.slice(0, notice).map((e) => [e.seq, e.text]), Array.from({ length: notice }, (_, i) => [i + 1, `line-${i + 1}`]))
  assert.deepEqual([got[notice]!.seq, got[notice]!.text], [base, `attempt ${attempt} of the task starts; its output follows`])
  const rerun = got.slice(notice + 1)
  assert.deepEqual(rerun.map((e) => [e.seq, e.text]), Array.from({ length: 10 }, (_, i) => [base + i + 1, `line-${i + 1}`]))
  assert.deepEqual(events.at(-1), { type: 'end', seq: base + 11, complete: true, status: 'completed', exit_code: 0 })
  // The follower has gone, and its feed with it: a reader resuming from the rerun's 5th line gets
  // a feed opened afresh, which knows only the rerun, and exactly the rest.
  const rest = await sse(master.api, id, '', { 'last-event-id': String(base + 5) })
  assert.deepEqual(rest.filter((e) => e.event === 'message').map((e) => [e.data.seq, e.data.text]), Array.from({ length: 5 }, (_, i) => [base + i + 6, `line-${i + 6}`]))
  assert.equal(rest.at(-1)!.event, 'end')
})

test('a follower across a graceful worker restart mid-task (its run ends cancelled) follows the rerun and ends with the task\'s final exit code', async (t) => {
  const dataDir = tempDir(t)
  const { master, workerPort, worker } = await cluster(t, dataDir)
  const id = await submit(master.api, SLOW(10, 7))
  const cli = spawn(process.execPath, [CLI, 'logs', id, '-f', '--api', master.api], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => cli.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  cli.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  cli.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => cli.once('exit', resolve))
  let restarted = false
  const events = await ndjson(master.api, id, '?follow=1', async (e) => {
    if (e.seq === 3 && !restarted) {
      restarted = true
      // SIGTERM: the worker cancels its task (a `cancelled` end chunk) and reports it; the master requeues it.
      await worker.kill('SIGTERM')
      await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${master.grpcPort}`, dataDir, name: 'w1-again' })
    }
  })
  const task = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(task.status, 'failed')
  assert.ok(task.attempt >= 2)
  const base = (task.attempt - 1) * ATTEMPT_SPAN
  const got = lines(events)
  const notice = got.findIndex((e) => e.stream === 'cloudai')
  assert.ok(notice >= 3, JSON.stringify(events))
  assert.deepEqual(got.slice(notice + 1).map((e) => [e.seq, e.text]), Array.from({ length: 10 }, (_, i) => [base + i + 1, `line-${i + 1}`]))
  assert.deepEqual(events.at(-1), { type: 'end', seq: base + 11, complete: true, status: 'failed', exit_code: 7 })
  assert.equal(await exited, 7, stderr)
  assert.ok(stdout.endsWith(Array.from({ length: 10 }, (_, i) => `line-${i + 1}\n`).join('')), stdout)
  assert.match(stderr, /attempt \d+ of the task starts/)
})

test('a finished task whose worker is gone is numbered from the output the master kept so that it ends at the worker\'s last line: a resume gets exactly the rest, a new reader a gap first', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--task-output-tail', '1KiB'] })
  const port = await reservePort()
  await register(master, port)
  const worker = await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}` })
  await waitUntil(async () => (await api(master.api, '/api/workers/w1')).body?.is_active === true, 'w1 active')
  // ~3 KB of output: more than the 1 KiB the master keeps.
  const id = await submit(master.api, `awk 'BEGIN { for (i = 1; i <= 100; i++) printf "line-%d %020d\\n", i, 0 }'; exit 2`)
  const followed = await ndjson(master.api, id, '?follow=1')
  assert.equal(lines(followed).length, 100)
  await worker.kill('SIGKILL')
  await waitUntil(async () => (await api(master.api, '/api/workers/w1')).body?.is_active === false, 'w1 inactive')
  const rest = await sse(master.api, id, '', { 'last-event-id': '95' })
  assert.deepEqual(rest.filter((e) => e.event === 'message').map((e) => [e.data.seq, e.data.text]), Array.from({ length: 5 }, (_, i) => [96 + i, `line-${96 + i} ${'0'.repeat(20)}`]))
  assert.deepEqual(rest.at(-1)!.data, { type: 'end', seq: 101, complete: true, status: 'failed', exit_code: 2 })
  const fresh = await ndjson(master.api, id, '')
  const kept = lines(fresh)
  assert.ok(kept.length > 10 && kept.length < 100, String(kept.length))
  assert.deepEqual(fresh[0], { type: 'gap', seq: 1, missed: 100 - kept.length })
  assert.deepEqual(kept.slice(1).map((e) => e.seq), Array.from({ length: kept.length - 1 }, (_, i) => 101 - kept.length + 1 + i))
  assert.ok(kept.slice(1).every((e) => e.text === `line-${e.seq} ${'0'.repeat(20)}`), 'each line under its own number')
})
