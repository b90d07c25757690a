import * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { CloudaiError, toCloudaiError } from '../shared/errors.js'
import { loadProto } from '../shared/proto.js'
import { bindAddress } from '../shared/advertise.js'
import { MAX_RUNNING_TASKS, validateAmount, validatePercent, validateString, validateWorkerId } from '../shared/validation.js'
import type { HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, WorkerInfoMsg } from '../shared/wire.js'
import type { RunningTaskInfo } from '../shared/types.js'
import type { Registry } from './registry.js'

export interface MasterGrpcOptions {
  registry: Registry
  host: string
  port: number
  log: Logger
  now?: () => number
}

/**
 * The master's side of the MasterWorker service: RegisterWorker and SendHeartbeat. Every field
 * from a peer is validated before it reaches the registry; a refusal is a gRPC status with a
 * message that says why (CloudAI peers only look at the status), and never changes state.
 * Task RPCs are not served yet; grpc-js answers UNIMPLEMENTED for them.
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
      }))
      this.opts.registry.heartbeat(id, usage, running, this.now())
      cb(null, { success: true })
    } catch (err) {
      this.refuse('SendHeartbeat', req.worker_id, err, cb)
    }
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
