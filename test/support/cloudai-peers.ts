import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { tempDir } from './cluster.js'

// CloudAI's peers, written only from CloudAI's wire contract: its message table (copied below,
// without any field or RPC that cloudai added), raw @grpc/grpc-js clients and servers, and none of
// cloudai's modules.
//
// CloudaiWorker: a worker as CloudAI's own would behave. It waits for MasterRegister, registers, heartbeats with
// unary SendHeartbeat every `heartbeatMs`, and reports a finished task with CloudAI's words
// ("success", "failed", "cancelled"), no exit code and no attempt. A task with a command runs it
// with `sh -c` in a temp dir (standing in for the container); one with an image only prints what
// the image's entrypoint would have run.

export const CLOUDAI_PROTO = `
syntax = "proto3";
package cluster;
service MasterWorker {
  rpc RegisterWorker(WorkerInfo) returns (RegisterAck);
  rpc SendHeartbeat(Heartbeat) returns (HeartbeatAck);
  rpc ReportTaskCompletion(TaskResult) returns (Ack);
  rpc MasterRegister(MasterInfo) returns (RegisterAck);
  rpc AssignTask(Task) returns (TaskAck);
  rpc CancelTask(TaskID) returns (TaskAck);
  rpc StreamTaskLogs(TaskLogRequest) returns (stream LogChunk);
  rpc UploadTaskFiles(stream FileChunk) returns (FileUploadAck);
}
message WorkerInfo { string worker_id = 1; string worker_ip = 2; double total_cpu = 3; double total_memory = 4; double total_storage = 5; double total_gpu = 6; }
message MasterInfo { string master_id = 1; string master_address = 2; }
message RegisterAck { bool success = 1; string message = 2; }
message Heartbeat { string worker_id = 1; double cpu_usage = 2; double memory_usage = 3; double storage_usage = 4; repeated RunningTask running_tasks = 5; double gpu_usage = 6; }
message RunningTask { string task_id = 1; double cpu_allocated = 2; double memory_allocated = 3; string status = 4; double gpu_allocated = 5; }
message HeartbeatAck { bool success = 1; }
message Task {
  string task_id = 1; string docker_image = 2; string command = 3; double req_cpu = 4; double req_memory = 5; double req_storage = 6;
  double req_gpu = 7; string target_worker_id = 8; string user_id = 9; double sla_multiplier = 10; string task_type = 11; string task_name = 12; int64 submitted_at = 13;
}
message TaskAck { bool success = 1; string message = 2; }
message TaskID { string task_id = 1; }
message TaskResult { string task_id = 1; string worker_id = 2; string status = 3; string logs = 4; string result_location = 5; repeated string output_files = 6; }
message Ack { bool success = 1; string message = 2; }
message TaskLogRequest { string task_id = 1; string user_id = 2; bool follow = 3; }
message LogChunk { string task_id = 1; string content = 2; string timestamp = 3; bool is_complete = 4; string status = 5; }
message FileChunk { string task_id = 1; string user_id = 2; string file_path = 3; bytes content = 4; bool is_last = 5; }
message FileUploadAck { bool success = 1; string message = 2; }
`

function loadCloudaiService(dir: string): grpc.ServiceClientConstructor {
  const file = join(dir, 'cloudai.proto')
  writeFileSync(file, CLOUDAI_PROTO)
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(file, { keepCase: true, longs: Number, defaults: true })) as unknown as { cluster: { MasterWorker: grpc.ServiceClientConstructor } }
  return pkg.cluster.MasterWorker
}

export interface CloudaiTask {
  task_id: string
  docker_image: string
  command: string
  req_cpu: number
  req_memory: number
  task_name: string
  [field: string]: unknown
}

export interface CloudaiReport {
  taskId: string
  status: string
  ack: { success: boolean; message: string } | null
  error: string | null
}

type Callback = grpc.requestCallback<{ success: boolean; message?: string }>
type UnaryClient = grpc.Client & Record<string, (req: object, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall>

export class CloudaiWorker {
  /** Every AssignTask received, in order. */
  readonly assigned: CloudaiTask[] = []
  readonly cancelled: string[] = []
  readonly reports: CloudaiReport[] = []
  readonly masterRegisters: { master_id: string; master_address: string }[] = []
  heartbeatsAcked = 0
  port = 0
  private readonly server = new grpc.Server()
  private master: UnaryClient | null = null
  private beat: NodeJS.Timeout | null = null
  private readonly running = new Map<string, { req_cpu: number; req_memory: number; pid: number | undefined }>()
  /** Each task's output lines and final status, for StreamTaskLogs. */
  private readonly outputs = new Map<string, { lines: string[]; status: string | null; listeners: Set<() => void> }>()
  private readonly events = new Waiters()
  private readonly ctor: grpc.ServiceClientConstructor

  constructor(readonly id: string, private readonly dir: string, private readonly heartbeatMs = 200) {
    this.ctor = loadCloudaiService(dir)
  }

  async start(): Promise<number> {
    this.server.addService(this.ctor.service, {
      MasterRegister: (call: grpc.ServerUnaryCall<{ master_id: string; master_address: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.masterRegisters.push(call.request)
        cb(null, { success: true, message: `following ${call.request.master_id}` })
        this.follow(call.request.master_address)
      },
      AssignTask: (call: grpc.ServerUnaryCall<CloudaiTask, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.assigned.push(call.request)
        cb(null, { success: true, message: 'task accepted' })
        this.run(call.request)
      },
      // As CloudAI's: one chunk per line (no number, no stream), then the final status; follow ignored.
      StreamTaskLogs: (call: grpc.ServerWritableStream<{ task_id: string }, unknown>) => {
        const out = this.outputs.get(call.request.task_id)
        if (!out) {
          call.write({ task_id: call.request.task_id, content: 'Task not found or not running on this worker', timestamp: String(Math.floor(Date.now() / 1000)), is_complete: true, status: 'not_found' })
          return call.end()
        }
        let sent = 0
        const pump = (): void => {
          for (; sent < out.lines.length; sent++) call.write({ task_id: call.request.task_id, content: out.lines[sent], timestamp: String(Math.floor(Date.now() / 1000)), is_complete: false, status: 'running' })
          if (out.status === null) return
          out.listeners.delete(pump)
          call.write({ task_id: call.request.task_id, content: '', timestamp: String(Math.floor(Date.now() / 1000)), is_complete: true, status: out.status })
          call.end()
        }
        out.listeners.add(pump)
        call.on('cancelled', () => out.listeners.delete(pump))
        pump()
      },
      CancelTask: (call: grpc.ServerUnaryCall<{ task_id: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.cancelled.push(call.request.task_id)
        const r = this.running.get(call.request.task_id)
        if (r?.pid) killGroup(r.pid)
        cb(null, { success: r !== undefined, message: r ? 'cancelled' : 'task not found' })
      },
    })
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))))
    return this.port
  }

  /** Resolves when `check` holds, re-checked after every event of this worker. */
  until(check: () => boolean, what: string, timeoutMs?: number): Promise<void> {
    return this.events.until(check, `CloudAI worker ${this.id}: ${what}`, timeoutMs)
  }

  private changed(): void {
    this.events.notify()
  }

  private follow(address: string): void {
    this.master?.close()
    this.master = new this.ctor(address, grpc.credentials.createInsecure()) as unknown as UnaryClient
    const info = { worker_id: this.id, worker_ip: `127.0.0.1:${this.port}`, total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 }
    this.call('RegisterWorker', info, (err) => {
      if (err) return
      if (this.beat) clearInterval(this.beat)
      this.beat = setInterval(() => this.heartbeat(), this.heartbeatMs)
    })
  }

  private heartbeat(): void {
    const running_tasks = [...this.running].map(([task_id, r]) => ({ task_id, cpu_allocated: r.req_cpu, memory_allocated: r.req_memory, status: 'running', gpu_allocated: 0 }))
    this.call('SendHeartbeat', { worker_id: this.id, cpu_usage: 5, memory_usage: 10, storage_usage: 20, gpu_usage: 0, running_tasks }, (err) => {
      if (err) return
      this.heartbeatsAcked++
      this.changed()
    })
  }

  private run(task: CloudaiTask): void {
    if (!task.command) {
      this.running.set(task.task_id, { req_cpu: task.req_cpu, req_memory: task.req_memory, pid: undefined })
      setImmediate(() => this.finish(task.task_id, 'success', `ran the entrypoint of ${task.docker_image}\n`))
      return
    }
    const child = spawn('/bin/sh', ['-c', task.command], { cwd: this.dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    this.running.set(task.task_id, { req_cpu: task.req_cpu, req_memory: task.req_memory, pid: child.pid })
    let logs = ''
    const out = { lines: [] as string[], status: null as string | null, listeners: new Set<() => void>() }
    this.outputs.set(task.task_id, out)
    let partial = ''
    const take = (d: string): void => {
      logs += d
      partial += d
      const parts = partial.split('\n')
      partial = parts.pop()!
      out.lines.push(...parts)
      for (const l of [...out.listeners]) l()
    }
    child.stdout.setEncoding('utf8').on('data', take)
    child.stderr.setEncoding('utf8').on('data', take)
    child.once('close', (code) => this.finish(task.task_id, this.cancelled.includes(task.task_id) ? 'cancelled' : code === 0 ? 'success' : 'failed', logs))
  }

  private finish(taskId: string, status: string, logs: string): void {
    this.running.delete(taskId)
    const out = this.outputs.get(taskId)
    if (out) {
      out.status = status
      for (const l of [...out.listeners]) l()
    }
    const report: CloudaiReport = { taskId, status, ack: null, error: null }
    this.reports.push(report)
    this.call('ReportTaskCompletion', { task_id: taskId, worker_id: this.id, status, logs, result_location: '', output_files: [] }, (err, ack) => {
      if (err) report.error = err.details || err.message
      else report.ack = { success: ack!.success, message: ack!.message ?? '' }
      this.changed()
    })
  }

  private call(method: string, req: object, done: (err: grpc.ServiceError | null, res?: { success: boolean; message?: string }) => void): void {
    const master = this.master
    if (!master) return
    master[method]!(req, { deadline: Date.now() + 5000 }, (err, res) => done(err, res))
  }

  async close(): Promise<void> {
    if (this.beat) clearInterval(this.beat)
    this.beat = null
    for (const r of this.running.values()) if (r.pid) killGroup(r.pid)
    this.master?.close()
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()))
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    // Already gone.
  }
}

export async function startCloudaiWorker(t: TestContext, id: string): Promise<CloudaiWorker> {
  const worker = new CloudaiWorker(id, tempDir(t, `cloudai-peer-${id}-`))
  await worker.start()
  t.after(() => worker.close())
  return worker
}

/** Resolves when `check` holds, re-checked whenever `notify` is called. */
class Waiters {
  private readonly waiters = new Set<() => void>()

  until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    if (check()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const waiter = (): void => {
        if (!check()) return
        clearTimeout(timer)
        this.waiters.delete(waiter)
        resolve()
      }
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`${what} did not happen within ${timeoutMs}ms`))
      }, timeoutMs)
      this.waiters.add(waiter)
    })
  }

  notify(): void {
    for (const w of [...this.waiters]) w()
  }
}

export interface CloudaiResult {
  task_id: string
  worker_id: string
  status: string
  logs: string
  result_location: string
  output_files: string[]
}

/**
 * CloudaiMaster: a master as CloudAI's own would behave. It serves RegisterWorker, SendHeartbeat
 * and ReportTaskCompletion (not StreamHeartbeats, which CloudAI does not have), and calls
 * MasterRegister, AssignTask and CancelTask on a worker.
 */
export class CloudaiMaster {
  readonly registered: { worker_id: string; worker_ip: string; total_cpu: number }[] = []
  readonly heartbeats: { worker_id: string; running_tasks: { task_id: string; status: string }[] }[] = []
  readonly results: CloudaiResult[] = []
  port = 0
  private readonly server = new grpc.Server()
  private readonly ctor: grpc.ServiceClientConstructor
  private readonly clients: UnaryClient[] = []
  private readonly events = new Waiters()

  constructor(dir: string) {
    this.ctor = loadCloudaiService(dir)
  }

  async start(): Promise<number> {
    const ack = (cb: grpc.sendUnaryData<unknown>, message: string): void => cb(null, { success: true, message })
    this.server.addService(this.ctor.service, {
      RegisterWorker: (call: grpc.ServerUnaryCall<CloudaiMaster['registered'][number], unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.registered.push(call.request)
        ack(cb, 'registered')
        this.events.notify()
      },
      SendHeartbeat: (call: grpc.ServerUnaryCall<CloudaiMaster['heartbeats'][number], unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.heartbeats.push(call.request)
        cb(null, { success: true })
        this.events.notify()
      },
      ReportTaskCompletion: (call: grpc.ServerUnaryCall<CloudaiResult, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.results.push(call.request)
        ack(cb, 'result stored')
        this.events.notify()
      },
    })
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))))
    return this.port
  }

  until(check: () => boolean, what: string, timeoutMs?: number): Promise<void> {
    return this.events.until(check, `CloudAI master: ${what}`, timeoutMs)
  }

  /** Calls `method` on the worker at `address` (host:port); resolves with its answer. */
  call<T = { success: boolean; message: string }>(address: string, method: 'MasterRegister' | 'AssignTask' | 'CancelTask', req: object): Promise<T> {
    const client = new this.ctor(address, grpc.credentials.createInsecure()) as unknown as UnaryClient
    this.clients.push(client)
    return new Promise((resolve, reject) => client[method]!(req, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res as T))))
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.close()
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()))
  }
}

export async function startCloudaiMaster(t: TestContext): Promise<CloudaiMaster> {
  const master = new CloudaiMaster(tempDir(t, 'cloudai-peer-master-'))
  await master.start()
  t.after(() => master.close())
  return master
}
