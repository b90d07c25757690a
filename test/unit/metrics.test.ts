import assert from 'node:assert/strict'
import fs, { closeSync, mkdtempSync, openSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { mock, test } from 'node:test'
import { Counters } from '../../src/master/counters.js'
import { MasterMetrics } from '../../src/master/metrics.js'
import { Registry } from '../../src/master/registry.js'
import type { TelemetryHub } from '../../src/master/telemetry/hub.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'

const linux = process.platform === 'linux'

function metrics(registry = new Registry(), now?: () => number): MasterMetrics {
  const telemetry = { threadCount: 0, laneCount: 0, queueDepths: () => [] } as unknown as TelemetryHub
  const taskCounts = () => ({ queued: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0 })
  return new MasterMetrics({ counters: new Counters(), registry, telemetry, monitor: () => 'disabled', taskCounts: taskCounts as never, ...(now ? { now } : {}) })
}

function sample(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  assert.ok(m, `no ${name} sample in:\n${text.slice(0, 2000)}`)
  return Number(m[1])
}

/** What prom-client's default gauge counted: the listing, minus the descriptor the listing itself held. */
const listed = (): number => readdirSync('/proc/self/fd').length - 1

test('cloudai_process_process_open_fds counts the open descriptors and follows files opened and closed', { skip: !linux && 'Linux only (/proc)' }, async (t) => {
  const m = metrics()
  const dir = mkdtempSync(join(tmpdir(), 'cloudai-fds-'))
  const fds: number[] = []
  t.after(() => {
    for (const fd of fds) closeSync(fd)
    rmSync(dir, { recursive: true, force: true })
  })
  const before = sample(await m.text(), 'cloudai_process_process_open_fds')
  assert.equal(before, listed())
  for (let i = 0; i < 50; i++) fds.push(openSync(join(dir, `f${i}`), 'w'))
  assert.equal(sample(await m.text(), 'cloudai_process_process_open_fds'), before + 50)
  for (const fd of fds.splice(0, 20)) closeSync(fd)
  assert.equal(sample(await m.text(), 'cloudai_process_process_open_fds'), before + 30)
  assert.equal(sample(await m.text(), 'cloudai_process_process_open_fds'), listed())
})

test('a /metrics scrape does not list /proc/self/fd (one name per descriptor, 10,000 at 10,000 workers)', { skip: !linux && 'Linux only (/proc)' }, async (t) => {
  const m = metrics()
  const readdir = mock.method(fs, 'readdirSync')
  t.after(() => readdir.mock.restore())
  const text = await m.text()
  assert.ok(sample(text, 'cloudai_process_process_open_fds') > 0)
  const listings = readdir.mock.calls.filter((c) => String(c.arguments[0]).startsWith('/proc/self/fd'))
  assert.equal(listings.length, 0, 'the scrape listed /proc/self/fd')
})

test('cloudai_worker_uptime_seconds has a sample per active worker, in a scrape Prometheus reads', async () => {
  const registry = new Registry()
  const specs = { cpu: 1, memory: 1, storage: 1, gpu: 0 }
  for (const id of ['w-1', 'w.2', 'w_3']) registry.register(id, '127.0.0.1:1', 1_000)
  registry.connect('w-1', { specs, reportedAddress: null }, 10_000)
  registry.connect('w.2', { specs, reportedAddress: null }, 12_500)
  registry.connect('w_3', { specs, reportedAddress: null }, 12_500)
  registry.markInactive('w_3', 'heartbeat-timeout', 13_000)
  const families = parsePrometheus(await metrics(registry, () => 20_000).text())
  const uptime = families.get('cloudai_worker_uptime_seconds')
  assert.equal(uptime?.type, 'gauge')
  assert.deepEqual(uptime?.samples.map((x) => x.labels.worker_id), ['w-1', 'w.2'])
  assert.equal(promValue(families, 'cloudai_worker_uptime_seconds', { worker_id: 'w-1' }), 10)
  assert.equal(promValue(families, 'cloudai_worker_uptime_seconds', { worker_id: 'w.2' }), 7.5)
  // The rest of the scrape is intact around it.
  assert.equal(promValue(families, 'cloudai_workers_active'), 2)
})
