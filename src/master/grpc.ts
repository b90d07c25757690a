import * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { CloudaiError, toCloudaiError } from '../shared/errors.js'
import { loadProto } from '../shared/proto.js'
import { bindAddress } from '../shared/advertise.js'
import { MAX_RUNNING_TASKS, validateAmount, validatePercent, validateString, validateTaskId, validateWorkerId } from '../shared/validation.js'
import type { AckMsg, HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, TaskResultMsg, WorkerInfoMsg } from '../shared/wire.js'
import type { RunningTaskInfo } from '../shared/types.js'
import type { Registry } from './registry.js'

/** What the task side of the master needs from the gRPC service. */
export interface TaskHooks {
  onHeartbeat(workerId: string, running: RunningTaskInfo[]): void
  /** Resolves true when applied, false when stale (acknowledged and ignored). */
  onCompletion(result: TaskResultMsg): Promise<boolean>
}

const MAX_LOGS_BYTES = 1024 * 1024 + 1024

export interface MasterGrpcOptions {
  registry: Registry
  tasks?: TaskHooks
  host: string
  port: number
  log: Logger
  now?: () => number
}

/**
 * The master's side of the MasterWorker service: RegisterWorker and SendHeartbeat. Every field
 * from a peer is validated before it reaches the registry; a refusal is a gRPC status with a
 * message that says why (CloudAI peers only look at the status), and never changes state.
 */
export class MasterGrpcServer {
  private server: grpc.Server | null = null
  private boundPort = 0
  private readonly now: () => number

  constructor(private readonly opts: MasterGrpcOptions) {
    this.now = opts.now ?? Date.now
  }

  get port(): number {
    return this.boundPort
  }

  async start(): Promise<number> {
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 })
    server.addService(loadProto().service, {
      RegisterWorker: (call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => this.registerWorker(call, cb),
      SendHeartbeat: (call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => this.sendHeartbeat(call, cb),
      ...(this.opts.tasks
        ? { ReportTaskCompletion: (call: grpc.ServerUnaryCall<TaskResultMsg, AckMsg>, cb: grpc.sendUnaryData<AckMsg>) => this.reportTaskCompletion(call, cb) }
        : {}),
    })
    const address = bindAddress(this.opts.host, this.opts.port)
    this.boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot listen for gRPC on ${address}: ${err.message}`))
        else resolve(port)
      })
    })
    this.server = server
    return this.boundPort
  }

  private registerWorker(call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>): void {
    const req = call.request
    try {
      const id = validateWorkerId(req.worker_id)
      const specs = {
        cpu: validateAmount(req.total_cpu, 'total_cpu', 1e6),
        memory: validateAmount(req.total_memory, 'total_memory', 1e9),
        storage: validateAmount(req.total_storage, 'total_storage', 1e12),
        gpu: validateAmount(req.total_gpu, 'total_gpu', 1e4),
      }
      const reported = validateString(req.worker_ip, 'worker_ip', { max: 262 })
      const wasActive = this.opts.registry.get(id)?.isActive === true
      const worker = this.opts.registry.connect(id, { specs, reportedAddress: reported || null }, this.now())
      if (!wasActive) {
        this.opts.log.info({ workerId: id, address: worker.address, reportedAddress: reported, specs }, `Worker ${id} registered and active (${worker.address})`)
      }
      cb(null, { success: true, message: `worker ${id} registered` })
    } catch (err) {
      this.refuse('RegisterWorker', req.worker_id, err, cb)
    }
  }

  private sendHeartbeat(call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>): void {
    const req = call.request
    try {
      const id = validateWorkerId(req.worker_id)
      const usage = {
        cpu: validatePercent(req.cpu_usage, 'cpu_usage'),
        memory: validatePercent(req.memory_usage, 'memory_usage'),
        storage: validatePercent(req.storage_usage, 'storage_usage'),
        gpu: validatePercent(req.gpu_usage, 'gpu_usage'),
      }
      const tasks = req.running_tasks ?? []
      if (tasks.length > MAX_RUNNING_TASKS) throw new CloudaiError('CLOUDAI_BAD_FIELD', `running_tasks lists ${tasks.length} tasks; at most ${MAX_RUNNING_TASKS}`)
      const running: RunningTaskInfo[] = tasks.map((t, i) => ({
        taskId: validateString(t.task_id, `running_tasks[${i}].task_id`, { required: true }),
        cpu: validateAmount(t.cpu_allocated, `running_tasks[${i}].cpu_allocated`),
        memory: validateAmount(t.memory_allocated, `running_tasks[${i}].memory_allocated`),
        gpu: validateAmount(t.gpu_allocated, `running_tasks[${i}].gpu_allocated`),
        status: validateString(t.status, `running_tasks[${i}].status`, { max: 32 }),
        attempt: validateAmount(t.attempt ?? 0, `running_tasks[${i}].attempt`, 1e6),
      }))
      this.opts.registry.heartbeat(id, usage, running, this.now())
      this.opts.tasks?.onHeartbeat(id, running)
      cb(null, { success: true })
    } catch (err) {
      this.refuse('SendHeartbeat', req.worker_id, err, cb)
    }
  }

  private reportTaskCompletion(call: grpc.ServerUnaryCall<TaskResultMsg, AckMsg>, cb: grpc.sendUnaryData<AckMsg>): void {
    const r = call.request
    let result: TaskResultMsg
    try {
      validateTaskId(r.task_id)
      const workerId = validateWorkerId(r.worker_id)
      if (!this.opts.registry.get(workerId)) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `completion report from ${workerId}, which is not registered with this master`)
      if (!['completed', 'failed', 'cancelled'].includes(r.status)) {
        throw new CloudaiError('CLOUDAI_BAD_FIELD', `status must be completed, failed or cancelled, got ${JSON.stringify(String(r.status).slice(0, 40))}`)
      }
      if (typeof r.logs !== 'string' || Buffer.byteLength(r.logs) > MAX_LOGS_BYTES) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'logs must be a string of at most 1 MiB')
      for (const f of ['duration_ms', 'started_at', 'finished_at', 'attempt'] as const) validateAmount(r[f] ?? 0, f, Number.MAX_SAFE_INTEGER)
      if (!Number.isInteger(r.exit_code ?? 0)) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'exit_code must be a whole number')
      validateString(r.reason, 'reason', { max: 1024 })
      result = { ...r, attempt: r.attempt ?? 0, reason: r.reason ?? '', has_exit_code: r.has_exit_code === true }
    } catch (err) {
      this.refuse('ReportTaskCompletion', r.worker_id, err, cb)
      return
    }
    this.opts.tasks!.onCompletion(result).then(
      (applied) => cb(null, { success: true, message: applied ? 'recorded' : 'ignored: the task is no longer this worker\'s attempt (requeued, cancelled or already finished)' }),
      (err: unknown) => this.refuse('ReportTaskCompletion', r.worker_id, err, cb),
    )
  }

  private refuse(rpc: string, workerId: unknown, err: unknown, cb: grpc.sendUnaryData<never>): void {
    const e = toCloudaiError(err)
    if (e.code === 'CLOUDAI_INTERNAL') this.opts.log.error({ rpc, err }, `${rpc} failed`)
    else this.opts.log.debug({ rpc, workerId: String(workerId).slice(0, 80), code: e.code, reason: e.message }, `${rpc} refused`)
    const metadata = new grpc.Metadata()
    metadata.set('cloudai-error-code', e.code)
    cb({ code: e.grpcStatus, details: `${e.message} (${e.code})`, metadata })
  }

  /** Stops accepting calls, lets in-flight ones finish within `graceMs`, then cancels the rest. */
  async close(graceMs: number): Promise<void> {
    const server = this.server
    if (!server) return
    this.server = null
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown()
        resolve()
      }, graceMs)
      server.tryShutdown(() => {
        clearTimeout(force)
        resolve()
      })
    })
  }
}
