import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { MasterGrpcServer } from '../../src/master/grpc.js'
import { QueueProcessor } from '../../src/master/queue.js'
import { Registry } from '../../src/master/registry.js'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskTable } from '../../src/master/tasks.js'
import { WorkerCancels } from '../../src/master/worker-cancels.js'
import { WorkerClients } from '../../src/master/worker-clients.js'
import { CounterReader, Counters } from '../../src/master/counters.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { TaskRecord } from '../../src/shared/types.js'
import type { HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, RunningTaskMsg, TaskAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import { StoreJournal } from '../../src/store/journal.js'
import { waitUntil } from '../support/cluster.js'
import { FlakyStore } from '../support/flaky-store.js'
import { memoryLogger } from '../support/log.js'

// What a heartbeat's running_tasks may make the master do (issue 15): at most one CancelTask per
// task this master placed on that worker and per retry interval, a bounded number in flight per
// worker, and nothing but a count and one log line for ids it never placed there. Real gRPC on
// 127.0.0.1: the master's service and queue, and fake workers that record every CancelTask.

const SENTINEL = 'sentinel'

/** A worker's gRPC server that answers AssignTask and records CancelTask; answers for `hold` ids wait for release(). */
class FakeWorker {
  readonly cancels: string[] = []
  readonly hold = new Set<string>()
  private readonly held: (() => void)[] = []
  private readonly server = new grpc.Server()
  address = ''

  async start(t: TestContext): Promise<this> {
    this.server.addService(loadProto().service, {
      AssignTask: (_call: grpc.ServerUnaryCall<unknown, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => cb(null, { success: true, message: 'accepted' }),
      CancelTask: (call: grpc.ServerUnaryCall<{ task_id: string }, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => {
        this.cancels.push(call.request.task_id)
        const answer = (): void => cb(null, { success: true, message: 'cancelled' })
        if (this.hold.has(call.request.task_id)) this.held.push(answer)
        else answer()
      },
    })
    const port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))))
    this.address = `127.0.0.1:${port}`
    t.after(() => this.server.forceShutdown())
    return this
  }

  release(): void {
    for (const answer of this.held.splice(0)) answer()
  }

  /** CancelTask calls other than the test's own sentinels. */
  get fromMaster(): string[] {
    return this.cancels.filter((id) => id !== SENTINEL)
  }
}

interface Cluster {
  registry: Registry
  tasks: TaskTable
  clients: WorkerClients
  counts: CounterReader
  lines: ReturnType<typeof memoryLogger>['lines']
  client: MasterWorkerClient
  clock: { now: number }
}

async function startCluster(t: TestContext): Promise<Cluster> {
  const { log, lines } = memoryLogger('debug')
  const registry = new Registry()
  const journal = new StoreJournal(new FlakyStore(), registry, { log, limit: 1000 })
  journal.start(true)
  t.after(() => journal.close())
  const tasks = new TaskTable(journal)
  const counters = new Counters()
  const clients = new WorkerClients()
  const clock = { now: 1_000_000 }
  const queue = new QueueProcessor({ tasks, registry, clients, log, heartbeatTimeoutMs: 60_000, requeueAfterMs: 0, counters, cancels: { now: () => clock.now } })
  queue.start()
  t.after(() => queue.close())
  const server = new MasterGrpcServer({ registry, tasks: queue, counters, host: '127.0.0.1', port: 0, log })
  const port = await server.start()
  t.after(() => server.close(100))
  const client = new (loadProto().Client)(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  t.after(() => client.close())
  return { registry, tasks, clients, counts: new CounterReader(counters), lines, client, clock }
}

/** What the worker does to join: registered by the operator, then RegisterWorker from its address. */
async function join(c: Cluster, id: string, worker: FakeWorker): Promise<void> {
  if (!c.registry.get(id)) c.registry.register(id, worker.address, Date.now())
  const info: WorkerInfoMsg = { worker_id: id, worker_ip: worker.address, total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 }
  assert.equal((await callUnary<WorkerInfoMsg, RegisterAckMsg>(c.client, 'RegisterWorker', info, 5000).promise).success, true)
}

function heartbeat(c: Cluster, workerId: string, running: RunningTaskMsg[]): Promise<HeartbeatAckMsg> {
  const msg: HeartbeatMsg = { worker_id: workerId, cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: running }
  return callUnary<HeartbeatMsg, HeartbeatAckMsg>(c.client, 'SendHeartbeat', msg, 10_000).promise
}

const running = (taskId: string, attempt = 0): RunningTaskMsg => ({ task_id: taskId, cpu_allocated: 0, memory_allocated: 0, gpu_allocated: 0, status: 'running', attempt })

/**
 * Every CancelTask the master started before this reached the worker before this one: calls on
 * one channel open their HTTP/2 streams in order. So the worker's record is complete after it.
 */
async function sentinel(c: Cluster, id: string, worker: FakeWorker): Promise<void> {
  await callUnary<{ task_id: string }, TaskAckMsg>(c.clients.get(id, worker.address), 'CancelTask', { task_id: SENTINEL }, 5000).promise
}

function onceStatus(tasks: TaskTable, id: string, pred: (t: TaskRecord) => boolean): Promise<TaskRecord> {
  const now = tasks.get(id)
  if (now && pred(now)) return Promise.resolve(now)
  return new Promise((resolve) => {
    const on = (t: TaskRecord): void => {
      if (t.id !== id || !pred(t)) return
      tasks.off('task-changed', on)
      resolve(t)
    }
    tasks.on('task-changed', on)
  })
}

test('a heartbeat listing 10,000 running tasks the master never assigned sends no CancelTask and logs one line', { timeout: 60_000 }, async (t) => {
  const c = await startCluster(t)
  const w1 = await new FakeWorker().start(t)
  await join(c, 'w1', w1)
  const ghosts = Array.from({ length: 10_000 }, (_, i) => running(`task-ghost-${i}`))
  for (let i = 0; i < 3; i++) assert.equal((await heartbeat(c, 'w1', ghosts)).success, true)
  await sentinel(c, 'w1', w1)
  assert.deepEqual(w1.fromMaster, [], 'no CancelTask for ids this master never placed there')
  const said = c.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('never assigned'))
  assert.equal(said.length, 1, 'one line for three such heartbeats')
  assert.equal(said[0]!.unknownTasks, 10_000)
  assert.equal(c.counts.get('HEARTBEAT_UNKNOWN_TASKS'), 30_000)
  assert.equal(c.counts.get('STALE_TASK_CANCELS'), 0)
  assert.equal(c.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('CancelTask')).length, 0)
})

test('a task the master moved to another worker gets one CancelTask on the old one, however many heartbeats list it, until the retry interval', { timeout: 60_000 }, async (t) => {
  const c = await startCluster(t)
  const w1 = await new FakeWorker().start(t)
  const w2 = await new FakeWorker().start(t)
  await join(c, 'w1', w1)
  const task = await c.tasks.submit(parseTaskInput({ command: 'sleep 600' }), { acceptWhileDegraded: false })
  const first = await onceStatus(c.tasks, task.id, (x) => x.status === 'running')
  assert.equal(first.workerId, 'w1')

  // w1 drops out, the task goes to w2 as attempt 2; w1 comes back still running attempt 1.
  await join(c, 'w2', w2)
  c.registry.markInactive('w1', 'heartbeat-timeout', Date.now())
  const moved = await onceStatus(c.tasks, task.id, (x) => x.status === 'running' && x.workerId === 'w2')
  assert.equal(moved.attempts, 2)
  await join(c, 'w1', w1)

  w1.hold.add(task.id)
  for (let i = 0; i < 10; i++) await heartbeat(c, 'w1', [running(task.id, 1)])
  await waitUntil(() => w1.fromMaster.length >= 1, 'the CancelTask on w1')
  await sentinel(c, 'w1', w1)
  assert.deepEqual(w1.fromMaster, [task.id], 'one call while it is unanswered')

  w1.hold.clear()
  w1.release()
  await waitUntil(() => c.lines.some((l) => l.msg === `CancelTask ${task.id} on worker w1: cancelled`), 'the answer')
  for (let i = 0; i < 10; i++) await heartbeat(c, 'w1', [running(task.id, 1)])
  await sentinel(c, 'w1', w1)
  assert.deepEqual(w1.fromMaster, [task.id], 'still one call after the answer, within the retry interval')

  // A worker that still lists it a minute after the answer is asked again, once.
  c.clock.now += 60_001
  for (let i = 0; i < 5; i++) await heartbeat(c, 'w1', [running(task.id, 1)])
  await sentinel(c, 'w1', w1)
  assert.deepEqual(w1.fromMaster, [task.id, task.id])
  assert.equal(c.counts.get('STALE_TASK_CANCELS'), 2)
  assert.equal(c.counts.get('HEARTBEAT_UNKNOWN_TASKS'), 0, 'a task it ran is not unknown')

  // Its current worker is left alone, and the task keeps running there.
  await heartbeat(c, 'w2', [running(task.id, 2)])
  await sentinel(c, 'w2', w2)
  assert.deepEqual(w2.fromMaster, [])
  assert.equal(c.tasks.get(task.id)?.status, 'running')
  assert.equal(c.tasks.get(task.id)?.workerId, 'w2')
})

test('reconciliation sends at most a few CancelTask calls per worker at once; an operator cancel is not held back by them', async (t) => {
  const { log, lines } = memoryLogger('debug')
  const registry = new Registry()
  const w1 = await new FakeWorker().start(t)
  registry.register('w1', w1.address, Date.now())
  const clients = new WorkerClients()
  t.after(() => clients.close())
  const counters = new Counters()
  const cancels = new WorkerCancels({ clients, registry, log, rpcTimeoutMs: 5000, counters, maxInFlightPerWorker: 4 })
  t.after(() => cancels.close())
  const toSentinel = () => callUnary<{ task_id: string }, TaskAckMsg>(clients.get('w1', w1.address), 'CancelTask', { task_id: SENTINEL }, 5000).promise
  const ids = Array.from({ length: 20 }, (_, i) => `task-stale-${i}`)
  for (const id of [...ids, 'task-operator']) w1.hold.add(id)

  // One heartbeat's worth: 20 stale tasks, and an operator's cancel on top.
  for (const id of ids) cancels.stale('w1', id)
  cancels.operator('w1', 'task-operator')
  await toSentinel()
  assert.deepEqual(w1.fromMaster, [...ids.slice(0, 4), 'task-operator'])

  // Answered, the next heartbeat's pass sends the next four, not the answered ones again.
  w1.release()
  await waitUntil(() => lines.filter((l) => typeof l.msg === 'string' && l.msg.endsWith(': cancelled')).length === 5, 'the five answers')
  for (const id of ids) cancels.stale('w1', id)
  await toSentinel()
  assert.deepEqual(w1.fromMaster.slice(5), ids.slice(4, 8))
  assert.equal(new CounterReader(counters).get('STALE_TASK_CANCELS'), 8)
  w1.release()
})
