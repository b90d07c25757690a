import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, msgHas, reservePort, startMaster, startWorker, tempDir, type LogLine } from '../support/cluster.js'

const active = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)
const becameInactive = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} became inactive`)

// The monitor is disabled here (--reconnect-interval 0): everything below is the worker joining
// on its own, apart from the single MasterRegister broadcast a master sends when it starts.
const JOIN_FLAGS = ['--reconnect-interval', '0', '--dial-timeout', '1s', '--heartbeat-timeout', '1500ms', '--shutdown-grace', '2s']

test('a worker started with --master joins, survives kill -9 on either side, and is refused once unregistered', async (t) => {
  const dataDir = tempDir(t)
  const grpcPort = await reservePort()
  const workerPort = await reservePort()
  let master = await startMaster(t, { dataDir, grpcPort, args: JOIN_FLAGS })
  await master.proc.waitForLog(msgHas('Worker reconnection monitor disabled'), 'the monitor-disabled warning')
  const masterAddr = `127.0.0.1:${grpcPort}`

  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-2', worker_ip: `127.0.0.1:${workerPort}` } })).status, 201)

  let mark = master.proc.mark()
  let worker = await startWorker(t, 'worker-2', workerPort, { master: masterAddr })
  await master.proc.waitForLog(active('worker-2'), 'worker-2 joined', { from: mark })
  assert.equal((await api(master.api, '/api/workers/worker-2')).body.is_active, true)

  mark = master.proc.mark()
  await worker.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-2'), 'worker-2 inactive after kill -9', { from: mark })

  // Restarted next to a running master: back at once, not at some monitor pass (there is none).
  mark = master.proc.mark()
  worker = await startWorker(t, 'worker-2', workerPort, { master: masterAddr })
  await master.proc.waitForLog(active('worker-2'), 'worker-2 re-joined', { from: mark })
  await worker.waitForLog(msgHas(`Registered with master ${masterAddr}`), 'the worker knows it is registered')

  // Master killed and restarted on the same port: the worker's heartbeats fail and it re-joins.
  const wmark = worker.mark()
  await master.proc.kill('SIGKILL')
  await worker.waitForLog(msgHas('Heartbeat stream to master'), 'worker notices the master is gone', { from: wmark })
  master = await startMaster(t, { dataDir, grpcPort, args: JOIN_FLAGS, name: 'master-2' })
  await master.proc.waitForLog(active('worker-2'), 'worker-2 back with the restarted master')
  assert.equal((await api(master.api, '/api/workers/worker-2')).body.is_active, true)

  // Unregistered: its heartbeats and its attempts to register again are refused.
  mark = master.proc.mark()
  assert.equal((await api(master.api, '/api/workers/worker-2', { method: 'DELETE' })).status, 200)
  await master.proc.waitForLog((l) => l.msg === 'RegisterWorker refused' && l.code === 'CLOUDAI_WORKER_NOT_REGISTERED', 'the unregistered worker refused', { from: mark })
  assert.equal((await api(master.api, '/api/workers/worker-2')).status, 404)
  assert.equal(master.proc.has(active('worker-2'), mark), false)

  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
  assert.deepEqual(await worker.kill('SIGTERM'), { code: 0, signal: null })
})
