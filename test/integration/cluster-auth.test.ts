import assert from 'node:assert/strict'
import { test } from 'node:test'
import { makeTestCa, tlsArgs } from '../support/ca.js'
import { api, msgHas, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type Proc } from '../support/cluster.js'

// The gRPC side's protection with the real processes: the cluster token in both directions
// (worker -> master: RegisterWorker and heartbeats; master -> worker: MasterRegister and tasks),
// and TLS with client certificates. Every wait is on a log line or the API, never a sleep.

const TOKEN = 'cluster-token-for-tests-0123456789abcdef'
const OTHER_TOKEN = 'some-other-cluster-token-fedcba9876543210'
const REFUSAL = 'the cluster token is missing or wrong (CLOUDAI_UNAUTHENTICATED)'

const active = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)
const refusedCall = (rpc: string) => (l: LogLine): boolean => l.level === 40 && l.msg.startsWith(`Refused ${rpc} from 127.0.0.1: the cluster token is missing or wrong`)
const dialFailed = (id: string, outcome: string) => (l: LogLine): boolean => l.msg === 'reconnection dial failed' && l.workerId === id && l.outcome === outcome

async function registerWorker(base: string, id: string, port: number): Promise<void> {
  const res = await api(base, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `127.0.0.1:${port}` } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
}

async function isActive(base: string, id: string): Promise<boolean> {
  return (await api<{ is_active: boolean }>(base, `/api/workers/${id}`)).body.is_active
}

async function runTask(base: string, master: Proc, command: string): Promise<{ status: string; logs: string; worker_id: string }> {
  const res = await api(base, '/api/tasks', { method: 'POST', body: { command } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  const id = res.body.task_id as string
  await master.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })
  return (await api(base, `/api/tasks/${id}`)).body
}

test('master and worker with the same cluster token: the worker joins and a task runs', async (t) => {
  const workerPort = await reservePort()
  // The master takes it from the environment (as the README advises), the worker from the flag.
  const master = await startMaster(t, { dataDir: tempDir(t), env: { CLOUDAI_CLUSTER_TOKEN: TOKEN } })
  await registerWorker(master.api, 'tok-1', workerPort)
  const worker = await startWorker(t, 'tok-1', workerPort, { master: `127.0.0.1:${master.grpcPort}`, args: ['--cluster-token', TOKEN] })
  await master.proc.waitForLog(active('tok-1'), 'tok-1 active')
  await worker.waitForLog(msgHas('Registered with master'), 'the worker registered')

  // AssignTask (master -> worker) and ReportTaskCompletion (worker -> master) both carry it.
  const task = await runTask(master.api, master.proc, 'echo authenticated')
  assert.equal(task.status, 'completed')
  assert.equal(task.logs, 'authenticated\n')
  assert.equal(task.worker_id, 'tok-1')

  // Master -> worker: a worker that waits for MasterRegister (no --master) is found by the
  // monitor's dial, which carries the token from the dial pool's thread.
  const followerPort = await reservePort()
  const follower = await startWorker(t, 'tok-2', followerPort, { args: ['--cluster-token', TOKEN] })
  await registerWorker(master.api, 'tok-2', followerPort)
  await master.proc.waitForLog((l) => l.workerId === 'tok-2' && msgHas('Successfully reconnected to worker tok-2')(l), 'the dial to tok-2 succeeded')
  await master.proc.waitForLog(active('tok-2'), 'tok-2 active')

  assert.equal(master.proc.has(msgHas('cluster token is missing or wrong')), false, 'nothing was refused')
  for (const p of [master.proc, worker, follower]) {
    assert.equal(p.lines.some((l) => JSON.stringify(l).includes(TOKEN)), false, `${p.name} never logs the token`)
  }
})

test('a worker with a wrong token is refused in both directions and stays inactive', async (t) => {
  const workerPort = await reservePort()
  const master = await startMaster(t, { dataDir: tempDir(t), env: { CLOUDAI_CLUSTER_TOKEN: TOKEN } })
  await registerWorker(master.api, 'tok-bad', workerPort)
  const worker = await startWorker(t, 'tok-bad', workerPort, { master: `127.0.0.1:${master.grpcPort}`, args: ['--cluster-token', OTHER_TOKEN] })

  // Worker -> master: RegisterWorker refused, said on both sides, the reason on the worker's.
  await master.proc.waitForLog(refusedCall('RegisterWorker'), 'the master logs the refused RegisterWorker')
  const said = await worker.waitForLog((l) => l.level === 50 && l.msg.includes('refused RegisterWorker') && l.msg.includes(REFUSAL), 'the worker logs why, as an error')
  assert.match(said.msg, /--cluster-token or CLOUDAI_CLUSTER_TOKEN/)
  // It keeps trying (a token may be fixed on the master's side), quietly after the first error.
  await worker.waitForLog((l) => l.level === 20 && l.msg.includes('refused RegisterWorker'), 'a later attempt, at debug')

  // Master -> worker: the monitor's MasterRegister carries the master's token, which the worker refuses.
  const dial = await master.proc.waitForLog(dialFailed('tok-bad', 'rejected'), 'a reconnection dial rejected by the worker')
  assert.equal(dial.reason, REFUSAL)
  await worker.waitForLog(refusedCall('MasterRegister'), 'the worker logs the refused MasterRegister')

  assert.equal(await isActive(master.api, 'tok-bad'), false)
  assert.equal(master.proc.has(active('tok-bad')), false)
  // Once a minute per peer at most: many refusals (joins and dials), one line each way.
  assert.equal(master.proc.lines.filter(refusedCall('RegisterWorker')).length, 1)
  assert.equal(worker.lines.filter(refusedCall('MasterRegister')).length, 1)
})

test('a worker with a token cannot be made to follow a master without one', async (t) => {
  const workerPort = await reservePort()
  const master = await startMaster(t, { dataDir: tempDir(t) })
  // No --master: the only way in is the master's MasterRegister dial, which lacks the token.
  const worker = await startWorker(t, 'tok-follow', workerPort, { args: ['--cluster-token', TOKEN] })
  await registerWorker(master.api, 'tok-follow', workerPort)

  const dial = await master.proc.waitForLog(dialFailed('tok-follow', 'rejected'), 'the MasterRegister dial rejected')
  assert.equal(dial.reason, REFUSAL)
  await worker.waitForLog(refusedCall('MasterRegister'), 'the worker logs the refusal')
  // A second pass is rejected too, and the worker still follows nobody.
  await master.proc.waitForLog(dialFailed('tok-follow', 'rejected'), 'another rejected dial', { from: master.proc.lines.indexOf(dial) + 1 })
  assert.equal(await isActive(master.api, 'tok-follow'), false)
  assert.equal(worker.has(msgHas('Registered with master')), false)
  assert.equal(worker.has((l) => l.msg.startsWith('MasterRegister from')), false, 'the handler never ran')
})

test('TLS with client certificates end to end; a worker without TLS cannot join', async (t) => {
  const ca = makeTestCa(tempDir(t, 'cloudai-ca-'))
  const [tlsPort, plainPort] = [await reservePort(), await reservePort()]
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', '1500ms', '--shutdown-grace', '2s', ...tlsArgs(ca, ca.issue('master'))] })
  const masterAddr = `127.0.0.1:${master.grpcPort}`
  await registerWorker(master.api, 'tls-1', tlsPort)
  await registerWorker(master.api, 'plain-1', plainPort)

  const worker = await startWorker(t, 'tls-1', tlsPort, { master: masterAddr, args: tlsArgs(ca, ca.issue('worker')) })
  await master.proc.waitForLog(active('tls-1'), 'tls-1 active over TLS')
  await master.proc.waitForLog((l) => l.workerId === 'tls-1' && msgHas('arrive on a stream')(l), 'heartbeats on a stream')
  // Heartbeats keep coming: the master's last_heartbeat moves on.
  const first = (await api(master.api, '/api/workers/tls-1')).body.last_heartbeat as string
  await waitUntil(async () => (await api(master.api, '/api/workers/tls-1')).body.last_heartbeat !== first, 'a later heartbeat')
  const task = await runTask(master.api, master.proc, 'echo over-tls')
  assert.equal(task.status, 'completed')
  assert.equal(task.logs, 'over-tls\n')

  // Plaintext cannot speak to a TLS server, in either direction.
  const plain = await startWorker(t, 'plain-1', plainPort, { master: masterAddr })
  const plainListening = master.proc.mark()
  await plain.waitForLog((l) => l.level === 40 && msgHas('RegisterWorker failed')(l), 'the plaintext worker cannot register')
  // Once it listens, the master's dials reach it and fail in the TLS handshake (not ECONNREFUSED).
  await master.proc.waitForLog((l) => l.msg === 'reconnection dial failed' && l.workerId === 'plain-1' && !String(l.reason).includes('ECONNREFUSED'),
    'the TLS dial to the plaintext worker fails', { from: plainListening })
  assert.equal(await isActive(master.api, 'plain-1'), false)
  assert.equal(master.proc.has(active('plain-1')), false)
  assert.equal(await isActive(master.api, 'tls-1'), true)

  // Clean shutdown with TLS: no handle keeps either process up.
  assert.deepEqual(await worker.kill('SIGTERM'), { code: 0, signal: null })
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})
