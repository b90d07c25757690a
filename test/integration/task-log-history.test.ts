import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { api, FAST_MASTER_FLAGS, reservePort, runCli, startMaster, startWorker, taskFinished, tempDir, waitUntil } from '../support/cluster.js'
import { cluster, lines, ndjson, register, sse, submit } from '../support/task-logs.js'

// A task's output by time (`since`) and after the fact: from a master that was restarted when the
// task's worker is gone for good, numbered as its worker numbered it. Real processes.

test('since (a duration back from now or an RFC 3339 time) sends only the lines from that time on, over the API and with cloudai logs --since', async (t) => {
  const { master } = await cluster(t)
  const go = join(tempDir(t), 'go')
  const id = await submit(master.api, `echo old-1; echo old-2; echo old-3; while [ ! -e ${go} ]; do sleep 0.05; done; echo new-1; echo new-2`)
  const old = await waitUntil(async () => {
    const got = lines(await ndjson(master.api, id, '?tail=3'))
    return got.length === 3 ? got : undefined
  }, 'the three old lines')
  // A time after the old lines' (the worker's clock is this machine's), then the new lines.
  const lastOld = Math.max(...old.map((e) => Date.parse((e as { timestamp?: string }).timestamp!)))
  await waitUntil(() => Date.now() > lastOld + 5 || undefined, 'a millisecond after the old lines')
  const cut = new Date(Date.now()).toISOString()
  await waitUntil(() => Date.now() > Date.parse(cut) + 5 || undefined, 'a millisecond after the cut')
  writeFileSync(go, '')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })

  const byTime = await ndjson(master.api, id, `?since=${encodeURIComponent(cut)}`)
  assert.deepEqual(lines(byTime).map((e) => [e.seq, e.text]), [[4, 'new-1'], [5, 'new-2']])
  assert.deepEqual(byTime.at(-1), { type: 'end', seq: 6, complete: true, status: 'completed', exit_code: 0 })
  // SSE too, and with Last-Event-ID beside it (a resume keeps the URL's since).
  const resumed = await sse(master.api, id, `?since=${encodeURIComponent(cut)}`, { 'last-event-id': '4' })
  assert.deepEqual(resumed.filter((e) => e.event === 'message').map((e) => e.data.text), ['new-2'])
  assert.deepEqual(lines(await ndjson(master.api, id, '?since=1h')).map((e) => e.text), ['old-1', 'old-2', 'old-3', 'new-1', 'new-2'])
  const future = new Date(Date.now() + 3_600_000).toISOString()
  assert.deepEqual(lines(await ndjson(master.api, id, `?since=${encodeURIComponent(future)}`)), [])

  const cli = await runCli(['logs', id, '--since', cut, '--api', master.api])
  assert.equal(cli.code, 0, cli.stderr)
  assert.equal(cli.stdout, 'new-1\nnew-2\n')
  const all = await runCli(['logs', id, '-f', '--since', '10m', '--api', master.api])
  assert.equal(all.code, 0, all.stderr)
  assert.equal(all.stdout, 'old-1\nold-2\nold-3\nnew-1\nnew-2\n')
  const bad = await runCli(['logs', id, '--since', '10', '--api', master.api])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /--since "10" is not a time: use a duration back from now \(90s, 10m, 2h, 1d\) or an RFC 3339 time.*--after 10/s)
  const refused = await api(master.api, `/api/tasks/${id}/logs?since=2026-02-31T00:00:00Z`)
  assert.equal(refused.status, 400)
  assert.equal(refused.body.error.code, 'CLOUDAI_BAD_REQUEST')
  assert.match(refused.body.error.message, /since "2026-02-31T00:00:00Z" is not a time/)
})

test('a finished task whose worker is gone for good is served by a restarted master with the ids it had before, so a Last-Event-ID resume gets exactly the rest', async (t) => {
  const dataDir = tempDir(t)
  const grpcPort = await reservePort()
  // The master keeps 1 KiB of each task's output: far fewer lines than the task printed.
  const flags = [...FAST_MASTER_FLAGS, '--task-output-tail', '1KiB']
  const first = await startMaster(t, { dataDir, grpcPort, args: flags })
  const workerPort = await reservePort()
  await register(first, workerPort)
  const worker = await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${grpcPort}` })
  await waitUntil(async () => (await api(first.api, '/api/workers/w1')).body?.is_active === true, 'w1 active')
  const id = await submit(first.api, `for i in $(seq 1 300); do echo line-$i; done; exit 3`)
  await first.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  const before = await sse(first.api, id, '')
  const ids = new Map(before.filter((e) => e.event === 'message').map((e) => [e.data.text!, e.id]))
  assert.equal(ids.size, 300)
  assert.equal(ids.get('line-300'), '300')

  await worker.kill('SIGKILL') // for good
  await first.proc.kill('SIGKILL')
  const second = await startMaster(t, { dataDir, grpcPort, args: flags, name: 'master-again' })
  const after = await sse(second.api, id, '?follow=1')
  const kept = after.filter((e) => e.event === 'message')
  assert.ok(kept.length > 10 && kept.length < 300, `the master kept the last lines only (${kept.length})`)
  assert.equal(kept.at(-1)!.data.text, 'line-300')
  // Every line kept is a whole line under its own id: the 1 KiB cut falls on a line boundary.
  for (const e of kept) assert.equal(e.id, ids.get(e.data.text!), `${e.data.text} keeps its id`)
  assert.deepEqual(after.at(-1)!.data, { type: 'end', seq: 301, complete: true, status: 'failed', exit_code: 3 })

  // A reader that had up to line 290 before the restart gets 291..300, once each.
  const rest = await sse(second.api, id, '?follow=1', { 'last-event-id': '290' })
  assert.deepEqual(rest.filter((e) => e.event === 'message').map((e) => [e.id, e.data.text]), Array.from({ length: 10 }, (_, i) => [String(291 + i), `line-${291 + i}`]))
  assert.equal(rest.at(-1)!.id, 'end')
})
