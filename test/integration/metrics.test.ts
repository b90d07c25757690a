import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, FAST_MASTER_FLAGS, msgHas, reservePort, runCli, startMaster, startWorker, tempDir, waitUntil, type MasterHandle } from '../support/cluster.js'
import { parsePrometheus, promValue, type PromFamily } from '../support/prometheus.js'
import { promtoolCheck } from '../support/promtool.js'

// What operators look at, on a real master process with real workers: /metrics, /healthz and
// /api/workers/{id}/metrics.

async function scrape(master: MasterHandle): Promise<Map<string, PromFamily>> {
  const res = await fetch(`${master.api}/metrics`, { signal: AbortSignal.timeout(10_000) })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  return parsePrometheus(await res.text())
}

/** Scrapes until `check` holds for the parsed metrics. */
function scrapeUntil(master: MasterHandle, what: string, check: (m: Map<string, PromFamily>) => boolean): Promise<Map<string, PromFamily>> {
  return waitUntil(async () => {
    const m = await scrape(master)
    return check(m) ? m : undefined
  }, what)
}

const v = (m: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number => promValue(m, name, labels) ?? Number.NaN

test('/metrics, /healthz and worker metrics follow dials, heartbeats, disconnections and reconnections', async (t) => {
  const dataDir = tempDir(t)
  const master = await startMaster(t, {
    dataDir,
    args: [...FAST_MASTER_FLAGS, '--telemetry-threads', 'per-worker', '--telemetry-step', '1s', '--health-max-inactive', '1500ms', '--health-reconnect-within', '1m'],
  })
  let m = await scrape(master)
  for (const name of ['cloudai_workers_active', 'cloudai_workers_inactive', 'cloudai_reconnect_attempts_total', 'cloudai_reconnect_successes_total',
    'cloudai_reconnect_failures_total', 'cloudai_reconnect_success_ratio', 'cloudai_time_to_reconnect_seconds', 'cloudai_time_to_first_connection_seconds',
    'cloudai_heartbeats_received_total', 'cloudai_telemetry_dropped_samples_total', 'cloudai_task_queue_depth', 'cloudai_worker_uptime_seconds',
    'cloudai_heartbeat_processing_delay_seconds', 'cloudai_reconnect_dial_duration_seconds', 'cloudai_telemetry_queue_depth', 'cloudai_reconnect_passes_total',
    'cloudai_reconnect_last_pass_duration_seconds', 'cloudai_reconnect_last_pass_event_loop_delay_p99_seconds', 'cloudai_reconnect_last_pass_event_loop_delay_max_seconds']) {
    assert.ok(m.has(name), `/metrics has ${name}`)
  }
  assert.equal(m.get('cloudai_time_to_reconnect_seconds')!.type, 'histogram')
  assert.equal(v(m, 'cloudai_reconnect_attempts_total'), 0)
  assert.equal(v(m, 'cloudai_reconnect_passes_total'), 0)
  assert.ok(Number.isNaN(v(m, 'cloudai_reconnect_last_pass_duration_seconds')), 'no sample before the first pass')
  assert.equal((await api(master.api, '/healthz')).status, 200)

  // A worker that never comes up: dials fail (refused), it has no telemetry, and once it has been
  // inactive past the shortened threshold the master is unhealthy and says which worker.
  const ghostPort = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'ghost', worker_ip: `127.0.0.1:${ghostPort}` } })).status, 201)
  m = await scrapeUntil(master, 'failed dials to the ghost', (x) => v(x, 'cloudai_reconnect_failures_total', { outcome: 'refused' }) >= 2)
  assert.ok(v(m, 'cloudai_reconnect_attempts_total') >= 2)
  assert.equal(v(m, 'cloudai_reconnect_success_ratio'), 0)
  assert.ok(v(m, 'cloudai_reconnect_dial_duration_seconds_count') >= 2)
  assert.equal(v(m, 'cloudai_workers_inactive'), 1)
  // The monitor's passes (every 300 ms) dial the ghost: each reports what it cost the main thread.
  m = await scrapeUntil(master, 'a reconnection pass', (x) => v(x, 'cloudai_reconnect_passes_total') >= 1)
  assert.equal(v(m, 'cloudai_reconnect_last_pass_dials'), 1)
  assert.ok(v(m, 'cloudai_reconnect_last_pass_duration_seconds') >= 0)
  assert.ok(Math.abs(v(m, 'cloudai_reconnect_last_pass_start_time_seconds') - Date.now() / 1000) < 60)
  // One dial never runs heavy: its pass's event-loop delay was not sampled, so it has no sample (not 0).
  assert.ok(Number.isNaN(v(m, 'cloudai_reconnect_last_pass_event_loop_delay_p99_seconds')), 'no delay sample for a pass that was not sampled')
  assert.ok(Number.isNaN(v(m, 'cloudai_reconnect_last_pass_event_loop_delay_max_seconds')))
  const ghost = await api(master.api, '/api/workers/ghost/metrics')
  assert.equal(ghost.status, 200, 'a registered worker that never connected has no data, which is not an error')
  assert.equal(ghost.body.has_data, false)
  assert.equal(ghost.body.latest, null)
  assert.deepEqual(ghost.body.history, [])
  assert.equal((await api(master.api, '/api/workers/nobody/metrics')).status, 404)
  const unhealthy = await waitUntil(async () => {
    const h = await api(master.api, '/healthz')
    return h.status === 503 ? h.body : undefined
  }, '/healthz to turn 503')
  assert.equal(unhealthy.status, 'unhealthy')
  assert.deepEqual(unhealthy.reasons.map((r: { check: string }) => r.check), ['inactive-workers'])
  assert.deepEqual(unhealthy.reasons[0].worker_ids, ['ghost'])
  // The CLI says the same, and exits 1 so that scripts can use it.
  const health = await runCli(['health', '--api', master.api])
  assert.equal(health.code, 1, health.stderr)
  assert.match(health.stdout, /^○ Unhealthy {2}\(1 worker: 0 active, 1 inactive; monitor running; sqlite store ok\)\n {2}- 1 worker\(s\) have been inactive for more than 1500 ms: ghost\n$/)
  const noData = await runCli(['metrics', 'ghost', '--api', master.api])
  assert.equal(noData.code, 0, noData.stderr)
  assert.match(noData.stdout, /No telemetry yet/)
  const badSince = await runCli(['metrics', 'ghost', '--since', 'soon', '--api', master.api])
  assert.equal(badSince.code, 2)
  assert.match(badSince.stderr, /--since "soon" is not a time/)

  // A real worker: heartbeats are counted, processed on its telemetry thread and shown.
  const workerPort = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${workerPort}` } })).status, 201)
  let worker = await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${master.grpcPort}` })
  m = await scrapeUntil(master, 'heartbeats of w1 processed', (x) => v(x, 'cloudai_heartbeats_processed_total') >= 5)
  assert.ok(v(m, 'cloudai_heartbeats_received_total') >= v(m, 'cloudai_heartbeats_processed_total'))
  assert.equal(v(m, 'cloudai_workers_active'), 1)
  assert.equal(v(m, 'cloudai_worker_first_connections_total'), 1)
  assert.equal(v(m, 'cloudai_time_to_first_connection_seconds_count'), 1)
  assert.ok(v(m, 'cloudai_heartbeat_processing_delay_seconds_count') >= 5)
  assert.ok(v(m, 'cloudai_worker_uptime_seconds', { worker_id: 'w1' }) >= 0)
  assert.equal(v(m, 'cloudai_telemetry_threads'), 1, 'per-worker: one thread for the one connected worker')
  const metrics = await waitUntil(async () => {
    const r = await api(master.api, '/api/workers/w1/metrics')
    return r.body.averages?.['1m'] ? r.body : undefined
  }, 'averages of w1')
  assert.equal(metrics.has_data, true)
  assert.equal(metrics.is_active, true)
  assert.ok(metrics.history.length >= 1)
  assert.ok(metrics.latest.cpu >= 0 && metrics.latest.cpu <= 100)
  assert.ok(metrics.since_last_heartbeat_ms < 5000)
  assert.equal(metrics.reconnects, 0)
  const future = new Date(Date.now() + 3_600_000).toISOString()
  assert.deepEqual((await api(master.api, `/api/workers/w1/metrics?since=${future}`)).body.history, [])
  assert.equal((await api(master.api, '/api/workers/w1/metrics?since=soon')).status, 400)

  const shown = await runCli(['metrics', 'w1', '--since', '10m', '--api', master.api])
  assert.equal(shown.code, 0, shown.stderr)
  assert.match(shown.stdout, /^Worker: +w1 \(active\)$/m)
  assert.match(shown.stdout, /^1m +\d+\.\d%/m)
  assert.match(shown.stdout, /^History, one point per 1s/m)

  // Unregistering the ghost makes the master healthy again.
  assert.equal((await api(master.api, '/api/workers/ghost', { method: 'DELETE' })).status, 200)
  assert.equal((await api(master.api, '/healthz')).status, 200)
  const healthy = await runCli(['health', '--api', master.api])
  assert.equal(healthy.code, 0, healthy.stderr)
  assert.match(healthy.stdout, /^● Healthy/)

  // kill -9 the worker and start it again: a disconnection and a reconnection, both measured.
  const mark = master.proc.mark()
  await worker.kill('SIGKILL')
  await master.proc.waitForLog(msgHas('w1 became inactive'), 'w1 inactive', { from: mark })
  worker = await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${master.grpcPort}` })
  m = await scrapeUntil(master, 'the reconnection of w1', (x) => v(x, 'cloudai_worker_reconnects_total') === 1)
  assert.equal(v(m, 'cloudai_time_to_reconnect_seconds_count'), 1)
  assert.ok(v(m, 'cloudai_time_to_reconnect_seconds_sum') > 0)
  assert.equal((await api(master.api, '/api/workers/w1/metrics')).body.reconnects, 1)
})

// Prometheus' own linter, on what a live master with an active worker serves (per-worker series,
// histograms with observations, prom-client's process gauges).
test('/metrics passes promtool check metrics', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const workerPort = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${workerPort}` } })).status, 201)
  await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${master.grpcPort}` })
  await scrapeUntil(master, 'heartbeats of w1 processed', (x) => v(x, 'cloudai_heartbeats_processed_total') >= 2 && v(x, 'cloudai_worker_uptime_seconds', { worker_id: 'w1' }) >= 0)
  const res = await fetch(`${master.api}/metrics`, { signal: AbortSignal.timeout(10_000) })
  const { code, output } = await promtoolCheck(await res.text())
  assert.equal(output, '', 'no lint findings')
  assert.equal(code, 0)
})
