import * as grpc from '@grpc/grpc-js'
import type { WorkerConfig } from '../config.js'
import type { Logger } from '../shared/log.js'
import { CloudaiError, toCloudaiError } from '../shared/errors.js'
import { loadProto } from '../shared/proto.js'
import { advertiseHost, bindAddress } from '../shared/advertise.js'
import { validateAddress, validateString } from '../shared/validation.js'
import type { MasterInfoMsg, RegisterAckMsg } from '../shared/wire.js'
import { MasterLink } from './link.js'
import { readSpecs, UsageSampler } from './specs.js'

/**
 * The worker agent: a gRPC server the master dials (MasterRegister), and the link that registers
 * with the master and heartbeats. Started with `master`, it also joins that master on its own.
 */
export class WorkerAgent {
  private server: grpc.Server | null = null
  private boundPort = 0
  private link: MasterLink | null = null
  private closed = false

  constructor(private readonly config: WorkerConfig, private readonly deps: { log: Logger; diskPath?: string }) {}

  get port(): number {
    return this.boundPort
  }

  get advertise(): string {
    return this.config.advertise ?? `${advertiseHost(this.config.host)}:${this.boundPort}`
  }

  get linkState(): string {
    return this.link?.status ?? 'idle'
  }

  async start(): Promise<void> {
    const { log } = this.deps
    const diskPath = this.deps.diskPath ?? process.cwd()
    const specs = readSpecs(diskPath)
    const sampler = new UsageSampler(diskPath, specs.gpu)
    this.link = new MasterLink({
      workerId: this.config.id,
      advertise: () => this.advertise,
      specs: () => specs,
      usage: () => sampler.sample(),
      runningTasks: () => [],
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
      joinMaxBackoffMs: this.config.joinMaxBackoffMs,
      log,
    })

    const server = new grpc.Server()
    server.addService(loadProto().service, {
      MasterRegister: (call: grpc.ServerUnaryCall<MasterInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
        void this.masterRegister(call.request).then((ack) => cb(null, ack), (err: unknown) => {
          const e = toCloudaiError(err)
          cb({ code: e.grpcStatus, details: `${e.message} (${e.code})` })
        })
      },
    })
    const bind = bindAddress(this.config.host, this.config.port)
    this.boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(bind, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot listen for gRPC on ${bind}: ${err.message}`))
        else resolve(port)
      })
    })
    this.server = server
    log.info({ workerId: this.config.id, grpcPort: this.boundPort, advertise: this.advertise, specs }, `Worker ${this.config.id} listening on ${bindAddress(this.config.host, this.boundPort)} (gRPC), advertised as ${this.advertise}`)
    if (this.config.master) {
      log.info({ master: this.config.master }, `Joining master ${this.config.master}`)
      this.link.join(this.config.master)
    } else {
      log.info('Waiting for a master to call MasterRegister')
    }
  }

  private async masterRegister(req: MasterInfoMsg): Promise<RegisterAckMsg> {
    const masterId = validateString(req.master_id, 'master_id', { max: 128 })
    const address = validateAddress(req.master_address, 'master_address')
    const link = this.link
    if (!link || this.closed) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'the worker is shutting down')
    const already = link.masterAddress === address && link.status === 'connected'
    if (!already) this.deps.log.info({ masterId, master: address }, `MasterRegister from ${masterId || 'a master'} at ${address}`)
    try {
      await link.follow(address)
    } catch (err) {
      return { success: false, message: `could not register with ${address}: ${(err as Error).message}` }
    }
    return { success: true, message: already ? `already connected to ${address}` : `registered with ${address}` }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.link?.close()
    const server = this.server
    this.server = null
    if (!server) return
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown()
        resolve()
      }, 2000)
      server.tryShutdown(() => {
        clearTimeout(force)
        resolve()
      })
    })
    this.deps.log.info({ workerId: this.config.id }, `Worker ${this.config.id} stopped`)
  }
}
