// The time-to-assign baseline: no master, no store, no scheduler. A bare @grpc/grpc-js server takes
// the simulated workers' RegisterWorker, heartbeats and ReportTaskCompletion; as each worker
// registers it is sent its share of the tasks (task i to worker i mod W) with AssignTask straight
// away. What is left is the cost of the RPCs and of running the commands: the floor the master's
// figures are divided by.
import * as grpc from '@grpc/grpc-js'
import { loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { AckMsg, HeartbeatAckMsg, RegisterAckMsg, TaskAckMsg, TaskMsg, TaskResultMsg, WorkerInfoMsg } from '../../src/shared/wire.js'

export interface DispatchOutcome {
  /** From `start()` until the last AssignTask answer. */
  assignedMs: number
  /** From `start()` until the last completion report. */
  completedMs: number
  refused: number
  failed: number
}

export class BareDispatcher {
  private readonly proto = loadProto()
  private readonly server = new grpc.Server()
  private readonly clients = new Map<string, MasterWorkerClient>()
  private readonly reported = new Set<string>()
  private t0 = 0
  private acked = 0
  private refused = 0
  private failed = 0
  private assignedMs = NaN
  private done: ((o: DispatchOutcome) => void) | null = null
  port = 0

  /** `workerIds` in the order tasks are dealt; `command` is what every task runs. */
  constructor(private readonly workerIds: string[], private readonly tasks: number, private readonly command: string) {}

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async listen(): Promise<void> {
    this.server.addService(this.proto.service, {
      RegisterWorker: (call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
        cb(null, { success: true, message: 'ok' })
        this.dispatchTo(call.request.worker_id, call.request.worker_ip)
      },
      SendHeartbeat: (_call: unknown, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => cb(null, { success: true }),
      ReportTaskCompletion: (call: grpc.ServerUnaryCall<TaskResultMsg, AckMsg>, cb: grpc.sendUnaryData<AckMsg>) => {
        cb(null, { success: true, message: 'recorded' })
        if (call.request.status !== 'completed') this.failed++
        this.reported.add(call.request.task_id)
        this.settle()
      },
      StreamHeartbeats: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.end(),
      MasterRegister: (_call: unknown, cb: grpc.sendUnaryData<RegisterAckMsg>) => cb(null, { success: false, message: 'bare dispatcher' }),
      AssignTask: (_call: unknown, cb: grpc.sendUnaryData<TaskAckMsg>) => cb(null, { success: false, message: 'bare dispatcher' }),
      CancelTask: (_call: unknown, cb: grpc.sendUnaryData<TaskAckMsg>) => cb(null, { success: false, message: 'bare dispatcher' }),
    })
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))))
  }

  /** Starts the clock; resolves once every task has been acknowledged and reported. */
  start(): Promise<DispatchOutcome> {
    this.t0 = performance.now()
    return new Promise((resolve) => (this.done = resolve))
  }

  private dispatchTo(workerId: string, address: string): void {
    const w = this.workerIds.indexOf(workerId)
    if (w < 0 || this.clients.has(workerId)) return
    const client = new this.proto.Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 })
    this.clients.set(workerId, client)
    for (let i = w; i < this.tasks; i += this.workerIds.length) {
      const msg: TaskMsg = {
        task_id: `bare-${String(i).padStart(6, '0')}`, docker_image: '', command: this.command, req_cpu: 0, req_memory: 0, req_storage: 0, req_gpu: 0,
        target_worker_id: '', user_id: '', sla_multiplier: 1, task_type: '', task_name: `t${i}`, submitted_at: Date.now(), timeout_ms: 0, env: {}, attempt: 1,
      }
      client.AssignTask(msg, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, ack) => {
        if (err || !ack?.success) this.refused++
        if (++this.acked === this.tasks) this.assignedMs = performance.now() - this.t0
        this.settle()
      })
    }
  }

  private settle(): void {
    if (!this.done || this.acked < this.tasks || this.reported.size + this.refused < this.tasks) return
    const done = this.done
    this.done = null
    done({ assignedMs: this.assignedMs, completedMs: performance.now() - this.t0, refused: this.refused, failed: this.failed })
  }

  async close(): Promise<void> {
    for (const c of this.clients.values()) c.close()
    this.clients.clear()
    // The simulated workers still hold connections; nothing here is worth waiting for.
    this.server.forceShutdown()
  }
}
