import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { api, registerWorker, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil } from '../support/cluster.js'
import { client, cluster, collect, lines, ndjson, register, streamLogs, submit } from '../support/task-logs.js'

// The worker's StreamTaskLogs, called directly and through its master: CloudAI's not_found, the
// master's proof, flow control, and a finished task's lines after a restart.

test('worker: a task it does not have gets CloudAI\'s last chunk with status not_found', async (t) => {
  const port = await reservePort()
  await startWorker(t, 'w1', port)
  const { chunks, status } = await collect(streamLogs(client(t, port), { task_id: 'task-nope', follow: true }))
  assert.equal(status.code, grpc.status.OK)
  assert.equal(chunks.length, 1)
  assert.equal(chunks[0]!.is_complete, true)
  assert.equal(chunks[0]!.status, 'not_found')
})

test('worker: a worker with a token serves its master, which proves itself on StreamTaskLogs', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  const token = await registerWorker(master.api, 'w1', `127.0.0.1:${port}`)
  await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}`, token })
  const id = await submit(master.api, 'echo proven; exit 0')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  const events = await ndjson(master.api, id, '?follow=1')
  assert.deepEqual(lines(events).map((e) => [e.seq, e.stream, e.text]), [[1, 'stdout', 'proven']])
  assert.deepEqual(events.at(-1), { type: 'end', seq: 2, complete: true, status: 'completed', exit_code: 0 })
})

test('worker: StreamTaskLogs without its master\'s proof is refused', async (t) => {
  const port = await reservePort()
  await startWorker(t, 'w1', port, { token: `cwt1_${'A'.repeat(43)}` })
  const { chunks, status } = await collect(streamLogs(client(t, port), { task_id: 'task-any', follow: true }))
  assert.equal(status.code, grpc.status.UNAUTHENTICATED)
  assert.equal(status.metadata.get('cloudai-error-code')[0], 'CLOUDAI_MASTER_PROOF_REQUIRED')
  assert.equal(chunks.length, 0)
})

test('worker: a reader that does not read for a while loses no line (flow control, not dropping)', async (t) => {
  const { master, workerPort } = await cluster(t)
  // ~600 KB of output in a burst: far more than a gRPC window, less than what the worker keeps.
  const go = join(tempDir(t), 'go')
  const id = await submit(master.api, `while [ ! -e ${go} ]; do sleep 0.05; done; awk 'BEGIN { for (i = 1; i <= 6000; i++) printf "line-%d %090d\\n", i, 0 }'`)
  await waitUntil(async () => (await api(master.api, `/api/tasks/${id}`)).body.status === 'running', 'task running')
  const call = streamLogs(client(t, workerPort), { task_id: id, follow: true, from_seq: 1 })
  const done = collect(call)
  call.pause()
  writeFileSync(go, '')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  call.resume()
  const { chunks, status } = await done
  assert.equal(status.code, grpc.status.OK)
  const got = chunks.filter((c) => c.stream !== '')
  assert.equal(got.length, 6000)
  assert.ok(got.every((c, i) => Number(c.seq) === i + 1 && c.content.startsWith(`line-${i + 1} `)), 'every line, in order')
  assert.equal(chunks.filter((c) => c.gap).length, 0)
  const last = chunks.at(-1)!
  assert.equal(last.is_complete, true)
  assert.equal(last.status, 'success')
  assert.equal(last.has_exit_code, true)
})

test('worker: a restarted worker still serves a finished task\'s numbered lines from its task directory', async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  await register(master, port)
  const worker = await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}`, dataDir })
  const id = await submit(master.api, 'echo a; echo b; echo c; exit 2')
  await master.proc.waitForLog(taskFinished(id), 'task finished', { from: 0 })
  await worker.kill('SIGKILL')
  await startWorker(t, 'w1', port, { dataDir, name: 'w1-again' })
  const { chunks } = await collect(streamLogs(client(t, port), { task_id: id, tail: 2 }))
  assert.deepEqual(chunks.map((c) => [Number(c.seq), c.stream, c.content]), [[2, 'stdout', 'b'], [3, 'stdout', 'c'], [4, '', '']])
  assert.equal(chunks.at(-1)!.is_complete, true)
  assert.equal(chunks.at(-1)!.exit_code, 2)
})
