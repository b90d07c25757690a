import assert from 'node:assert/strict'
import { test } from 'node:test'
import { FAST_MASTER_FLAGS, msgHas, Proc, reservePort, runCli, startMaster, startWorker, tempDir, waitUntil } from '../support/cluster.js'

// The CLI's live commands against a real master: `watch` and `register --wait`.

test('watch shows workers and tasks as they change; register --wait returns once the worker is active', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS] })
  const watch = new Proc('watch', ['watch', '--api', master.api])
  t.after(() => watch.kill('SIGKILL'))
  await watch.waitForLog(msgHas('watching: 0 workers (0 active, 0 inactive), tasks: none'), 'the snapshot line')

  const port = await reservePort()
  const registering = runCli(['register', 'w1', `127.0.0.1:${port}`, '--wait', '--timeout', '30s', '--api', master.api])
  await watch.waitForLog(msgHas('+ w1 registered at 127.0.0.1:'), 'the registration on the watch')
  await startWorker(t, 'w1', port)
  const registered = await registering
  assert.equal(registered.code, 0, registered.stderr)
  assert.match(registered.stdout, /^✅ Worker w1 registered \(offline, will reconnect automatically\)\nToken: cwt1_\S{43}\n   Shown once.*\n   cloudai worker --id w1 --token-file <file>.*\n✅ Worker w1 is active\n$/)
  await watch.waitForLog((l) => /^\d\d:\d\d:\d\d {2}● w1 active$/.test(l.msg), 'w1 active on the watch')

  const submitted = await runCli(['task', 'submit', '--api', master.api, '--json', '--', 'echo watched'])
  const id = JSON.parse(submitted.stdout).task_id as string
  await watch.waitForLog(msgHas(`task ${id} completed on w1 (exit 0)`), 'the task completed on the watch')
  for (const state of ['queued', 'assigned to w1', 'running on w1']) assert.ok(watch.has(msgHas(`task ${id} ${state}`)), state)
  assert.ok(!watch.has(msgHas('cpu ')), 'no telemetry without --metrics')

  // Waiting for a worker that never comes: a timeout, exit 1, and it stays registered.
  const never = await reservePort()
  const timedOut = await runCli(['register', 'ghost', `127.0.0.1:${never}`, '--wait', '--timeout', '1s', '--api', master.api])
  assert.equal(timedOut.code, 1)
  assert.match(timedOut.stderr, /^error: worker ghost did not become active within 1s; it stays registered and the master keeps dialling it\n$/)

  // The master goes away: the watch says so and keeps trying.
  await master.proc.kill('SIGTERM')
  await waitUntil(() => watch.stderr.includes('connection to the master lost (1001 master shutting down); reconnecting...'), 'the watch to notice')
  assert.equal(watch.child.exitCode, null, 'still running, reconnecting')
})

test('watch --json prints the messages as they come, snapshot first; an unreachable master is exit 1', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const watch = new Proc('watch', ['watch', '--json', '--metrics', '--api', master.api])
  t.after(() => watch.kill('SIGKILL'))
  const first = await watch.waitForLog(() => true, 'the first line')
  assert.equal(first.type, 'snapshot')
  const port = await reservePort()
  await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}` })
  assert.equal((await runCli(['register', 'w1', `127.0.0.1:${port}`, '--api', master.api])).code, 0)
  await watch.waitForLog((l) => l.type === 'worker_status' && l.worker_id === 'w1' && l.is_active === true, 'worker_status as JSON')
  await watch.waitForLog((l) => l.type === 'worker_metrics' && l.worker_id === 'w1', 'telemetry with --metrics')
  assert.deepEqual(await watch.kill('SIGINT'), { code: 0, signal: null }, 'Ctrl-C ends it cleanly')

  const dead = await reservePort()
  const unreachable = await runCli(['watch', '--api', `http://127.0.0.1:${dead}`])
  assert.equal(unreachable.code, 1)
  assert.match(unreachable.stderr, /cannot reach the master at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\).*\(CLOUDAI_API_UNREACHABLE\)/)
})
