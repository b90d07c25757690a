import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  formatAge,
  formatError,
  formatEvent,
  formatHealth,
  formatRegistered,
  formatTokenIssued,
  formatStatus,
  formatTask,
  formatTaskCancelled,
  formatTaskCounts,
  formatTasks,
  formatTaskSubmitted,
  formatUnregistered,
  formatUptime,
  formatWorkerMetrics,
  formatWorkers,
} from '../../src/cli/format.js'
import { toWorkerView, type ClusterStatus, type TaskView, type WorkerMetricsView, type WorkerView } from '../../src/master/views.js'
import { CloudaiError } from '../../src/shared/errors.js'

const NOW = Date.parse('2025-11-17T10:30:00.000Z')
const ago = (ms: number): string => new Date(NOW - ms).toISOString()

/** A worker as the master shows it (views.ts), registered an hour ago and never connected; `overrides` for the rest. */
function worker(id: string, overrides: Partial<WorkerView> = {}): WorkerView {
  const record = { id, address: '127.0.0.1:50052', isActive: false, specs: null, usage: null, runningTasks: [], reportedAddress: null, registeredAt: NOW - 3_600_000, connectedAt: null, lastHeartbeat: null, disconnectedAt: null, reconnects: 0, credential: null }
  return { ...toWorkerView(record), ...overrides }
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

test('the workers table says which workers are cordoned, draining or drained, and counts them in the summary', () => {
  const drain = { started_at: ago(60_000), deadline: null, force: false, drained_at: null }
  const text = formatWorkers([
    { ...active, scheduling: 'cordoned', cordoned: true },
    { ...active, worker_id: 'worker-2', scheduling: 'draining', cordoned: true, drain },
    { ...inactive, scheduling: 'drained', cordoned: true, drain: { ...drain, drained_at: ago(1000) } },
  ], { now: NOW, color: false })
  assert.match(text, /^worker-1  ● Active, cordoned /m)
  assert.match(text, /^worker-2  ● Active, draining /m)
  assert.match(text, /^w2        ○ Inactive, drained /m)
  assert.match(text, /3 workers: 2 active, 1 inactive; 3 cordoned \(no new tasks\)$/)
})

test('colour marks the status only, and the columns stay aligned around it', () => {
  const plain = formatWorkers([active, inactive], { now: NOW, color: false })
  const colored = formatWorkers([active, inactive], { now: NOW, color: true })
  assert.ok(colored.includes('\x1b[32m● Active\x1b[39m'))
  assert.ok(colored.includes('\x1b[31m○ Inactive\x1b[39m'))
  assert.equal(colored.replace(/\x1b\[[0-9;]*m/g, ''), plain)
})

test('a suspect worker (active, its last AssignTask unanswered) shows as such, in yellow, and the summary counts it', () => {
  const suspect = { ...active, worker_id: 'worker-3', suspect: true, suspect_since: active.last_heartbeat, suspect_reason: 'AssignTask failed (UNAVAILABLE)' }
  const text = formatWorkers([active, suspect], { now: NOW, color: false })
  assert.match(text, /^worker-3 +◐ Suspect +10\.0\.0\.7:50052/m)
  assert.match(text, /\n2 workers: 2 active \(1 suspect\), 0 inactive$/)
  assert.ok(formatWorkers([suspect], { now: NOW, color: true }).includes('\x1b[33m◐ Suspect\x1b[39m'))
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
  tasks: { queued: 2, assigned: 0, running: 1, completed: 5, failed: 0, cancelled: 1 },
  store: { kind: 'sqlite', healthy: true, pending_writes: 0, last_error: null },
  grpc_address: '10.0.0.1:50051',
  started_at: ago(3_725_000),
  uptime_s: 3725,
}

test('status prints the counts, monitor state, store health and uptime', () => {
  assert.equal(
    formatStatus(STATUS),
    ['Workers:   3', 'Active:    2', 'Inactive:  1', 'Tasks:     2 queued, 1 running, 5 completed, 1 cancelled', 'Monitor:   running', 'Store:     sqlite, healthy', 'gRPC:      10.0.0.1:50051', 'Uptime:    1h 2m'].join('\n'),
  )
  const failing = formatStatus({ ...STATUS, reconnect_monitor: 'disabled', store: { kind: 'sqlite', healthy: false, pending_writes: 4, last_error: 'SQLITE_FULL: disk full' } })
  assert.match(failing, /^Monitor: +disabled$/m)
  assert.match(failing, /^Store: +sqlite, FAILING \(4 pending writes\): SQLITE_FULL: disk full$/m)
  assert.match(formatStatus({ ...STATUS, tasks: { queued: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0 } }), /^Tasks: +none$/m)
  // A master from before tasks sends no counts: no Tasks line rather than a wrong one.
  const { tasks: _, ...old } = STATUS
  assert.doesNotMatch(formatStatus(old as ClusterStatus), /Tasks/)
  assert.match(formatStatus({ ...STATUS, worker_auth: 'token' }), /^Worker auth: +token \(without one: loopback only/m)
  assert.match(formatStatus({ ...STATUS, worker_auth: 'none' }), /^Worker auth: +none \(WARNING: workers without a token are accepted from any address/m)
})

test('register says whether the worker is new and offline, new and already active, or already registered', () => {
  assert.equal(formatRegistered({ worker: inactive, created: true, persisted: true }), '✅ Worker w2 registered (offline, will reconnect automatically)')
  assert.equal(formatRegistered({ worker: active, created: true, persisted: true }), '✅ Worker worker-1 registered (already connected and active)')
  assert.equal(formatRegistered({ worker: active, created: false, persisted: true }), 'Worker worker-1 is already registered at 10.0.0.7:50052 (active)\n   its token is not shown again; `cloudai token rotate worker-1` issues a new one')
  const token = `cwt1_${'Z'.repeat(43)}`
  assert.equal(formatRegistered({ worker: inactive, created: true, persisted: true, token }), [
    '✅ Worker w2 registered (offline, will reconnect automatically)',
    `Token: ${token}`,
    '   Shown once: the master keeps only its hash. Give it to the worker, for example in a file only it can read:',
    '   cloudai worker --id w2 --token-file <file>   (or CLOUDAI_WORKER_TOKEN=<token>, or --token <token>)',
  ].join('\n'))
  assert.match(formatTokenIssued({ worker_id: 'w2', token, previous_valid_until: null, persisted: true }), /^✅ New token for worker w2\. No earlier token of it works any more\.\nToken: cwt1_Z+\n/)
  assert.match(formatRegistered({ worker: inactive, created: true, persisted: false }), /registered \(offline.*\n.*store is failing/)
  assert.equal(formatUnregistered({ worker_id: 'w2', persisted: true }), 'Worker w2 unregistered (the master no longer dials it)')
})

test('errors print as "error: <message> (<code>)"; anything else is an internal error', () => {
  assert.equal(formatError(new CloudaiError('CLOUDAI_UNKNOWN_WORKER', 'worker w9 is not registered')), 'error: worker w9 is not registered (CLOUDAI_UNKNOWN_WORKER)')
  assert.equal(formatError(new Error('boom')), 'error: internal error: boom (CLOUDAI_INTERNAL)')
})

function task(id: string, overrides: Partial<TaskView> = {}): TaskView {
  return {
    durable: true,
    task_id: id,
    name: '',
    command: 'echo hello',
    docker_image: '',
    status: 'queued',
    worker_id: null,
    target_worker_id: null,
    req_cpu: 0,
    req_memory: 0,
    req_storage: 0,
    req_gpu: 0,
    timeout_s: 0,
    max_attempts: 3,
    attempts: 0,
    attempt: 0,
    submitted_at: ago(12_000),
    assigned_at: null,
    started_at: null,
    finished_at: null,
    exit_code: null,
    reason: null,
    logs: '',
    history: [{ status: 'queued', at: ago(12_000), worker_id: null, reason: null }],
    ...overrides,
  }
}

const done = task('task-aaa', {
  name: 'greet',
  status: 'completed',
  worker_id: 'worker-1',
  req_cpu: 1,
  req_memory: 0.5,
  attempts: 1,
  attempt: 1,
  submitted_at: ago(125_000),
  assigned_at: ago(124_000),
  started_at: ago(123_500),
  finished_at: ago(121_000),
  exit_code: 0,
  logs: 'hello\n',
  history: [
    { status: 'queued', at: ago(125_000), worker_id: null, reason: null },
    { status: 'assigned', at: ago(124_000), worker_id: 'worker-1', reason: null },
    { status: 'running', at: ago(123_500), worker_id: 'worker-1', reason: null },
    { status: 'completed', at: ago(121_000), worker_id: 'worker-1', reason: null },
  ],
})
const failed = task('task-bbb', { status: 'failed', worker_id: 'w2', attempts: 3, exit_code: 137, command: 'python train.py --epochs 100 --batch-size 64 --lr 0.001', submitted_at: ago(3 * 3_600_000) })
const waiting = task('task-ccc')

test('the tasks table: name (or command), status, worker, attempts, age, exit code and a count by status', () => {
  const text = formatTasks({ tasks: [waiting, done, failed], total: 3 }, { now: NOW, color: false })
  assert.equal(
    text,
    [
      'ID        NAME                              STATUS     WORKER    ATTEMPTS  SUBMITTED  EXIT',
      'task-ccc  echo hello                        queued     -              0/3  12s ago       -',
      'task-aaa  greet                             completed  worker-1       1/3  2m ago        0',
      'task-bbb  python train.py --epochs 100 --…  failed     w2             3/3  3h ago      137',
      '',
      '3 tasks: 1 queued, 1 completed, 1 failed',
    ].join('\n'),
  )
})

test('the tasks table says why a queued task that no registered worker could run waits', () => {
  const huge = { ...waiting, reason: 'no registered worker is large enough for 64 CPU, 0 GB memory, 0 GPU, 0 GB storage' }
  const text = formatTasks({ tasks: [huge, done], total: 2 }, { now: NOW, color: false })
  assert.match(text, /\n\ntask-ccc waits: no registered worker is large enough for 64 CPU, 0 GB memory, 0 GPU, 0 GB storage\n\n2 tasks: 1 queued, 1 completed$/)
})

test('task statuses are coloured on a terminal only, and the columns stay aligned', () => {
  const plain = formatTasks({ tasks: [waiting, done, failed], total: 3 }, { now: NOW, color: false })
  const colored = formatTasks({ tasks: [waiting, done, failed], total: 3 }, { now: NOW, color: true })
  assert.ok(colored.includes('\x1b[33mqueued\x1b[39m'))
  assert.ok(colored.includes('\x1b[32mcompleted\x1b[39m'))
  assert.ok(colored.includes('\x1b[31mfailed\x1b[39m'))
  assert.equal(colored.replace(/\x1b\[[0-9;]*m/g, ''), plain)
  assert.ok(!plain.includes('\x1b['))
})

test('a page of a longer list says so; an empty list says why', () => {
  assert.match(formatTasks({ tasks: [waiting], total: 250, offset: 0 }, { now: NOW, color: false }), /\nShowing 1 of 250 tasks \(newest first; --limit and --offset show others\): 1 queued$/)
  assert.match(formatTasks({ tasks: [waiting], total: 1 }, { now: NOW, color: false }), /\n1 task: 1 queued$/)
  assert.equal(formatTasks({ tasks: [], total: 0 }, { now: NOW, color: false }), 'No tasks yet: submit one with task submit -- <command...>')
  assert.equal(formatTasks({ tasks: [], total: 0 }, { now: NOW, color: false, status: 'queued' }), 'No queued tasks')
  assert.equal(formatTasks({ tasks: [], total: 7, offset: 100 }, { now: NOW, color: false }), 'No tasks at offset 100: there are 7 tasks')
  assert.equal(formatTaskCounts({ queued: 0, running: 2, cancelled: 1 }), '2 running, 1 cancelled')
  assert.equal(formatTaskCounts({}), 'none')
})

test('one task: its fields, times as ISO and age, the history, and the end of its output last', () => {
  const text = formatTask({ ...done, target_worker_id: 'worker-1', timeout_s: 90, docker_image: 'python:3.12' }, { now: NOW, color: false })
  assert.equal(
    text,
    [
      'Task:       task-aaa',
      'Name:       greet',
      'Status:     completed',
      'Command:    echo hello',
      'Image:      python:3.12',
      'Worker:     worker-1',
      'Target:     worker-1 only',
      'Needs:      cpu 1, memory 0.5 GB, gpu 0, storage 0 GB',
      'Timeout:    1m 30s',
      'Attempts:   1 of 3',
      'Exit code:  0',
      'Submitted:  2025-11-17T10:27:55.000Z (2m ago)',
      'Assigned:   2025-11-17T10:27:56.000Z (2m ago)',
      'Started:    2025-11-17T10:27:56.500Z (2m ago)',
      'Finished:   2025-11-17T10:27:59.000Z (2m ago)',
      'Duration:   2.5s',
      '',
      'History:',
      '  2025-11-17T10:27:55.000Z  queued',
      '  2025-11-17T10:27:56.000Z  assigned   worker-1',
      '  2025-11-17T10:27:56.500Z  running    worker-1',
      '  2025-11-17T10:27:59.000Z  completed  worker-1',
      '',
      'Logs (the end of the output; the full log stays on the worker):',
      'hello',
    ].join('\n'),
  )
})

test('one task placed more often than it ran: its attempts say the placement number too (the worker\'s task directory)', () => {
  const text = formatTask({ ...done, attempts: 1, attempt: 2 }, { now: NOW, color: false })
  assert.match(text, /^Attempts: {3}1 of 3 \(placement 2\)$/m)
  assert.match(formatTask(done, { now: NOW, color: false }), /^Attempts: {3}1 of 3$/m, 'the same number: said once')
})

test('a waiting task shows no empty times, and a failed one its reason', () => {
  const text = formatTask(waiting, { now: NOW, color: false })
  assert.doesNotMatch(text, /^(Name|Image|Target|Assigned|Started|Finished|Duration|Reason):/m)
  assert.match(text, /^Timeout: +none$/m)
  assert.match(text, /^Exit code: +-$/m)
  assert.match(text, /\n\nLogs: none yet \(the task has not started\)$/)
  const lost = formatTask({ ...failed, reason: 'worker w2 lost 3 times', started_at: ago(1000), history: [{ status: 'failed', at: ago(0), worker_id: null, reason: 'worker w2 lost 3 times' }] }, { now: NOW, color: false })
  assert.match(lost, /^Reason: +worker w2 lost 3 times$/m)
  assert.match(lost, /^ {2}\S+Z {2}failed {2}worker w2 lost 3 times$/m)
  assert.match(lost, /\n\nLogs: no output$/)
  assert.match(formatTask(failed, { now: NOW, color: true }), /^Status: +\x1b\[31mfailed\x1b\[39m$/m)
})

test('submit and cancel print one line', () => {
  assert.equal(formatTaskSubmitted(waiting), '✅ Task task-ccc queued')
  const huge = { ...waiting, reason: 'no registered worker is large enough for 64 CPU, 0 GB memory, 0 GPU, 0 GB storage' }
  assert.equal(formatTaskSubmitted(huge), '✅ Task task-ccc queued\n⚠ It waits: no registered worker is large enough for 64 CPU, 0 GB memory, 0 GPU, 0 GB storage')
  assert.match(formatTaskSubmitted({ ...waiting, durable: false }), /^⚠ Task task-ccc queued in memory only/)
  assert.equal(formatTaskCancelled({ ...waiting, status: 'cancelled' }), 'Task task-ccc cancelled')
  assert.equal(formatTaskCancelled({ ...waiting, status: 'running' }), 'Task task-ccc: cancel requested (now running)')
})

test('health: the verdict, the counts, and one line per failed check naming its workers', () => {
  const okStore = { kind: 'sqlite', status: 'ok' as const, backlog: 0, degraded_since: null, last_error: null }
  const healthy = formatHealth(
    { status: 'healthy', reasons: [], reconnect_monitor: 'running', workers: { total: 3, active: 3, inactive: 0 }, thresholds: { max_inactive_ms: 300_000, reconnect_within_ms: 60_000 }, store: okStore },
    { color: false },
  )
  assert.equal(healthy, '● Healthy  (3 workers: 3 active, 0 inactive; monitor running; sqlite store ok)')
  const warned = formatHealth(
    { status: 'healthy', reasons: [], warnings: [{ check: 'worker-auth', message: '--worker-auth none: anyone can act as a worker' }], reconnect_monitor: 'running', workers: { total: 3, active: 3, inactive: 0 }, thresholds: { max_inactive_ms: 300_000, reconnect_within_ms: 60_000 }, store: okStore },
    { color: false },
  )
  assert.equal(warned, '● Healthy  (3 workers: 3 active, 0 inactive; monitor running; sqlite store ok)\n  ! warning: --worker-auth none: anyone can act as a worker', 'a warning, and still healthy')
  const degraded = formatHealth(
    {
      status: 'degraded',
      reasons: [{ check: 'store', message: 'the sqlite store is not answering (database is locked): running from memory, 7 change(s) journalled', count: 7 }],
      reconnect_monitor: 'running',
      workers: { total: 3, active: 3, inactive: 0 },
      thresholds: { max_inactive_ms: 300_000, reconnect_within_ms: 60_000 },
      store: { kind: 'sqlite', status: 'degraded', backlog: 7, degraded_since: '2026-11-28T00:00:00.000Z', last_error: 'database is locked' },
    },
    { color: false },
  )
  assert.equal(degraded, [
    '◐ Degraded  (3 workers: 3 active, 0 inactive; monitor running; sqlite store degraded)',
    '  - the sqlite store is not answering (database is locked): running from memory, 7 change(s) journalled',
  ].join('\n'))
  const sick = formatHealth(
    {
      status: 'unhealthy',
      reasons: [
        { check: 'reconnect-monitor', message: 'the reconnection monitor is disabled: inactive workers are not dialled' },
        { check: 'inactive-workers', message: '102 worker(s) have been inactive for more than 5 min', worker_ids: ['a', 'b'], count: 102 },
      ],
      reconnect_monitor: 'disabled',
      workers: { total: 110, active: 8, inactive: 102 },
      thresholds: { max_inactive_ms: 300_000, reconnect_within_ms: 60_000 },
      store: okStore,
    },
    { color: false },
  )
  assert.equal(sick, [
    '○ Unhealthy  (110 workers: 8 active, 102 inactive; monitor disabled; sqlite store ok)',
    '  - the reconnection monitor is disabled: inactive workers are not dialled',
    '  - 102 worker(s) have been inactive for more than 5 min: a, b and 100 more',
  ].join('\n'))
})

test('worker metrics: latest, the windows, and the newest history points', () => {
  const none = { '1m': null, '5m': null, '15m': null, '1h': null }
  const base: WorkerMetricsView = {
    worker_id: 'w1', is_active: false, has_data: false, uptime_s: null, last_heartbeat: null, since_last_heartbeat_ms: null, reconnects: 0,
    registered_at: ago(60_000), connected_at: null, disconnected_at: null, latest: null, averages: { ...none }, peaks: { ...none },
    samples_processed: 0, samples_dropped: 0, summarized_at: null, history_step_ms: 5000, history: [],
  }
  assert.match(formatWorkerMetrics(base, { now: NOW, color: false }), /No telemetry yet: the worker has not connected to this master\.$/)
  const point = (at: string, cpu: number) => ({ at, samples: 5, cpu, memory: 20, storage: 30, gpu: 0, running_tasks: 1, cpu_peak: cpu + 5, memory_peak: 21, storage_peak: 30, gpu_peak: 0 })
  const text = formatWorkerMetrics({
    ...base,
    is_active: true,
    has_data: true,
    uptime_s: 125,
    last_heartbeat: ago(2000),
    samples_processed: 15,
    samples_dropped: 1,
    latest: { at: ago(2000), cpu: 12.5, memory: 20, storage: 30, gpu: 0, running_tasks: 1 },
    averages: { ...none, '1m': { cpu: 11, memory: 20, storage: 30, gpu: 0, running_tasks: 1, samples: 15 } },
    peaks: { ...none, '1m': { cpu: 15, memory: 21, storage: 30, gpu: 0 } },
    history: [point('2025-11-17T10:29:50.000Z', 10), point('2025-11-17T10:29:55.000Z', 11), point('2025-11-17T10:30:00.000Z', 12)],
  }, { now: NOW, color: false, historyRows: 2 })
  assert.equal(text, [
    'Worker:      w1 (active)',
    'Uptime:      2m 5s',
    'Heartbeat:   2s ago',
    'Reconnects:  0',
    'Samples:     15 processed, 1 dropped',
    '',
    '          CPU    MEM   DISK   GPU  TASKS  PEAK CPU  PEAK MEM  SAMPLES',
    'latest  12.5%  20.0%  30.0%  0.0%      1',
    '1m      11.0%  20.0%  30.0%  0.0%      1     15.0%     21.0%       15',
    '5m          -      -      -     -      -         -         -        0',
    '15m         -      -      -     -      -         -         -        0',
    '1h          -      -      -     -      -         -         -        0',
    '',
    'History, one point per 5s (last 2 of 3 points):',
    'AT (UTC)    CPU    MEM   DISK   GPU  TASKS  PEAK CPU  SAMPLES',
    '10:29:55  11.0%  20.0%  30.0%  0.0%      1     16.0%        5',
    '10:30:00  12.0%  20.0%  30.0%  0.0%      1     17.0%        5',
  ].join('\n'))
  // Older than the fine tier, the points are a minute wide: the header names both widths.
  const mixed = formatWorkerMetrics({
    ...base,
    is_active: true,
    has_data: true,
    history: [{ ...point('2025-11-17T10:19:00.000Z', 9), step_ms: 60_000 }, { ...point('2025-11-17T10:29:55.000Z', 11), step_ms: 5000 }],
  }, { now: NOW, color: false })
  assert.match(mixed, /^History, points of 5s and 60s:$/m)
})

test('watch lines: registrations once, status changes, task transitions with their detail', () => {
  const known = new Set<string>()
  const at = '2025-11-17T10:30:00Z'
  const w = worker('w1', { address: '10.0.0.7:50052' })
  const opts = { color: false, known }
  assert.equal(formatEvent({ type: 'worker', worker: w, timestamp: at }, opts), '10:30:00  + w1 registered at 10.0.0.7:50052')
  assert.equal(formatEvent({ type: 'worker', worker: { ...w, is_active: true }, timestamp: at }, opts), null, 'a known worker\'s record adds nothing')
  assert.equal(formatEvent({ type: 'worker_status', worker_id: 'w1', is_active: true, timestamp: at }, opts), '10:30:00  ● w1 active')
  assert.equal(formatEvent({ type: 'worker_status', worker_id: 'w1', is_active: false, timestamp: at }, opts), '10:30:00  ○ w1 inactive')
  assert.equal(formatEvent({ type: 'worker_removed', worker_id: 'w1', timestamp: at }, opts), '10:30:00  - w1 unregistered')
  const t = { ...task('task-1'), name: 'nap', worker_id: 'w1', attempts: 1, max_attempts: 3 }
  const ev = (status: TaskView['status'], previous: TaskView['status'] | null, extra: Partial<TaskView> = {}) => {
    const v = { ...t, status, ...extra }
    return { type: 'task_status' as const, task_id: v.task_id, status, previous, worker_id: v.worker_id, submitted_at: v.submitted_at, assigned_at: null, started_at: null, finished_at: null, task: v, timestamp: at }
  }
  assert.equal(formatEvent(ev('assigned', 'queued'), opts), '10:30:00  task task-1 (nap) assigned to w1')
  assert.equal(formatEvent(ev('failed', 'running', { reason: 'exit code 2', exit_code: 2 }), opts), '10:30:00  task task-1 (nap) failed on w1: exit code 2')
  assert.equal(formatEvent(ev('queued', 'running', { worker_id: null }), opts), '10:30:00  task task-1 (nap) queued again (attempt 2 of 3)')
  assert.equal(formatEvent({ type: 'error', code: 'CLOUDAI_BAD_REQUEST', message: 'nope', timestamp: at }, opts), '10:30:00  error from the master: nope (CLOUDAI_BAD_REQUEST)')
})

test('an unregistration that requeued tasks says so', () => {
  assert.equal(formatUnregistered({ worker_id: 'w2', persisted: true, tasks_requeued: ['task-1', 'task-2'] }), 'Worker w2 unregistered (the master no longer dials it); its 2 task(s) went back to the queue (a connected worker is told to stop them)')
  assert.equal(formatUnregistered({ worker_id: 'w2', persisted: true, tasks_requeued: [] }), 'Worker w2 unregistered (the master no longer dials it)')
})

test('a master error about a field of task submit names the flag typed, and only the field it is about', () => {
  const flags = { target_worker_id: '--worker', name: '--name', env: '--env', docker_image: '--image' }
  const unknown = (id: string) => new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `target_worker_id ${id} is not a registered worker`)
  assert.equal(formatError(unknown('nope'), flags), 'error: --worker nope is not a registered worker (CLOUDAI_UNKNOWN_WORKER)')
  assert.equal(formatError(unknown('staging-env'), flags), 'error: --worker staging-env is not a registered worker (CLOUDAI_UNKNOWN_WORKER)')
  assert.equal(formatError(unknown('name'), flags), 'error: --worker name is not a registered worker (CLOUDAI_UNKNOWN_WORKER)')
  assert.equal(formatError(new CloudaiError('CLOUDAI_BAD_FIELD', 'docker_image: the image name is too long'), flags), 'error: --image: the image name is too long (CLOUDAI_BAD_FIELD)')
  assert.equal(formatError(new CloudaiError('CLOUDAI_BAD_FIELD', 'command is required'), flags), 'error: command is required (CLOUDAI_BAD_FIELD)')
  // The master names the field in details.field: that decides, not the message's first word.
  assert.equal(formatError(new CloudaiError('CLOUDAI_BAD_FIELD', 'env must be an object, got 3', { field: 'env' }), flags), 'error: --env must be an object, got 3 (CLOUDAI_BAD_FIELD)')
  assert.equal(formatError(new CloudaiError('CLOUDAI_BAD_FIELD', 'name of the image is too long', { field: 'docker_image' }), flags), 'error: --image: name of the image is too long (CLOUDAI_BAD_FIELD)')
  assert.equal(formatError(new CloudaiError('CLOUDAI_BAD_REQUEST', 'env is not taken here', { field: 'other' }), flags), 'error: env is not taken here (CLOUDAI_BAD_REQUEST)')
})
