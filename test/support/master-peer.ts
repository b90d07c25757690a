import type { TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { LEADER_GRPC_METADATA } from '../../src/shared/leadership.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'

// A cloudai master played by a real gRPC server in the test, on the project's proto: as leader it
// takes RegisterWorker and heartbeats (unary and streamed); as standby (issue 19) it refuses them
// as a standby master does, UNAVAILABLE with CLOUDAI_NOT_LEADER and the leader's gRPC address in
// the trailing metadata LEADER_GRPC_METADATA. It calls MasterRegister, AssignTask and CancelTask
// on a worker with whatever master_epoch the test gives. No cloudai module beyond the proto.

type Refusal = { code: grpc.status; cloudai: string; details: string }

export class PeerMaster {
  readonly registers: WorkerInfoMsg[] = []
  /** RegisterWorker and heartbeat calls refused as a standby, and when (performance.now()). */
  refusals = 0
  readonly refusedAt: number[] = []
  /** Heartbeats taken (stream or unary), per worker id. */
  readonly heartbeats = new Map<string, number>()
  /** The running_tasks ids of each worker's last heartbeat. */
  readonly running = new Map<string, string[]>()
  role: 'leader' | 'standby' = 'leader'
  /** The leader a standby names (null: none). */
  leader: string | null = null
  port = 0
  private readonly server = new grpc.Server()
  private readonly streams = new Set<grpc.ServerDuplexStream<HeartbeatMsg, HeartbeatAckMsg>>()
  private readonly clients: MasterWorkerClient[] = []
  private readonly waiters = new Set<() => void>()
  private closed = false

  constructor(readonly name: string) {}

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async start(): Promise<this> {
    this.server.addService(loadProto().service, {
      RegisterWorker: (call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
        if (this.role === 'standby') {
          this.refusals++
          cb(this.notLeader())
        } else {
          this.registers.push(call.request)
          cb(null, { success: true, message: `registered with ${this.name}` })
        }
        this.changed()
      },
      SendHeartbeat: (call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => {
        if (this.role === 'standby') {
          this.refusals++
          cb(this.notLeader())
        } else {
          this.beat(call.request)
          cb(null, { success: true })
        }
        this.changed()
      },
      StreamHeartbeats: (call: grpc.ServerDuplexStream<HeartbeatMsg, HeartbeatAckMsg>) => {
        if (this.role === 'standby') {
          this.refusals++
          call.emit('error', this.notLeader())
          this.changed()
          return
        }
        this.streams.add(call)
        call.on('data', (hb: HeartbeatMsg) => {
          this.beat(hb)
          this.changed()
        })
        call.on('end', () => {
          this.streams.delete(call)
          call.end()
        })
        call.on('error', () => this.streams.delete(call))
        call.on('cancelled', () => this.streams.delete(call))
      },
    })
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))))
    return this
  }

  /** Becomes a standby naming `leader`: open heartbeat streams end with the standby's refusal. */
  stepDown(leader: string | null): void {
    this.role = 'standby'
    this.leader = leader
    for (const s of this.streams) s.emit('error', this.notLeader())
    this.streams.clear()
  }

  beatsOf(workerId: string): number {
    return this.heartbeats.get(workerId) ?? 0
  }

  /** Calls `method` on the worker at `address`; resolves with its answer. */
  call<T = { success: boolean; message: string }>(address: string, method: 'MasterRegister' | 'AssignTask' | 'CancelTask', req: object): Promise<T> {
    const client = new (loadProto().Client)(address, grpc.credentials.createInsecure(), { 'grpc.enable_retries': 0 })
    this.clients.push(client)
    return callUnary<object, T>(client, method, req, 10_000).promise
  }

  /** MasterRegister naming this peer, at `epoch`. */
  masterRegister(worker: string, epoch: number): Promise<{ success: boolean; message: string }> {
    return this.call(worker, 'MasterRegister', { master_id: this.name, master_address: this.address, master_epoch: epoch })
  }

  /** The call's refusal: its gRPC status and cloudai code. Rejects if the call was answered. */
  async refusal(address: string, method: 'MasterRegister' | 'AssignTask' | 'CancelTask', req: object): Promise<Refusal> {
    let answer: unknown
    try {
      answer = await this.call(address, method, req)
    } catch (err) {
      const e = err as grpc.ServiceError
      if (typeof e.code !== 'number') throw err
      return { code: e.code, cloudai: String(e.metadata?.get('cloudai-error-code')[0] ?? ''), details: e.details }
    }
    throw new Error(`${method} was answered: ${JSON.stringify(answer)}`)
  }

  /** Resolves when `check` holds, re-checked after every call this peer takes. */
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
        reject(new Error(`${this.name}: ${what} did not happen within ${timeoutMs}ms (registers ${this.registers.length}, refusals ${this.refusals}, heartbeats ${JSON.stringify([...this.heartbeats])})`))
      }, timeoutMs)
      this.waiters.add(waiter)
    })
  }

  /** Stops answering: the port is closed and every connection cut. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const c of this.clients) c.close()
    this.server.forceShutdown()
    await Promise.resolve()
  }

  private notLeader(): grpc.ServiceError {
    this.refusedAt.push(performance.now())
    const metadata = new grpc.Metadata()
    metadata.set('cloudai-error-code', 'CLOUDAI_NOT_LEADER')
    if (this.leader !== null) metadata.set(LEADER_GRPC_METADATA, this.leader)
    const message = `${this.name} is a standby${this.leader ? `; the leader is ${this.leader}` : ''}`
    return Object.assign(new Error(message), { code: grpc.status.UNAVAILABLE, details: `${message} (CLOUDAI_NOT_LEADER)`, metadata })
  }

  private beat(hb: HeartbeatMsg): void {
    this.heartbeats.set(hb.worker_id, this.beatsOf(hb.worker_id) + 1)
    this.running.set(hb.worker_id, hb.running_tasks.filter((r) => r.status === 'running').map((r) => r.task_id))
  }

  private changed(): void {
    for (const w of [...this.waiters]) w()
  }
}

export async function startPeerMaster(t: TestContext, name: string): Promise<PeerMaster> {
  const peer = await new PeerMaster(name).start()
  t.after(() => peer.close())
  return peer
}
