import assert from 'node:assert/strict'
import { test } from 'node:test'
import { formatAge, formatError, formatRegistered, formatStatus, formatUnregistered, formatUptime, formatWorkers } from '../../src/cli/format.js'
import type { ClusterStatus, WorkerView } from '../../src/master/views.js'
import { CloudaiError } from '../../src/shared/errors.js'

const NOW = Date.parse('2025-11-17T10:30:00.000Z')
const ago = (ms: number): string => new Date(NOW - ms).toISOString()

function worker(id: string, overrides: Partial<WorkerView> = {}): WorkerView {
  return {
    worker_id: id,
    worker_ip: '127.0.0.1:50052',
    address: '127.0.0.1:50052',
    is_active: false,
    status: 'inactive',
    total_cpu: null,
    total_memory: null,
    total_storage: null,
    total_gpu: null,
    usage: null,
    running_tasks: [],
    reported_address: null,
    last_heartbeat: null,
    registered_at: ago(3_600_000),
    connected_at: null,
    disconnected_at: null,
    reconnects: 0,
    ...overrides,
  }
}

const active = worker('worker-1', {
  address: '10.0.0.7:50052',
  worker_ip: '10.0.0.7:50052',
  is_active: true,
  status: 'active',
  total_cpu: 8,
  total_memory: 15.62,
  usage: { cpu: 12.5, memory: 40, storage: 3, gpu: 0 },
  last_heartbeat: ago(12_400),
})
const inactive = worker('w2')

test('ages read as seconds, minutes, hours and days ago, and "never" without a heartbeat', () => {
  assert.equal(formatAge(null, NOW), 'never')
  assert.equal(formatAge(ago(0), NOW), '0s ago')
  assert.equal(formatAge(ago(12_999), NOW), '12s ago')
  assert.equal(formatAge(ago(59_999), NOW), '59s ago')
  assert.equal(formatAge(ago(60_000), NOW), '1m ago')
  assert.equal(formatAge(ago(3 * 60_000 + 59_000), NOW), '3m ago')
  assert.equal(formatAge(ago(5 * 3_600_000), NOW), '5h ago')
  assert.equal(formatAge(ago(2 * 86_400_000 + 1000), NOW), '2d ago')
  // A master clock slightly ahead of ours is not "-3s ago".
  assert.equal(formatAge(ago(-3000), NOW), '0s ago')
  assert.equal(formatAge('not a date', NOW), 'unknown')
})

test('uptime shows the two largest units', () => {
  assert.equal(formatUptime(0), '0s')
  assert.equal(formatUptime(42.9), '42s')
  assert.equal(formatUptime(192), '3m 12s')
  assert.equal(formatUptime(2 * 3600 + 5 * 60 + 7), '2h 5m')
  assert.equal(formatUptime(3 * 86_400 + 4 * 3600 + 59), '3d 4h')
})

test('the workers table: status, address, cores, GB, usage, heartbeat age and a summary line', () => {
  const text = formatWorkers([active, inactive], { now: NOW, color: false })
  assert.equal(
    text,
    [
      'ID        STATUS      ADDRESS          CPU      MEM   CPU%   MEM%  LAST HEARTBEAT',
      'worker-1  ● Active    10.0.0.7:50052     8  15.6 GB  12.5%  40.0%  12s ago',
      'w2        ○ Inactive  127.0.0.1:50052    -        -      -      -  never',
      '',
      '2 workers: 1 active, 1 inactive',
    ].join('\n'),
  )
})

test('colour marks the status only, and the columns stay aligned around it', () => {
  const plain = formatWorkers([active, inactive], { now: NOW, color: false })
  const colored = formatWorkers([active, inactive], { now: NOW, color: true })
  assert.ok(colored.includes('\x1b[32m● Active\x1b[39m'))
  assert.ok(colored.includes('\x1b[31m○ Inactive\x1b[39m'))
  assert.equal(colored.replace(/\x1b\[[0-9;]*m/g, ''), plain)
})

test('the summary counts one worker in the singular, and an empty list says how to add one', () => {
  assert.match(formatWorkers([active], { now: NOW, color: false }), /\n1 worker: 1 active, 0 inactive$/)
  assert.match(formatWorkers([], { now: NOW, color: false }), /No workers registered.*register <id> <host:port>/)
})

const STATUS: ClusterStatus = {
  workers: 3,
  active: 2,
  inactive: 1,
  reconnect_monitor: 'running',
  store: { kind: 'sqlite', healthy: true, pending_writes: 0, last_error: null },
  grpc_address: '10.0.0.1:50051',
  started_at: ago(3_725_000),
  uptime_s: 3725,
}

test('status prints the counts, monitor state, store health and uptime', () => {
  assert.equal(
    formatStatus(STATUS),
    ['Workers:   3', 'Active:    2', 'Inactive:  1', 'Monitor:   running', 'Store:     sqlite, healthy', 'gRPC:      10.0.0.1:50051', 'Uptime:    1h 2m'].join('\n'),
  )
  const failing = formatStatus({ ...STATUS, reconnect_monitor: 'disabled', store: { kind: 'sqlite', healthy: false, pending_writes: 4, last_error: 'SQLITE_FULL: disk full' } })
  assert.match(failing, /^Monitor: +disabled$/m)
  assert.match(failing, /^Store: +sqlite, FAILING \(4 pending writes\): SQLITE_FULL: disk full$/m)
})

test('register says whether the worker is new and offline, new and already active, or already registered', () => {
  assert.equal(formatRegistered({ worker: inactive, created: true, persisted: true }), '✅ Worker w2 registered (offline, will reconnect automatically)')
  assert.equal(formatRegistered({ worker: active, created: true, persisted: true }), '✅ Worker worker-1 registered (already connected and active)')
  assert.equal(formatRegistered({ worker: active, created: false, persisted: true }), 'Worker worker-1 is already registered at 10.0.0.7:50052 (active)')
  assert.match(formatRegistered({ worker: inactive, created: true, persisted: false }), /registered \(offline.*\n.*store is failing/)
  assert.equal(formatUnregistered({ worker_id: 'w2', persisted: true }), 'Worker w2 unregistered (the master no longer dials it)')
})

test('errors print as "error: <message> (<code>)"; anything else is an internal error', () => {
  assert.equal(formatError(new CloudaiError('CLOUDAI_UNKNOWN_WORKER', 'worker w9 is not registered')), 'error: worker w9 is not registered (CLOUDAI_UNKNOWN_WORKER)')
  assert.equal(formatError(new Error('boom')), 'error: internal error: boom (CLOUDAI_INTERNAL)')
})
