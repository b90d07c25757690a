import assert from 'node:assert/strict'
import { test } from 'node:test'
import { startMaster, tempDir } from '../support/cluster.js'

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
