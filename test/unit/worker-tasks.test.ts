import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { AckMsg, HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, RunningTaskMsg, TaskAckMsg, TaskMsg, TaskResultMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import { WorkerAgent } from '../../src/worker/agent.js'
import { DockerProbe, dockerRunArgv } from '../../src/worker/runtime.js'
import { startAgent } from '../support/agent.js'
import { tempDir, waitUntil } from '../support/cluster.js'

/**
 * The master's side of the contract, as small as the worker needs: RegisterWorker succeeds,
 * SendHeartbeat records running_tasks, ReportTaskCompletion records and acks, or fails with
 * UNAVAILABLE while `failReports` is set (a master whose store is failing).
 */
class FakeMaster extends EventEmitter {
  readonly heartbeats: HeartbeatMsg[] = []
  readonly reports: TaskResultMsg[] = []
  reportCalls = 0
  failReports = false
  port = 0
  private readonly server = new grpc.Server()

  async start(t: TestContext): Promise<string> {
    this.server.addService(loadProto().service, {
      RegisterWorker: (_call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => cb(null, { success: true, message: 'registered' }),
      SendHeartbeat: (call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => {
        this.heartbeats.push(call.request)
        cb(null, { success: true })
        this.emit('change')
      },
      ReportTaskCompletion: (call: grpc.ServerUnaryCall<TaskResultMsg, AckMsg>, cb: grpc.sendUnaryData<AckMsg>) => {
        this.reportCalls++
        if (this.failReports) {
          cb({ code: grpc.status.UNAVAILABLE, details: 'the store is failing (CLOUDAI_STORE_FAILED)' })
        } else {
          this.reports.push(call.request)
          cb(null, { success: true, message: 'recorded' })
        }
        this.emit('change')
      },
    })
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))))
    t.after(() => this.server.forceShutdown())
    return `127.0.0.1:${this.port}`
  }

  /** Resolves when `check` holds after some RPC arrived (or already holds). */
  until<T>(check: () => T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
    const now = check()
    if (now !== undefined && now !== false) return Promise.resolve(now)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('change', on)
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}`))
      }, timeoutMs)
      const on = (): void => {
        const v = check()
        if (v === undefined || v === false) return
        clearTimeout(timer)
        this.off('change', on)
        resolve(v)
      }
      this.on('change', on)
    })
  }

  /** A heartbeat, after `from`, whose running_tasks satisfy `pred`. */
  heartbeatWhere(pred: (tasks: RunningTaskMsg[]) => boolean, what: string, from = this.heartbeats.length): Promise<HeartbeatMsg> {
    return this.until(() => this.heartbeats.slice(from).find((h) => pred(h.running_tasks)), what)
  }

  reportOf(taskId: string): Promise<TaskResultMsg> {
    return this.until(() => this.reports.find((r) => r.task_id === taskId), `the completion report of ${taskId}`)
  }
}

async function startWorker(t: TestContext, master: string, dataDir = tempDir(t, 'cloudai-worker-')): Promise<{ agent: WorkerAgent; client: MasterWorkerClient; dataDir: string }> {
  const agent = await startAgent(t, { masters: [master], joinMaxBackoffMs: 300, dataDir })
  const client = new (loadProto().Client)(`127.0.0.1:${agent.port}`, grpc.credentials.createInsecure())
  t.after(() => client.close())
  return { agent, client, dataDir }
}

function task(id: string, command: string, extra: Partial<TaskMsg> = {}): Partial<TaskMsg> {
  return { task_id: id, command, req_cpu: 0.5, req_memory: 0.25, req_gpu: 0, attempt: 1, ...extra }
}

const assign = (client: MasterWorkerClient, msg: Partial<TaskMsg>): Promise<TaskAckMsg> => callUnary<Partial<TaskMsg>, TaskAckMsg>(client, 'AssignTask', msg, 5000).promise
const cancel = (client: MasterWorkerClient, id: string): Promise<TaskAckMsg> => callUnary<object, TaskAckMsg>(client, 'CancelTask', { task_id: id }, 5000).promise
const listed = (id: string, status: string) => (tasks: RunningTaskMsg[]): boolean => tasks.some((r) => r.task_id === id && r.status === status)
const outboxFiles = (dataDir: string): string[] => (existsSync(join(dataDir, 'outbox')) ? readdirSync(join(dataDir, 'outbox')).filter((n) => n.endsWith('.json')) : [])

test('AssignTask runs the command; heartbeats list it while it runs; the report carries exit code and output', async (t) => {
  const master = new FakeMaster()
  const { client, dataDir } = await startWorker(t, await master.start(t))
  // Runs until the test creates `go` in its working directory.
  const ack = await assign(client, task('task-run', 'echo hello from $CLOUDAI_TASK_ID; while [ ! -f go ]; do sleep 0.02; done; echo "$GREETING"', { env: { GREETING: 'bye' } }))
  assert.deepEqual({ success: ack.success }, { success: true })

  const beat = await master.heartbeatWhere(listed('task-run', 'running'), 'a heartbeat listing task-run as running')
  const entry = beat.running_tasks.find((r) => r.task_id === 'task-run')!
  assert.deepEqual(entry, { task_id: 'task-run', cpu_allocated: 0.5, memory_allocated: 0.25, gpu_allocated: 0, status: 'running', attempt: 1 })

  const again = await assign(client, task('task-run', 'echo hello'))
  assert.deepEqual(again, { success: true, message: 'already running', held_attempt: 0 }, 'a retried AssignTask is not a second run')

  const other = await assign(client, task('task-run', 'echo hello', { attempt: 2 }))
  assert.deepEqual(other, { success: false, message: 'attempt 2 not started: this worker already runs attempt 1 of task task-run', held_attempt: 1 }, 'another attempt of a task that runs here is refused, naming the one that runs')
  assert.equal(outboxFiles(dataDir).length, 0)

  writeFileSync(join(dataDir, 'tasks', 'task-run-1', 'work', 'go'), '')
  const report = await master.reportOf('task-run')
  assert.equal(report.worker_id, 'w1')
  assert.equal(report.status, 'success', "CloudAI's word, which a CloudAI master counts as a success")
  assert.equal(report.has_exit_code, true)
  assert.equal(report.exit_code, 0)
  assert.equal(report.logs, 'hello from task-run\nbye\n')
  assert.equal(report.attempt, 1)
  assert.equal(report.reason, 'exit code 0')
  assert.ok(report.started_at > 0 && report.finished_at >= report.started_at && report.duration_ms >= 0)

  // Delivered: out of the outbox and out of the heartbeats.
  await waitUntil(() => outboxFiles(dataDir).length === 0, 'the outbox to be empty', 5000)
  await master.heartbeatWhere((tasks) => tasks.length === 0, 'a heartbeat listing nothing')
})

test('AssignTask with a bad field is refused with INVALID_ARGUMENT and runs nothing', async (t) => {
  const master = new FakeMaster()
  const { client, dataDir } = await startWorker(t, await master.start(t))
  const env257 = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`V${i}`, 'x']))
  const bad: [string, Partial<TaskMsg>][] = [
    ['empty task_id', task('', 'true')],
    ['task_id with a space', task('a b', 'true')],
    ['task_id too long', task('x'.repeat(129), 'true')],
    ['empty command', task('t1', '')],
    ['blank command', task('t1', '   ')],
    ['command over 64 KiB', task('t1', 'x'.repeat(64 * 1024 + 1))],
    ['257 env entries', task('t1', 'true', { env: env257 })],
    ['env key starting with a digit', task('t1', 'true', { env: { '1A': 'x' } })],
    ['env key with a dash', task('t1', 'true', { env: { 'A-B': 'x' } })],
    ['env value over 32 KiB', task('t1', 'true', { env: { A: 'x'.repeat(32 * 1024 + 1) } })],
    ['negative timeout_ms', task('t1', 'true', { timeout_ms: -1 })],
    ['negative attempt', task('t1', 'true', { attempt: -1 })],
    ['negative req_cpu', task('t1', 'true', { req_cpu: -1 })],
    ['NaN req_memory', task('t1', 'true', { req_memory: Number.NaN })],
    ['infinite req_gpu', task('t1', 'true', { req_gpu: Number.POSITIVE_INFINITY })],
    ['negative req_storage', task('t1', 'true', { req_storage: -0.5 })],
    ['docker_image that is an option', task('t1', 'true', { docker_image: '--privileged' })],
    ['docker_image in uppercase (docker: "repository name must be lowercase")', task('t1', 'true', { docker_image: 'Alpine' })],
    ['docker_image with an empty tag', task('t1', 'true', { docker_image: 'alpine:' })],
  ]
  for (const [what, msg] of bad) {
    await assert.rejects(assign(client, msg), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, what)
      assert.match(err.details, /\((CLOUDAI_BAD_FIELD|CLOUDAI_BAD_TASK_ID)\)$/, what)
      return true
    }, what)
  }
  for (const id of ['', 'a/b', 'x'.repeat(129)]) {
    await assert.rejects(cancel(client, id), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && /\(CLOUDAI_BAD_TASK_ID\)$/.test(err.details))
  }
  assert.equal(existsSync(join(dataDir, 'tasks')), false, 'no task directory was made')
})

test('docker_image on a machine where no Docker engine answers is refused with success=false and the reason', async (t) => {
  const docker = await new DockerProbe().check()
  if (docker.ok) {
    t.skip(`a Docker engine (${docker.version}) answers on this machine`)
    return
  }
  const master = new FakeMaster()
  const { client } = await startWorker(t, await master.start(t))
  const ack = await assign(client, task('task-docker', 'echo hi', { docker_image: 'alpine:3.20' }))
  assert.equal(ack.success, false)
  assert.match(ack.message, /^docker_image is set but no Docker engine answers on worker w1: \S/)
  // As a CloudAI master sends it: an image and no command is a valid task (its entrypoint runs).
  const entrypoint = await assign(client, task('task-entrypoint', '', { docker_image: 'alpine:3.20' }))
  assert.equal(entrypoint.success, false)
  assert.match(entrypoint.message, /^docker_image is set but no Docker engine answers/)
})

test('CancelTask stops the task; it is reported as cancelled', async (t) => {
  const master = new FakeMaster()
  const { client } = await startWorker(t, await master.start(t))
  assert.equal((await assign(client, task('task-cancel', 'sleep 300'))).success, true)
  await master.heartbeatWhere(listed('task-cancel', 'running'), 'task-cancel running')
  assert.deepEqual(await cancel(client, 'task-cancel'), { success: true, message: 'cancelling', held_attempt: 0 })
  const report = await master.reportOf('task-cancel')
  assert.equal(report.status, 'cancelled')
  assert.equal(report.reason, 'cancelled')
  assert.deepEqual(await cancel(client, 'task-cancel'), { success: false, message: 'not running on this worker', held_attempt: 0 })
  assert.deepEqual(await cancel(client, 'task-never-seen'), { success: false, message: 'not running on this worker', held_attempt: 0 })
})

test('a report the master cannot take (UNAVAILABLE) stays in the outbox, is listed in heartbeats, and is retried until delivered', async (t) => {
  const master = new FakeMaster()
  master.failReports = true
  const { client, dataDir } = await startWorker(t, await master.start(t))
  assert.equal((await assign(client, task('task-retry', 'echo partial; exit 3', { timeout_ms: 60_000 }))).success, true)
  await master.until(() => master.reportCalls >= 2, 'a second delivery attempt')
  assert.deepEqual(outboxFiles(dataDir), ['task-retry@1.json'])
  // Listed with its final status, so the master does not requeue it while the result is on its way.
  const beat = await master.heartbeatWhere(listed('task-retry', 'failed'), 'a heartbeat listing the undelivered result')
  assert.deepEqual(beat.running_tasks.find((r) => r.task_id === 'task-retry'), { task_id: 'task-retry', cpu_allocated: 0, memory_allocated: 0, gpu_allocated: 0, status: 'failed', attempt: 1 })
  assert.deepEqual(await assign(client, task('task-retry', 'echo partial; exit 3')), { success: false, message: 'already finished; result pending delivery', held_attempt: 0 })
  assert.deepEqual(await assign(client, task('task-retry', 'echo partial; exit 3', { attempt: 2 })), { success: false, message: 'attempt 2 not started: this worker holds the result of attempt 1 of task task-retry, not yet delivered', held_attempt: 1 }, 'a finished attempt is not run again next to its result')

  master.failReports = false
  const report = await master.reportOf('task-retry')
  assert.equal(report.status, 'failed')
  assert.equal(report.exit_code, 3)
  assert.equal(report.reason, 'exit code 3')
  assert.equal(report.logs, 'partial\n')
  await waitUntil(() => outboxFiles(dataDir).length === 0, 'the outbox to be empty', 5000)
  assert.equal(master.reports.filter((r) => r.task_id === 'task-retry').length, 1, 'delivered once')
})

test('a result still in the outbox when the worker stops is delivered by the next worker on the same data dir', async (t) => {
  const master = new FakeMaster()
  master.failReports = true
  const address = await master.start(t)
  const first = await startWorker(t, address)
  assert.equal((await assign(first.client, task('task-persist', 'echo kept on disk'))).success, true)
  await master.until(() => master.reportCalls >= 1, 'a first delivery attempt')
  await first.agent.close()
  assert.deepEqual(outboxFiles(first.dataDir), ['task-persist@1.json'])

  master.failReports = false
  await startWorker(t, address, first.dataDir)
  const report = await master.reportOf('task-persist')
  assert.equal(report.status, 'success')
  assert.equal(report.logs, 'kept on disk\n')
  await waitUntil(() => outboxFiles(first.dataDir).length === 0, 'the outbox to be empty', 5000)
})

test('closing the worker cancels its running tasks, reports them, and refuses new ones with UNAVAILABLE', async (t) => {
  const master = new FakeMaster()
  const { agent, client, dataDir } = await startWorker(t, await master.start(t))
  assert.equal((await assign(client, task('task-shutdown', 'sleep 300'))).success, true)
  await master.heartbeatWhere(listed('task-shutdown', 'running'), 'task-shutdown running')
  const closing = agent.close()
  await assert.rejects(assign(client, task('task-late', 'true')), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE && /\(CLOUDAI_SHUTTING_DOWN\)$/.test(err.details))
  await closing
  await agent.close() // idempotent
  const report = await master.reportOf('task-shutdown')
  assert.equal(report.status, 'cancelled')
  assert.deepEqual(outboxFiles(dataDir), [])
})

test('docker run argv: the command through sh -c, or none so that the image runs its own entrypoint', () => {
  assert.deepEqual(dockerRunArgv({ taskId: 't1', image: 'alpine:3.20', command: 'echo hi', envKeys: ['A'] }), ['docker', 'run', '--rm', '--name', 'cloudai-t1', '-e', 'A', 'alpine:3.20', 'sh', '-c', 'echo hi'])
  assert.deepEqual(dockerRunArgv({ taskId: 't2', image: 'alpine:3.20', command: '', envKeys: [] }), ['docker', 'run', '--rm', '--name', 'cloudai-t2', 'alpine:3.20'])
})
