import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, msgHas, reservePort, startMaster, startWorker, tempDir, waitUntil, type LogLine, type MasterHandle } from '../support/cluster.js'

// Heartbeats on StreamHeartbeats between real processes: a break on either side is seen at once
// (not at the heartbeat timeout), and the worker re-registers and opens a new stream.

const streaming = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg === `Heartbeats from worker ${id} arrive on a stream`
const streamBroke = (id: string) => (l: LogLine): boolean => l.workerId === id && typeof l.msg === 'string' && l.msg.startsWith(`Heartbeat stream from worker ${id} broke (`)
const becameInactive = (id: string) => (l: LogLine): boolean => l.workerId === id && typeof l.msg === 'string' && l.msg.startsWith(`Worker ${id} became inactive`)

async function lastHeartbeat(master: MasterHandle, id: string): Promise<number> {
  const view = (await api(master.api, `/api/workers/${id}`)).body as { last_heartbeat: string | null }
  return view.last_heartbeat ? Date.parse(view.last_heartbeat) : 0
}

/** Waits until the worker's last heartbeat on the master is later than `after`. */
function heartbeatAfter(master: MasterHandle, id: string, after: number): Promise<number> {
  return waitUntil(async () => {
    const at = await lastHeartbeat(master, id)
    return at > after ? at : false
  }, `a heartbeat from ${id} after ${new Date(after).toISOString()}`, 10_000)
}

test('heartbeats flow on a stream; killing the worker breaks it at once and a restarted worker opens a new one', async (t) => {
  const dataDir = tempDir(t)
  const workerPort = await reservePort()
  const master = await startMaster(t, { dataDir })
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w', worker_ip: `127.0.0.1:${workerPort}` } })).status, 201)

  let mark = master.proc.mark()
  let worker = await startWorker(t, 'w', workerPort, { master: `127.0.0.1:${master.grpcPort}` })
  await master.proc.waitForLog(streaming('w'), 'heartbeats from w on a stream', { from: mark })
  const first = await heartbeatAfter(master, 'w', 0)
  await heartbeatAfter(master, 'w', first)
  assert.equal((await api(master.api, '/api/workers/w')).body.is_active, true)
  assert.equal(worker.has(msgHas('using unary')), false)
  assert.equal(worker.has(msgHas('Heartbeat to master')), false, 'no unary heartbeat failed either')

  // kill -9: the master sees the broken stream long before the heartbeat timeout (1500ms) could
  // fire, and changes nothing because of it.
  mark = master.proc.mark()
  await worker.kill('SIGKILL')
  const broke = await master.proc.waitForLog(streamBroke('w'), 'the stream from w broke', { from: mark })
  assert.equal(broke.level, 30)
  assert.equal(typeof broke.reason, 'string')
  assert.equal((await api(master.api, '/api/workers/w')).body.is_active, true, 'still active: liveness is the heartbeat timeout')
  assert.equal(master.proc.has(becameInactive('w'), mark), false)

  // Restarted on the same port: registers again, and a new stream carries its heartbeats.
  mark = master.proc.mark()
  const before = await lastHeartbeat(master, 'w')
  worker = await startWorker(t, 'w', workerPort, { master: `127.0.0.1:${master.grpcPort}` })
  await master.proc.waitForLog(streaming('w'), 'heartbeats from the restarted w on a new stream', { from: mark })
  await heartbeatAfter(master, 'w', before)
  assert.equal((await api(master.api, '/api/workers/w')).body.is_active, true)

  // A graceful stop on both sides: the streams end, nothing is left open.
  assert.deepEqual(await worker.kill('SIGTERM'), { code: 0, signal: null })
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})

test('killing the master breaks the stream at once; the worker registers with the master restarted on the same port', async (t) => {
  const dataDir = tempDir(t)
  const grpcPort = await reservePort()
  const workerPort = await reservePort()
  let master = await startMaster(t, { dataDir, grpcPort })
  const masterAddr = `127.0.0.1:${grpcPort}`
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w', worker_ip: `127.0.0.1:${workerPort}` } })).status, 201)
  const worker = await startWorker(t, 'w', workerPort, { master: masterAddr })
  await master.proc.waitForLog(streaming('w'), 'heartbeats from w on a stream')

  let wmark = worker.mark()
  await master.proc.kill('SIGKILL')
  const broke = await worker.waitForLog(msgHas(`Heartbeat stream to master ${masterAddr} broke (`), 'the worker sees the stream break', { from: wmark, timeoutMs: 5000 })
  assert.equal(broke.level, 40)
  assert.equal(broke.master, masterAddr)
  assert.equal(broke.code, 'UNAVAILABLE')
  assert.match(broke.msg, /; registering again$/)

  // Same data dir, so w is still registered; the worker's backoff finds the new master.
  master = await startMaster(t, { dataDir, grpcPort, name: 'master-2' })
  await master.proc.waitForLog(streaming('w'), 'heartbeats from w on a stream to master-2')
  await heartbeatAfter(master, 'w', 0)
  assert.equal((await api(master.api, '/api/workers/w')).body.is_active, true)
  assert.equal(worker.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Heartbeat stream to master')).length, 1, 'one warning per break')

  // The master shutting down ends the stream (it does not wait out its grace for it).
  wmark = worker.mark()
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
  await worker.waitForLog(msgHas('master shutting down'), 'the worker told the master is shutting down', { from: wmark })
  assert.deepEqual(await worker.kill('SIGTERM'), { code: 0, signal: null })
})
