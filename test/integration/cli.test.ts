import assert from 'node:assert/strict'
import { test } from 'node:test'
import { FAST_MASTER_FLAGS, Proc, msgHas, msgIs, reservePort, runCli, startMaster, startWorker, taskFinished, tempDir } from '../support/cluster.js'

// Every operator command against a real master, as a person runs it and as a script runs it
// (--json), with its exit codes: 0 done, 1 failed, 2 called wrongly.

test('each operator command: tables for people, --json for scripts, exit codes', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  // --api goes before `--`: what follows it is the task's command.
  const cli = (...args: string[]) => {
    const end = args.includes('--') ? args.indexOf('--') : args.length
    return runCli([...args.slice(0, end), '--api', master.api, ...args.slice(end)])
  }
  const port = await reservePort()

  let r = await cli('workers')
  assert.equal(r.code, 0)
  assert.equal(r.stdout, 'No workers registered yet: add one with register <id> <host:port>\n')

  r = await cli('register', 'w1', `127.0.0.1:${port}`, '--json')
  assert.equal(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).worker.worker_id, 'w1')
  const first = JSON.parse(r.stdout).token as string
  assert.match(first, /^cwt1_[A-Za-z0-9_-]{43}$/, '--json carries the new token')
  r = await cli('register', 'w1', `127.0.0.1:${port}`)
  assert.equal(r.code, 0)
  assert.equal(r.stdout, `Worker w1 is already registered at 127.0.0.1:${port} (inactive)\n   its token is not shown again; \`cloudai token rotate w1\` issues a new one\n`)
  // A new token: printed once for people, as `token` for scripts.
  r = await cli('token', 'rotate', 'w1')
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^✅ New token for worker w1\. The old token works until the worker presents this one, at the latest until \S+Z\.\nToken: cwt1_\S{43}\n   Shown once/)
  r = await cli('token', 'rotate', 'w1', '--json')
  assert.equal(r.code, 0, r.stderr)
  assert.match(JSON.parse(r.stdout).token, /^cwt1_/)
  assert.notEqual(JSON.parse(r.stdout).token, first)
  r = await cli('token', 'rotate', 'ghost')
  assert.equal(r.code, 1)
  assert.match(r.stderr, /\(CLOUDAI_UNKNOWN_WORKER\)\n$/)
  assert.equal((await cli('token')).code, 2, 'a sub-command is required')
  assert.ok(!master.proc.lines.some((l) => JSON.stringify(l).includes('cwt1_')), 'no token in the master\'s log')
  r = await cli('register', 'w1', '127.0.0.1:1')
  assert.equal(r.code, 1, 'another address for the same id is refused')
  assert.match(r.stderr, /\(CLOUDAI_WORKER_EXISTS\)\n$/)

  r = await cli('workers')
  assert.match(r.stdout, /^ID +STATUS +ADDRESS/)
  assert.match(r.stdout, /^w1 +○ Inactive +127\.0\.0\.1:\d+ .* never$/m, 'inactive, clearly marked, no heartbeat yet')
  await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}` })
  r = await cli('register', 'w1', `127.0.0.1:${port}`, '--wait', '--timeout', '20s')
  assert.equal(r.code, 0, r.stderr)
  r = await cli('workers')
  assert.match(r.stdout, /^w1 +● Active +127\.0\.0\.1:\d+ .* \d+s ago$/m, 'active, with the age of its last heartbeat')
  r = await cli('workers', '--json')
  assert.equal(JSON.parse(r.stdout).workers[0].is_active, true)

  r = await cli('status')
  assert.equal(r.code, 0)
  assert.match(r.stdout, /^Workers: +1$/m)
  assert.match(r.stdout, /^Active: +1$/m)
  assert.equal(JSON.parse((await cli('status', '--json')).stdout).active, 1)

  r = await cli('task', 'submit', '--name', 'hello', '--', 'echo hello')
  assert.equal(r.code, 0, r.stderr)
  const id = /^✅ Task (task-[0-9a-f-]{36}) queued$/m.exec(r.stdout)?.[1]
  assert.ok(id, r.stdout)
  await master.proc.waitForLog(taskFinished(id), 'hello finished')
  r = await cli('tasks')
  assert.match(r.stdout, new RegExp(`^${id} +hello +completed +w1 +1/3 +\\d+s ago +0$`, 'm'))
  r = await cli('tasks', '--status', 'completed', '--json')
  assert.deepEqual(JSON.parse(r.stdout).tasks.map((x: { task_id: string }) => x.task_id), [id])
  r = await cli('task', id)
  assert.match(r.stdout, /^Exit code: +0$/m)
  // As git and docker take an abbreviation: any unique prefix of the id, task- optional.
  r = await cli('task', id.slice(5, 13))
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, new RegExp(`^Task: +${id}$`, 'm'))
  assert.match(r.stdout, /hello\n$/)
  r = await cli('cancel', id)
  assert.equal(r.code, 1, 'a finished task cannot be cancelled')
  assert.match(r.stderr, /\(CLOUDAI_TASK_FINISHED\)\n$/)

  r = await cli('task', 'submit', '--worker', 'w1', '--', 'sleep 30')
  const long = /(task-[0-9a-f-]{36})/.exec(r.stdout)![1]!
  r = await cli('cancel', long.slice(0, 12))
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, `Task ${long} cancelled\n`)
  assert.equal(JSON.parse((await cli('task', long, '--json')).stdout).status, 'cancelled')

  // Wrong calls (exit 2, nothing sent) and failures (exit 1).
  for (const args of [['register', 'bad id!', '127.0.0.1:1'], ['task', 'submit', '--cpu', '-1', '--', 'true'], ['tasks', '--status', 'sleeping'], ['cancel'], ['metrics', 'w1', '--since', 'yesterday']]) {
    r = await cli(...args)
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, /^error: /)
  }
  r = await cli('task', 'task-00000000-0000-4000-8000-000000000000')
  assert.equal(r.code, 1)
  assert.match(r.stderr, /\(CLOUDAI_UNKNOWN_TASK\)\n$/)
  r = await cli('task', 'submit', '--worker', 'nope', '--', 'true')
  assert.equal(r.code, 1)
  assert.equal(r.stderr, 'error: --worker nope is not a registered worker (CLOUDAI_UNKNOWN_WORKER)\n', 'named by the flag typed, not the API field')
  r = await cli('unregister', 'nobody')
  assert.equal(r.code, 1)
  assert.match(r.stderr, /\(CLOUDAI_UNKNOWN_WORKER\)\n$/)
  r = await cli('unregister', 'w1')
  assert.equal(r.code, 0)
  assert.equal(r.stdout, 'Worker w1 unregistered (the master no longer dials it)\n')
  r = await runCli(['workers', '--api', `http://127.0.0.1:${await reservePort()}`])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /cannot reach the master at .*\(CLOUDAI_API_UNREACHABLE\)/)
})

// getopt's and kubectl's rule, which wrapper scripts that append their overrides rely on.
test('a master and a worker given a flag twice run with its last value', async (t) => {
  const master = await startMaster(t, {
    dataDir: tempDir(t),
    args: [...FAST_MASTER_FLAGS, '--reconnect-interval', '60s', '--dial-timeout', '2s', '--dial-timeout', '4s', '--log-pretty', '--no-log-pretty'],
    env: { CLOUDAI_TELEMETRY_STEP: '2s' },
  })
  const monitor = await master.proc.waitForLog(msgIs('Worker reconnection monitor started'), 'monitor started')
  assert.equal(monitor.intervalMs, 60_000, 'the appended --reconnect-interval, not the 300ms before it')
  assert.equal(monitor.dialTimeoutMs, 4000, 'the last of three --dial-timeout (none of them the default)')
  const telemetry = await master.proc.waitForLog(msgHas('Telemetry started'), 'telemetry started')
  assert.equal(telemetry.stepMs, 2000, 'CLOUDAI_* variables are still read')
  assert.ok(master.proc.lines.every((l) => l.raw !== true), '--no-log-pretty after --log-pretty: JSON lines')

  const dataDir = tempDir(t, 'cloudai-w2-')
  const worker = new Proc('w2', [
    'worker', '--id', 'w1', '--id', 'w2', '--host', '127.0.0.1', '--port', '0', '--log-level', 'debug',
    '--data-dir', tempDir(t, 'cloudai-w1-'), '--data-dir', dataDir, '--heartbeat-interval', '250ms',
    '--master', `127.0.0.1:${await reservePort()}`, '--master', `127.0.0.1:${master.grpcPort}`,
  ])
  t.after(() => worker.kill('SIGKILL'))
  const listening = await worker.waitForLog(msgHas('listening on'), 'worker listening')
  assert.equal(listening.workerId, 'w2')
  assert.equal(listening.dataDir, dataDir)
  // Not registered there, so the join is refused; that the refusal is logged is what shows it called this master.
  await master.proc.waitForLog((l) => l.workerId === 'w2' && msgIs('RegisterWorker refused')(l), 'w2 calling the appended --master')
})
