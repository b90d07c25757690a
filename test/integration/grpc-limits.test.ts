import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import { api, FAST_MASTER_FLAGS, runCli, startMaster, tempDir, waitUntil } from '../support/cluster.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'

// The gRPC connection limit on a real master process (issue 15): a flood of raw connections
// against --grpc-max-connections 50 is refused past the limit while a worker's connection that
// was already open keeps registering and heartbeating, and the HTTP API keeps answering.

const FLOOD = 300
const MAX = 50

const info = (id: string): WorkerInfoMsg => ({ worker_id: id, worker_ip: '127.0.0.1:1', total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 })
const beat = (id: string): HeartbeatMsg => ({ worker_id: id, cpu_usage: 5, memory_usage: 5, storage_usage: 5, gpu_usage: 0, running_tasks: [] })

/** A client on a connection of its own (grpc-js would otherwise share one between clients of a target). */
function client(t: TestContext, port: number): MasterWorkerClient {
  const c = new (loadProto().Client)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.enable_retries': 0, 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 200, 'grpc.use_local_subchannel_pool': 1,
  })
  t.after(() => c.close())
  return c
}

test('connections beyond --grpc-max-connections are refused while an open worker connection and the HTTP API keep answering', { timeout: 60_000 }, async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--heartbeat-timeout', '30s', '--grpc-max-connections', String(MAX)] })
  const limits = master.proc.lines.find((l) => l.step === 6)!
  assert.equal(limits.maxConnections, MAX)
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: '127.0.0.1:1' } })).status, 201)
  const worker = client(t, master.grpcPort)
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(worker, 'RegisterWorker', info('w1'), 5000).promise).success, true)

  // The flood: raw connections that send nothing, a few hundred of them at once.
  const flood: Socket[] = []
  let closedByMaster = 0
  t.after(() => {
    for (const s of flood) s.destroy()
  })
  await Promise.all(Array.from({ length: FLOOD }, () => new Promise<void>((resolve) => {
    const s = connect(master.grpcPort, '127.0.0.1')
    flood.push(s)
    s.on('error', () => {})
    s.once('close', () => closedByMaster++)
    s.once('connect', () => resolve())
    s.once('close', () => resolve())
    s.resume()
  })))
  // One slot is the worker's: 49 flood connections are held (until their preface timeout), the rest refused at once.
  await waitUntil(() => closedByMaster >= FLOOD - (MAX - 1), `${FLOOD - (MAX - 1)} flood connections closed`, 10_000)
  assert.ok(closedByMaster <= FLOOD - (MAX - 1), `${closedByMaster} closed: the ones below the limit are still open`)

  // The connection that was already open is served as before; so is the HTTP API.
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(worker, 'RegisterWorker', info('w1'), 5000).promise).success, true)
  assert.equal((await callUnary<HeartbeatMsg, HeartbeatAckMsg>(worker, 'SendHeartbeat', beat('w1'), 5000).promise).success, true)
  const status = await api(master.api, '/api/status')
  assert.equal(status.status, 200)
  const res = await fetch(`${master.api}/metrics`, { signal: AbortSignal.timeout(10_000) })
  const m = parsePrometheus(await res.text())
  assert.equal(promValue(m, 'cloudai_grpc_connections'), MAX)
  assert.equal(promValue(m, 'cloudai_grpc_max_connections'), MAX)
  assert.equal(promValue(m, 'cloudai_grpc_connections_refused_total', { reason: 'max_connections' }), FLOOD - (MAX - 1))
  assert.equal(master.proc.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Refused a gRPC connection')).length, 1, 'one log line for the whole flood')

  // A new connection is refused while the port is full...
  const late = client(t, master.grpcPort)
  await assert.rejects(callUnary<WorkerInfoMsg, RegisterAckMsg>(late, 'RegisterWorker', info('w1'), 2000).promise, (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE)
  // ...and served once the flood is gone.
  for (const s of flood) s.destroy()
  await waitUntil(async () => {
    try {
      return (await callUnary<WorkerInfoMsg, RegisterAckMsg>(late, 'RegisterWorker', info('w1'), 2000).promise).success
    } catch {
      return false
    }
  }, 'a new connection served after the flood', 10_000)
})

test('--grpc-max-connections above the file-descriptor limit is refused at start with CLOUDAI_BAD_CONFIG; --grpc-idle-timeout out of range too', async () => {
  const tooMany = await runCli(['master', '--grpc-max-connections', '1000000', '--http-port', '0', '--grpc-port', '0'])
  assert.equal(tooMany.code, 2, tooMany.stderr)
  assert.match(tooMany.stderr, /--grpc-max-connections 1000000 is more than this process can hold/)
  const idle = await runCli(['master', '--grpc-idle-timeout', '10ms', '--http-port', '0', '--grpc-port', '0'])
  assert.equal(idle.code, 2, idle.stderr)
  assert.match(idle.stderr, /--grpc-idle-timeout "10ms" is out of range/)
})
