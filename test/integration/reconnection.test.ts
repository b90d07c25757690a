import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, msgHas, msgIs, reservePort, startMaster, startWorker, tempDir, waitUntil, type LogLine } from '../support/cluster.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'

const reconnected = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Successfully reconnected to worker ${id} (127.0.0.1:`)
const becameInactive = (id: string) => (l: LogLine): boolean => l.workerId === id && typeof l.msg === 'string' && l.msg.startsWith(`Worker ${id} became inactive`)
const dialTo = (id: string) => (l: LogLine): boolean => l.workerId === id && (l.msg === 'reconnection dial failed' || l.msg.startsWith('Successfully reconnected'))

test('the reconnection scenario: offline registration, monitor reconnects, kill -9 either side, unregister stops dials', async (t) => {
  const dataDir = tempDir(t)
  const workerPort = await reservePort()
  const ghostPort = await reservePort()
  let master = await startMaster(t, { dataDir })

  // Registered while offline: stored inactive, and the monitor keeps trying.
  const reg = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-1', worker_ip: `127.0.0.1:${workerPort}` } })
  assert.equal(reg.status, 201)
  assert.equal(reg.body.worker.is_active, false)
  assert.equal(reg.body.persisted, true)
  // A second worker that never comes up keeps the monitor's passes visible in the log.
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'ghost', address: `127.0.0.1:${ghostPort}` } })).status, 201)
  await master.proc.waitForLog(dialTo('worker-1'), 'a failed dial to the offline worker-1')
  assert.equal((await api(master.api, '/api/workers/worker-1')).body.is_active, false)

  // The worker starts later: the monitor finds it.
  let mark = master.proc.mark()
  let worker = await startWorker(t, 'worker-1', workerPort)
  await master.proc.waitForLog(reconnected('worker-1'), 'Successfully reconnected to worker worker-1', { from: mark })
  let view = (await api(master.api, '/api/workers/worker-1')).body
  assert.equal(view.is_active, true)
  assert.ok(view.total_cpu > 0, 'specs arrive with RegisterWorker')
  assert.ok(view.connected_at)
  await master.proc.waitForLog((l) => l.msg === 'Attempting to reconnect to 1 inactive worker(s)...', 'a pass over the ghost alone', { from: master.proc.mark() })

  // kill -9 the worker: inactive after the heartbeat timeout.
  mark = master.proc.mark()
  await worker.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-1'), 'worker-1 became inactive', { from: mark })
  assert.equal((await api(master.api, '/api/workers/worker-1')).body.is_active, false)

  // Restarted: active again, counted as a reconnect.
  mark = master.proc.mark()
  worker = await startWorker(t, 'worker-1', workerPort)
  await master.proc.waitForLog(reconnected('worker-1'), 'reconnected after worker restart', { from: mark })
  view = (await api(master.api, '/api/workers/worker-1')).body
  assert.equal(view.is_active, true)
  assert.equal(view.reconnects, 1)

  // kill -9 the master and start it again on the same data: the registry comes back from the store
  // and the worker follows the new master (new ports).
  await master.proc.kill('SIGKILL')
  master = await startMaster(t, { dataDir, name: 'master-2' })
  const loaded = await master.proc.waitForLog((l) => l.step === 3, 'workers loaded')
  assert.equal(loaded.workers, 2)
  await master.proc.waitForLog(reconnected('worker-1'), 'worker-1 follows the restarted master')
  const list = (await api(master.api, '/api/workers')).body.workers as { worker_id: string; is_active: boolean }[]
  assert.deepEqual(list.map((w) => w.worker_id).sort(), ['ghost', 'worker-1'])
  await worker.waitForLog(msgHas(`Registered with master 127.0.0.1:${master.grpcPort}`), 'worker registered with the new master')

  // Unregister an offline worker: no dial to it ever again, even once it is back up.
  mark = master.proc.mark()
  await worker.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-1'), 'worker-1 inactive again', { from: mark })
  await master.proc.waitForLog(dialTo('worker-1'), 'monitor dialling worker-1', { from: mark })
  const del = await api(master.api, '/api/workers/worker-1', { method: 'DELETE' })
  assert.equal(del.status, 200)
  assert.equal(del.body.persisted, true)
  worker = await startWorker(t, 'worker-1', workerPort)
  // Counted from the first pass after the unregister: a dial already under way when it landed
  // settles (cancelled, or refused at once: the worker was down) and may log just after it.
  await master.proc.waitForLog(msgIs('Attempting to reconnect to 1 inactive worker(s)...'), 'a pass after unregister', { from: master.proc.mark() })
  mark = master.proc.mark()
  for (let i = 0; i < 3; i++) {
    await master.proc.waitForLog(msgIs('Attempting to reconnect to 1 inactive worker(s)...'), `pass ${i + 2} after unregister`, { from: master.proc.mark() })
  }
  assert.equal(master.proc.has(dialTo('worker-1'), mark), false, 'no dial to an unregistered worker')
  assert.equal(worker.has(msgHas('MasterRegister from')), false, 'the worker was never asked to follow')
  assert.equal((await api(master.api, '/api/workers/worker-1')).status, 404)

  // Graceful stop: exit code 0, nothing left open (a leaked handle would hang the exit).
  const exit = await master.proc.kill('SIGTERM')
  assert.deepEqual(exit, { code: 0, signal: null })
})

test('a CloudAI worker killed and restarted is found by the fast re-dials within seconds, long before the next pass; its dial counts as a success', async (t) => {
  const dataDir = tempDir(t)
  const workerPort = await reservePort()
  // A 10-minute interval: only the per-worker schedule can find the worker in this test's time.
  // A generous dial timeout: the registration's dial is the only one before the worker is first
  // connected (a never-connected worker waits for the pass), and a loaded machine stretched it
  // past 1 s. The dials of a killed worker are refused at once, whatever the timeout.
  const master = await startMaster(t, { dataDir, args: ['--reconnect-interval', '10m', '--dial-timeout', '5s', '--heartbeat-timeout', '1500ms', '--shutdown-grace', '2s'] })
  // Up before it is registered: the registration's own dial finds it.
  let worker = await startWorker(t, 'worker-1', workerPort)
  let mark = master.proc.mark()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'worker-1', worker_ip: `127.0.0.1:${workerPort}` } })).status, 201)
  await master.proc.waitForLog(reconnected('worker-1'), 'worker-1 found at registration', { from: mark })
  const successes = async (): Promise<number> => promValue(parsePrometheus(await (await fetch(`${master.api}/metrics`)).text()), 'cloudai_reconnect_successes_total') ?? NaN

  mark = master.proc.mark()
  await worker.kill('SIGKILL')
  await master.proc.waitForLog(becameInactive('worker-1'), 'worker-1 became inactive', { from: mark })
  const successesBefore = await successes()
  // Re-dialled while it is down (the schedule, not the pass: no pass line in between).
  await master.proc.waitForLog(dialTo('worker-1'), 'a re-dial of the lost worker-1', { from: mark })
  assert.equal(master.proc.has(msgHas('Attempting to reconnect to'), mark), false, 'no pass ran')

  mark = master.proc.mark()
  worker = await startWorker(t, 'worker-1', workerPort)
  await master.proc.waitForLog(reconnected('worker-1'), 'worker-1 found again by the schedule', { from: mark, timeoutMs: 15_000 })
  assert.equal((await api(master.api, '/api/workers/worker-1')).body.is_active, true)
  // The dial that found it is a success whichever came first: its answer (counted by its thread)
  // or the worker's own RegisterWorker (the dial cancelled, counted active-during-dial). Either is
  // counted when the dial settles, which may be just after the reconnection is logged.
  await waitUntil(async () => (await successes()) > successesBefore, `the dial that found worker-1 counted a success (before: ${successesBefore})`)
  assert.equal((await api(master.api, '/healthz')).status, 200)
  await worker.kill('SIGTERM')
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})

test('a master restarted after kill -9 dials the workers alive a moment ago at once, outside the reconnection rate, and not those last heard of long before', async (t) => {
  const dataDir = tempDir(t)
  // One dial a second: through the rate the ten workers' dials would start a second apart, the
  // last nine seconds after the first; outside it they start together. "A moment ago" is a
  // heartbeat within the heartbeat timeout plus the store's heartbeat flush: 6 s here.
  const flags = ['--reconnect-interval', '10m', '--reconnect-rate', '1', '--dial-timeout', '5s', '--heartbeat-timeout', '5s', '--store-heartbeat-interval', '1s', '--shutdown-grace', '2s']
  const aliveWindowMs = 6000
  let master = await startMaster(t, { dataDir, args: flags })
  const ids = Array.from({ length: 10 }, (_, i) => `w-${i + 1}`)
  const ports: number[] = []
  for (const _ of ids) ports.push(await reservePort())
  await Promise.all(ids.map((id, i) => startWorker(t, id, ports[i]!)))
  for (const [i, id] of ids.entries()) {
    const mark = master.proc.mark()
    assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `127.0.0.1:${ports[i]}` } })).status, 201)
    await master.proc.waitForLog(reconnected(id), `${id} found at registration`, { from: mark })
  }
  // Their activation in the store before the kill: that is what the next master reads.
  const storeBacklog = async (base: string): Promise<number> => promValue(parsePrometheus(await (await fetch(`${base}/metrics`)).text()), 'cloudai_store_backlog') ?? NaN
  await waitUntil(async () => (await storeBacklog(master.api)) === 0, 'the store has every change')
  await master.proc.kill('SIGKILL')

  master = await startMaster(t, { dataDir, args: flags, name: 'master-2' })
  const sending = await master.proc.waitForLog((l) => l.step === 8, 'MasterRegister to the loaded workers')
  assert.equal(sending.atOnce, ids.length, 'every loaded worker was heard of a moment ago')
  const found: LogLine[] = []
  for (const id of ids) found.push(await master.proc.waitForLog(reconnected(id), `${id} follows the restarted master`, { timeoutMs: 30_000 }))
  const times = found.map((l) => l.time as number)
  const spreadMs = Math.max(...times) - Math.min(...times)
  // At one a second the last dial could not start before 9 s after the first.
  assert.ok(spreadMs < 4000, `the ten were dialled together, not one a second: found over ${spreadMs} ms`)
  const list = (await api(master.api, '/api/workers')).body.workers as { worker_id: string; is_active: boolean }[]
  assert.equal(list.filter((w) => w.is_active).length, ids.length)

  // Killed again, and the next master starts only once the last heartbeat the store holds is older
  // than the window: "active" in the store then is stale (nothing writes workers inactive at a
  // crash), and such workers go through the rate with the pass.
  await waitUntil(async () => (await storeBacklog(master.api)) === 0, 'the store has every heartbeat')
  const lastStored = Date.now()
  await master.proc.kill('SIGKILL')
  await waitUntil(async () => Date.now() - lastStored > aliveWindowMs + 500, 'the stored heartbeats are older than the window', 30_000)
  master = await startMaster(t, { dataDir, args: flags, name: 'master-3' })
  const late = await master.proc.waitForLog((l) => l.step === 8, 'MasterRegister to the loaded workers, later')
  assert.equal(late.atOnce, 0, 'no loaded worker was heard of within the window')
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})
