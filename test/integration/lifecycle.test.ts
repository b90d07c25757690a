import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { pathToFileURL } from 'node:url'
import { ROOT, runCli, startMaster, tempDir } from '../support/cluster.js'

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
