import assert from 'node:assert/strict'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { pathToFileURL } from 'node:url'
import { api, msgHas, msgIs, reservePort, ROOT, runCli, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle, type Proc } from '../support/cluster.js'

test('the master starts in the CloudAI order and shuts down on SIGTERM in the CloudAI order, exit code 0', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  await master.proc.waitForLog((l) => l.step === 8, 'step 8')
  const steps = master.proc.lines.filter((l) => typeof l.step === 'number').map((l) => l.step)
  assert.deepEqual(steps, [1, 2, 3, 4, 6, 7, 8])
  const startup = master.proc.lines.map((l) => l.msg)
  assert.ok(startup.indexOf('Worker reconnection monitor started') > startup.findIndex((m) => m.startsWith('Queue processor')))
  assert.ok(startup.indexOf('Worker reconnection monitor started') < startup.findIndex((m) => m.startsWith('gRPC server listening')))

  const mark = master.proc.mark()
  const exit = await master.proc.kill('SIGTERM')
  assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${master.proc.stderr}`)
  const shutdown = master.proc.lines.slice(mark).map((l) => l.msg)
  const order = [
    'Shutting down: stopping the queue processor',
    'Shutting down: stopping the reconnection monitor',
    'Worker reconnection monitor stopped',
    'Shutting down: stopping the HTTP API and WebSocket',
    'Shutting down: stopping heartbeat timeout checks',
    'Shutting down: stopping the gRPC server (draining in-flight calls)',
    'Shutting down: stopping the telemetry threads',
    'Shutting down: closing the store',
    'Master stopped',
  ]
  assert.deepEqual(shutdown.filter((m) => order.includes(m)), order)
})

test('a master run with V8 and process-wide flags on node\'s command line (node --max-old-space-size=… --title … cloudai master) starts, dials from its pool and stops with 0', async (t) => {
  // A Worker refuses such flags in its execArgv, a flag's value left behind would end its options,
  // and the dial pool, which passes node's flags on to its threads, once refused to start with
  // them (CLOUDAI_INTERNAL).
  const master = await startMaster(t, { dataDir: tempDir(t), nodeArgs: ['--max-old-space-size=1024', '--title', 'cloudai-under-test', '--stack-trace-limit=20'] })
  const port = await reservePort()
  const worker = await startWorker(t, 'worker-v8', port)
  const mark = master.proc.mark()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-v8', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  await master.proc.waitForLog((l) => l.workerId === 'worker-v8' && l.msg.startsWith('Successfully reconnected'), 'the registration dial found the worker', { from: mark })
  await worker.kill('SIGTERM')
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null }, `stderr: ${master.proc.stderr}`)
})

test('SIGINT shuts down the same way', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  await master.proc.waitForLog((l) => l.step === 8, 'step 8')
  assert.deepEqual(await master.proc.kill('SIGINT'), { code: 0, signal: null })
  assert.ok(master.proc.has((l) => l.msg === 'Master stopped'))
})

// The master's own refusals, before it opens the store or binds a port: one line on stderr, exit 1.
const MASTER_ARGS = ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-port', '0']
const FAKE_PROCESS = `--import=${pathToFileURL(join(ROOT, 'dist', 'test', 'support', 'fake-process.js')).href}`

async function refusedStart(t: TestContext, env: NodeJS.ProcessEnv): Promise<string> {
  const dir = tempDir(t)
  const r = await runCli([...MASTER_ARGS, '--data-dir', dir], env)
  assert.equal(r.code, 1, r.stderr)
  assert.equal(r.stdout, '', 'nothing logged: nothing started')
  assert.match(r.stderr, /^error: [^\n]+\n$/, 'one line')
  assert.deepEqual(readdirSync(dir), [], 'no store opened')
  return r.stderr
}

const faked = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ ...env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${FAKE_PROCESS}`.trim() })

test('on a Node.js without a uWebSockets.js build (24) the master refuses to start in one line naming the versions that work', async (t) => {
  const stderr = await refusedStart(t, faked({ CLOUDAI_TEST_NODE: '24.22.3:137' }))
  assert.match(stderr, /Node\.js 20 .* 22 .*uWebSockets\.js.*this is Node\.js 24\.22\.3 \(CLOUDAI_UNSUPPORTED_NODE\)\n$/)
})

test('on Node.js 18 every command refuses in one line, the master too', async (t) => {
  for (const args of [[...MASTER_ARGS, '--data-dir', tempDir(t)], ['workers', '--api', 'http://127.0.0.1:1']]) {
    const r = await runCli(args, faked({ CLOUDAI_TEST_NODE: '18.20.4:108' }))
    assert.equal(r.code, 1, r.stderr)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^error: [^\n]+this is Node\.js 18\.20\.4 \(CLOUDAI_UNSUPPORTED_NODE\)\n$/, args[0])
  }
})

test('on a platform the uWebSockets.js build has no native binary for the master refuses to start in one line', async (t) => {
  const stderr = await refusedStart(t, faked({ CLOUDAI_TEST_ARCH: 'riscv64' }))
  assert.match(stderr, /linux-riscv64.*\(CLOUDAI_UWS_NO_BINARY\)\n$/)
})

test('with UWS_USE_FALLBACK set the master refuses to start in one line instead of running on the pure-JS fallback', async (t) => {
  const stderr = await refusedStart(t, { UWS_USE_FALLBACK: '1' })
  assert.match(stderr, /\(CLOUDAI_UWS_FALLBACK\)\n$/)
})

// --- stopping a worker ----------------------------------------------------------------------------
// A worker told to stop is gone within its --kill-grace plus a second, however it joined and while
// its master goes on dialling: the master's connections to the worker's server must not keep it.

/** The workers' --kill-grace here: small, so that the bound below is tight. */
const KILL_GRACE_MS = 300
const EXIT_WITHIN_MS = KILL_GRACE_MS + 1000
/** Only the bound of a failure: a worker still running by then hangs (15 s and more, as reported). */
const HANG_MS = 15_000
/** A monitor pass every second; a worker stays active between them (it heartbeats every 250 ms). */
const DIALLING_MASTER = ['--reconnect-interval', '1s', '--dial-timeout', '1s', '--heartbeat-timeout', '5s', '--shutdown-grace', '2s']

const registered = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('Registered with master ')
const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && typeof l.msg === 'string' && l.msg.startsWith(`Successfully reconnected to worker ${id} (`)

/**
 * A master and an active worker-1, registered while offline. 'dialled': started without --master
 * and found by the master's monitor (it calls MasterRegister). 'joined': started with --master.
 */
async function activeWorker(t: TestContext, how: 'dialled' | 'joined'): Promise<{ master: MasterHandle; worker: Proc }> {
  const master = await startMaster(t, { dataDir: tempDir(t), args: DIALLING_MASTER })
  const port = await reservePort()
  const reg = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-1', worker_ip: `127.0.0.1:${port}` } })
  assert.equal(reg.status, 201)
  if (how === 'joined') {
    const worker = await startWorker(t, 'worker-1', port, { master: `127.0.0.1:${master.grpcPort}`, killGrace: `${KILL_GRACE_MS}ms` })
    await worker.waitForLog(registered, 'worker-1 registered with the master')
    return { master, worker }
  }
  const mark = master.proc.mark()
  const worker = await startWorker(t, 'worker-1', port, { killGrace: `${KILL_GRACE_MS}ms` })
  await master.proc.waitForLog(reconnected('worker-1'), 'the master reconnected to worker-1', { from: mark })
  await worker.waitForLog(registered, 'worker-1 registered with the master')
  assert.equal(worker.has(msgHas('MasterRegister from')), true, 'the master dialled the worker')
  return { master, worker }
}

/** Sends `signal` and waits for the exit: clean, and within --kill-grace + 1 s. Returns the time it took. */
async function stopWorker(t: TestContext, worker: Proc, signal: NodeJS.Signals): Promise<number> {
  const sent = performance.now()
  worker.child.kill(signal)
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), HANG_MS)))
  const exit = await Promise.race([worker.exited, hung])
  clearTimeout(timer)
  const ms = Math.round(performance.now() - sent)
  t.diagnostic(`worker exited ${exit === 'hung' ? 'not at all' : `${ms}ms`} after ${signal}`)
  assert.notEqual(exit, 'hung', `the worker was still running ${HANG_MS}ms after ${signal}; its last lines:\n${worker.lines.slice(-5).map((l) => JSON.stringify(l)).join('\n')}`)
  assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${worker.stderr}`)
  assert.ok(worker.has(msgIs('Worker worker-1 stopped')))
  assert.ok(ms < EXIT_WITHIN_MS, `the worker exited ${ms}ms after ${signal}, later than --kill-grace (${KILL_GRACE_MS}ms) + 1 s`)
  return ms
}

for (const [how, signal] of [['dialled', 'SIGINT'], ['dialled', 'SIGTERM'], ['joined', 'SIGINT'], ['joined', 'SIGTERM']] as const) {
  const joined = how === 'dialled' ? 'the master dialled (no --master)' : 'joined with --master'
  test(`a worker ${joined} exits with code 0 within --kill-grace + 1 s of ${signal} while the master keeps dialling`, async (t) => {
    const { worker } = await activeWorker(t, how)
    await stopWorker(t, worker, signal)
  })
}

test('Ctrl-C on a worker with a task that ignores SIGTERM: killed after --kill-grace, its result delivered, the worker gone within --kill-grace + 1 s', async (t) => {
  const { master, worker } = await activeWorker(t, 'dialled')
  // The task says when its trap is set: "started" comes when the shell is spawned, and a SIGTERM
  // before the trap (a loaded machine) would end it at once, with no grace to see.
  const trapped = join(tempDir(t), 'trapped')
  const sub = await api(master.api, '/api/tasks', { method: 'POST', body: { command: `trap '' TERM; : > '${trapped}'; while :; do sleep 0.05; done`, target_worker_id: 'worker-1' } })
  assert.equal(sub.status, 201, JSON.stringify(sub.body))
  const id = sub.body.task_id as string
  await worker.waitForLog((l) => l.taskId === id && typeof l.msg === 'string' && l.msg.startsWith(`Task ${id} started`), `task ${id} started`)
  await waitUntil(() => existsSync(trapped) || undefined, 'the task to set its trap')

  const mark = master.proc.mark()
  const ms = await stopWorker(t, worker, 'SIGINT')
  assert.ok(ms >= KILL_GRACE_MS, `the task got its --kill-grace (${ms}ms)`)
  assert.ok(worker.has((l) => l.taskId === id && l.status === 'cancelled' && l.signal === 'SIGKILL'), 'the task was killed after the grace')
  assert.ok(worker.has(msgIs(`Result of task ${id} (cancelled) delivered to the master`)), 'its result went out in the shutdown round')
  // The master cancelled nothing: a run its worker stopped on the way down is no result, and the task waits to run again.
  await master.proc.waitForLog((l) => l.taskId === id && l.msg === `Task ${id} requeued: worker worker-1 stopped it (cancelled)`, `the master requeues task ${id}`, { from: mark })
  const after = (await api(master.api, `/api/tasks/${id}`)).body
  assert.equal(after.status, 'queued')
  assert.equal(after.attempts, 1)
})
