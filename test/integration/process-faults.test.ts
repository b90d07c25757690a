import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import { pathToFileURL } from 'node:url'
import Database from 'better-sqlite3'
import { api, msgHas, msgIs, reservePort, ROOT, startMaster, startWorker, tempDir, type LogLine, type Proc } from '../support/cluster.js'

// Issue 16, finding 7: a fault that escapes (an unhandled rejection, an uncaught exception) used
// to end the process on the spot: no ordered shutdown, the store journal never written. cloudai's
// code has no such path left (the lint sees to it), so the fault is made inside the real process
// by a preloaded module of the test's (test/support/inject-fault.ts, on SIGUSR2).

const INJECT = `--import=${pathToFileURL(join(ROOT, 'dist', 'test', 'support', 'inject-fault.js')).href}`
const withFault = (kind: 'rejection' | 'exception'): NodeJS.ProcessEnv => ({ NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${INJECT}`.trim(), CLOUDAI_TEST_FAULT: kind })

const MASTER_SHUTDOWN = [
  'Shutting down: stopping the queue processor',
  'Shutting down: stopping the reconnection monitor',
  'Shutting down: stopping the HTTP API and WebSocket',
  'Shutting down: stopping heartbeat timeout checks',
  'Shutting down: stopping the gRPC server (draining in-flight calls)',
  'Shutting down: stopping the telemetry threads',
  'Shutting down: closing the store',
  'Master stopped',
]

/** Sends SIGUSR2 (the injected fault) and returns the exit and the lines logged from then on. */
async function fault(proc: Proc): Promise<{ exit: { code: number | null; signal: NodeJS.Signals | null }; after: LogLine[] }> {
  const mark = proc.mark()
  proc.child.kill('SIGUSR2')
  const exit = await proc.exited
  return { exit, after: proc.lines.slice(mark) }
}

function assertFatal(after: LogLine[], what: RegExp, kind: string): void {
  const fatal = after.find((l) => l.level === 60)
  assert.ok(fatal, `a fatal line; got:\n${after.map((l) => JSON.stringify(l)).join('\n')}`)
  assert.match(fatal.msg, what)
  assert.equal(fatal.kind, kind)
  assert.match((fatal.err as { message: string }).message, /fault injected by the test/)
  assert.match((fatal.err as { stack: string }).stack, /inject-fault/, 'with its stack')
}

test('a master meeting an unhandled rejection logs it as fatal, shuts down in the SIGTERM order with its journal written to the store, and exits with code 1', async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, { dataDir, env: withFault('rejection') })
  await master.proc.waitForLog((l) => l.step === 8, 'step 8')

  // The store locked by another process: a registration is then in memory and in the journal
  // only. The journal retries with backoff; the fault lands between two retries, so only the
  // shutdown's last write can bring it to the store.
  const db = new Database(join(dataDir, 'cloudai.db'))
  t.after(() => db.close())
  db.exec('BEGIN EXCLUSIVE')
  const mark = master.proc.mark()
  const reg = await api<{ persisted: boolean }>(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w-late', worker_ip: `127.0.0.2:${await reservePort()}` } })
  assert.equal(reg.status, 201)
  assert.equal(reg.body.persisted, false, 'not durable yet')
  await master.proc.waitForLog(msgHas('Store sqlite failed'), 'the outage noticed', { from: mark })
  await master.proc.waitForLog(msgIs('store still failing'), 'a retry failed', { from: mark })
  db.exec('ROLLBACK')

  const { exit, after } = await fault(master.proc)
  assert.deepEqual(exit, { code: 1, signal: null }, `stderr: ${master.proc.stderr}`)
  assertFatal(after, /^Unhandled promise rejection: fault injected by the test \(rejection\)\. Shutting down the master in order/, 'unhandledRejection')
  const msgs = after.map((l) => l.msg)
  assert.deepEqual(msgs.filter((m) => MASTER_SHUTDOWN.includes(m)), MASTER_SHUTDOWN, 'the SIGTERM order')
  assert.ok(msgs.indexOf('Master stopped') < msgs.findIndex((m) => m.startsWith('The master shut down after the fault')))
  assert.equal(after.some(msgHas('journalled change(s) before shutdown: they are lost')), false)

  const stored = db.prepare("SELECT worker_id FROM workers WHERE worker_id = 'w-late'").get()
  assert.deepEqual(stored, { worker_id: 'w-late' }, 'the registration made during the outage is in the store')
})

test('a master meeting an uncaught exception shuts down the same way and exits with code 1', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), env: withFault('exception') })
  await master.proc.waitForLog((l) => l.step === 8, 'step 8')
  const { exit, after } = await fault(master.proc)
  assert.deepEqual(exit, { code: 1, signal: null }, `stderr: ${master.proc.stderr}`)
  assertFatal(after, /^Uncaught exception: fault injected by the test \(exception\)\. Shutting down the master in order/, 'uncaughtException')
  assert.deepEqual(after.map((l) => l.msg).filter((m) => MASTER_SHUTDOWN.includes(m)), MASTER_SHUTDOWN)
})

test('a worker meeting an unhandled rejection logs it as fatal, stops in order and exits with code 1', async (t) => {
  const worker = await startWorker(t, 'w1', await reservePort(), { env: withFault('rejection') })
  const { exit, after } = await fault(worker)
  assert.deepEqual(exit, { code: 1, signal: null }, `stderr: ${worker.stderr}`)
  assertFatal(after, /^Unhandled promise rejection: fault injected by the test \(rejection\)\. Shutting down the worker in order/, 'unhandledRejection')
  const msgs = after.map((l) => l.msg)
  assert.ok(msgs.includes('Worker w1 stopped'), `the worker's own shutdown ran; got:\n${msgs.join('\n')}`)
  assert.ok(msgs.indexOf('Worker w1 stopped') < msgs.findIndex((m) => m.startsWith('The worker shut down after the fault')))
})
