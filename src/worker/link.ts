import * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { Backoff } from '../shared/backoff.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../shared/proto.js'
import type { WorkerSpecs, WorkerUsage } from '../shared/types.js'
import type { AckMsg, HeartbeatAckMsg, RegisterAckMsg, RunningTaskMsg, TaskResultMsg } from '../shared/wire.js'

export interface MasterLinkOptions {
  workerId: string
  /** host:port the master should dial us on (sent as worker_ip). */
  advertise: () => string
  specs: () => WorkerSpecs
  usage: () => WorkerUsage
  runningTasks: () => RunningTaskMsg[]
  heartbeatIntervalMs: number
  joinMaxBackoffMs: number
  /** Deadline of one RegisterWorker call. */
  registerTimeoutMs?: number
  /** Called each time the worker is registered with a master (first time, re-join, new master). */
  onConnected?: () => void
  log: Logger
}

export type LinkState = 'idle' | 'joining' | 'connected' | 'closed'

/**
 * The worker's connection to its master: RegisterWorker, then heartbeats; when heartbeats fail
 * (master restarted, network cut, master forgot us) it goes back to registering, with capped
 * exponential backoff and jitter, until it is connected again or told to follow another master.
 *
 * Following is idempotent: asked to follow the master it is already connected to, it does nothing;
 * asked while a registration to that master is under way, it waits for that one. Each switch of
 * master starts a new epoch so that loops of the old one stop by themselves.
 */
export class MasterLink {
  private state: LinkState = 'idle'
  private address: string | null = null
  private client: MasterWorkerClient | null = null
  private epoch = 0
  private registering: Promise<void> | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private joinTimer: NodeJS.Timeout | null = null
  private readonly backoff: Backoff
  private failuresLogged = false

  constructor(private readonly opts: MasterLinkOptions) {
    this.backoff = new Backoff(Math.min(200, opts.joinMaxBackoffMs), opts.joinMaxBackoffMs)
  }

  get masterAddress(): string | null {
    return this.address
  }

  get status(): LinkState {
    return this.state
  }

  /** True while registered with a master (heartbeats flowing). */
  get connected(): boolean {
    return this.state === 'connected' && this.client !== null
  }

  /** ReportTaskCompletion to the master we are registered with; rejects at once when there is none. */
  reportCompletion(result: TaskResultMsg, timeoutMs: number): Promise<AckMsg> {
    const client = this.client
    if (this.state !== 'connected' || !client) return Promise.reject(new Error('not registered with a master'))
    return callUnary<TaskResultMsg, AckMsg>(client, 'ReportTaskCompletion', result, timeoutMs).promise
  }

  /**
   * Follows the master at `address` and registers with it once. Resolves when registered; rejects
   * with the master's reason otherwise, and keeps retrying in the background.
   */
  async follow(address: string): Promise<void> {
    if (this.state === 'closed') throw new Error('the worker is shutting down')
    if (address === this.address) {
      if (this.state === 'connected') return
      if (this.registering) return this.registering
    } else {
      this.switchTo(address)
    }
    this.clearJoinTimer()
    try {
      await this.registerOnce()
    } catch (err) {
      this.scheduleJoin()
      throw err
    }
  }

  /** Worker-initiated join: register with `address`, retrying until it works. Does not wait. */
  join(address: string): void {
    if (this.state === 'closed') return
    if (address !== this.address) this.switchTo(address)
    this.clearJoinTimer()
    void this.registerOnce().catch(() => this.scheduleJoin())
  }

  private switchTo(address: string): void {
    this.epoch++
    this.stopHeartbeats()
    this.clearJoinTimer()
    this.client?.close()
    this.address = address
    this.client = new (loadProto().Client)(address, grpc.credentials.createInsecure(), {
      'grpc.enable_retries': 0,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    })
    this.registering = null
    this.state = 'joining'
    this.backoff.reset()
    this.failuresLogged = false
  }

  private registerOnce(): Promise<void> {
    if (this.registering) return this.registering
    const epoch = this.epoch
    this.state = 'joining'
    this.registering = this.register(epoch).finally(() => {
      if (this.epoch === epoch) this.registering = null
    })
    return this.registering
  }

  private async register(epoch: number): Promise<void> {
    const client = this.client
    const address = this.address
    if (!client || !address) throw new Error('no master to register with')
    const specs = this.opts.specs()
    const { promise } = callUnary<object, RegisterAckMsg>(
      client,
      'RegisterWorker',
      { worker_id: this.opts.workerId, worker_ip: this.opts.advertise(), total_cpu: specs.cpu, total_memory: specs.memory, total_storage: specs.storage, total_gpu: specs.gpu },
      this.opts.registerTimeoutMs ?? 3000,
    )
    let ack: RegisterAckMsg
    try {
      ack = await promise
    } catch (err) {
      const e = err as grpc.ServiceError
      this.logFailure(address, `RegisterWorker failed: ${e.details || e.message}`)
      throw new Error(e.details || e.message)
    }
    if (epoch !== this.epoch || this.state === 'closed') return
    if (!ack.success) {
      this.logFailure(address, `master refused registration: ${ack.message}`)
      throw new Error(ack.message || 'the master refused RegisterWorker')
    }
    this.state = 'connected'
    this.backoff.reset()
    this.failuresLogged = false
    this.opts.log.info({ master: address, specs }, `Registered with master ${address}; sending heartbeats every ${this.opts.heartbeatIntervalMs}ms`)
    this.startHeartbeats(epoch)
    try {
      this.opts.onConnected?.()
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, 'onConnected hook failed')
    }
  }

  /** Logs the first failure of a run of failures at warn, the rest at debug: no log spam. */
  private logFailure(address: string, message: string): void {
    if (this.failuresLogged) {
      this.opts.log.debug({ master: address }, message)
    } else {
      this.failuresLogged = true
      this.opts.log.warn({ master: address }, `${message}; retrying with backoff`)
    }
  }

  private scheduleJoin(): void {
    if (this.state === 'closed' || this.joinTimer || this.state === 'connected') return
    const epoch = this.epoch
    const delay = this.backoff.next()
    this.joinTimer = setTimeout(() => {
      this.joinTimer = null
      if (epoch !== this.epoch || this.state !== 'joining') return
      void this.registerOnce().catch(() => this.scheduleJoin())
    }, delay)
  }

  private clearJoinTimer(): void {
    if (this.joinTimer) clearTimeout(this.joinTimer)
    this.joinTimer = null
  }

  private startHeartbeats(epoch: number): void {
    this.stopHeartbeats()
    const tick = (): void => {
      this.heartbeatTimer = null
      void this.sendHeartbeat(epoch).then((ok) => {
        if (epoch !== this.epoch || this.state !== 'connected') return
        if (ok) {
          this.heartbeatTimer = setTimeout(tick, this.opts.heartbeatIntervalMs)
        } else {
          this.state = 'joining'
          this.registerOnce().catch(() => this.scheduleJoin())
        }
      })
    }
    // First heartbeat at once: usage is known as soon as we are active.
    tick()
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer)
    this.heartbeatTimer = null
  }

  private async sendHeartbeat(epoch: number): Promise<boolean> {
    const client = this.client
    if (!client || epoch !== this.epoch) return false
    const usage = this.opts.usage()
    const { promise } = callUnary<object, HeartbeatAckMsg>(
      client,
      'SendHeartbeat',
      {
        worker_id: this.opts.workerId,
        cpu_usage: usage.cpu,
        memory_usage: usage.memory,
        storage_usage: usage.storage,
        gpu_usage: usage.gpu,
        running_tasks: this.opts.runningTasks(),
      },
      Math.max(1000, Math.min(this.opts.heartbeatIntervalMs, 5000)),
    )
    try {
      const ack = await promise
      return ack.success
    } catch (err) {
      const e = err as grpc.ServiceError
      if (epoch === this.epoch && this.state === 'connected') {
        this.opts.log.warn({ master: this.address, code: grpc.status[e.code] }, `Heartbeat to master ${this.address} failed (${e.details || e.message}); registering again`)
      }
      return false
    }
  }

  close(): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.epoch++
    this.stopHeartbeats()
    this.clearJoinTimer()
    this.client?.close()
    this.client = null
  }
}
