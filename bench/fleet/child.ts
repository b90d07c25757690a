// One child process of the fleet simulator: several hundred simulated workers, each a real gRPC
// server speaking the real protocol (MasterRegister -> RegisterWorker back on the master's address,
// then SendHeartbeat at an interval with realistic usage), driven by IPC commands from the parent.
import { createServer, type Server as NetServer, type Socket } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatAckMsg, HeartbeatMsg, MasterInfoMsg, RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import type { ChildStats, Command, Reply } from './protocol.js'

const proto = loadProto()
const stats: ChildStats = { heartbeatsSent: 0, heartbeatsFailed: 0, registers: 0, registerFailures: 0, masterRegisters: 0 }
const CALL_TIMEOUT_MS = 5000

class SimWorker {
  server: grpc.Server | null = null
  client: MasterWorkerClient | null = null
  clientTarget = ''
  master = ''
  online = false
  timer: NodeJS.Timeout | null = null
  registering: Promise<boolean> | null = null
  // A random walk per worker: realistic, not constant, payloads.
  usage = { cpu: Math.random() * 60, mem: 20 + Math.random() * 40, storage: 10 + Math.random() * 50, gpu: Math.random() * 30 }

  constructor(readonly id: string, public port: number, private readonly heartbeatMs: number) {}

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async listen(): Promise<void> {
    const server = new grpc.Server()
    server.addService(proto.service, {
      MasterRegister: (call: grpc.ServerUnaryCall<MasterInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
        stats.masterRegisters++
        const master = call.request.master_address
        void this.register(master).then((ok) => cb(null, ok ? { success: true, message: `registered with ${master}` } : { success: false, message: `could not register with ${master}` }))
      },
      RegisterWorker: unimplemented, SendHeartbeat: unimplemented, ReportTaskCompletion: unimplemented, StreamHeartbeats: unimplemented,
      AssignTask: (_call: unknown, cb: grpc.sendUnaryData<{ success: boolean; message: string }>) => cb(null, { success: false, message: 'simulated worker runs no tasks' }),
      CancelTask: (_call: unknown, cb: grpc.sendUnaryData<{ success: boolean; message: string }>) => cb(null, { success: false, message: 'simulated worker runs no tasks' }),
    })
    // The port may take a moment to be free again after a close: retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        this.port = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${this.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))))
        break
      } catch (err) {
        if (attempt >= 20) throw err
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    this.server = server
    this.online = true
  }

  private clientFor(master: string): MasterWorkerClient {
    if (this.client && this.clientTarget === master) return this.client
    this.client?.close()
    // One connection per worker, as separate worker processes would have.
    this.client = new proto.Client(master, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.enable_retries': 0 })
    this.clientTarget = master
    return this.client
  }

  /** RegisterWorker on the master (single flight), then heartbeats. */
  register(master: string): Promise<boolean> {
    if (this.registering) return this.registering
    this.master = master
    const client = this.clientFor(master)
    const info: WorkerInfoMsg = { worker_id: this.id, worker_ip: this.address, total_cpu: 8, total_memory: 32, total_storage: 500, total_gpu: 1 }
    this.registering = new Promise<boolean>((resolve) => {
      client.RegisterWorker(info, new grpc.Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, ack) => {
        this.registering = null
        const ok = !err && ack?.success === true
        if (ok) {
          stats.registers++
          if (this.online) this.startHeartbeats()
        } else {
          stats.registerFailures++
        }
        resolve(ok)
      })
    })
    return this.registering
  }

  private startHeartbeats(): void {
    if (this.timer) return
    // Spread the fleet's heartbeats over the interval, as independent processes would be.
    const first = Math.random() * this.heartbeatMs
    this.timer = setTimeout(() => {
      this.beat()
      this.timer = setInterval(() => this.beat(), this.heartbeatMs)
    }, first)
  }

  private beat(): void {
    if (!this.online || !this.client) return
    const walk = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v + (Math.random() - 0.5) * 10))
    const u = this.usage
    u.cpu = walk(u.cpu, 0, 100)
    u.mem = walk(u.mem, 5, 95)
    u.storage = walk(u.storage, 5, 95)
    u.gpu = walk(u.gpu, 0, 100)
    const hb: HeartbeatMsg = { worker_id: this.id, cpu_usage: u.cpu, memory_usage: u.mem, storage_usage: u.storage, gpu_usage: u.gpu, running_tasks: [] }
    stats.heartbeatsSent++
    this.client.SendHeartbeat(hb, new grpc.Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err: grpc.ServiceError | null, _ack?: HeartbeatAckMsg) => {
      if (!err) return
      stats.heartbeatsFailed++
      // Refused (the master thinks it inactive, or forgot it): join again, as a real worker does.
      if (this.online && this.master && err.code !== grpc.status.UNAVAILABLE && err.code !== grpc.status.DEADLINE_EXCEEDED) void this.register(this.master)
    })
  }

  async offline(): Promise<void> {
    this.online = false
    if (this.timer) {
      clearTimeout(this.timer)
      clearInterval(this.timer)
      this.timer = null
    }
    this.client?.close()
    this.client = null
    this.clientTarget = ''
    this.server?.forceShutdown()
    this.server = null
  }
}

function unimplemented(_call: unknown, cb: grpc.sendUnaryData<unknown>): void {
  cb({ code: grpc.status.UNIMPLEMENTED, details: 'simulated worker' } as grpc.ServiceError)
}

const workers = new Map<string, SimWorker>()
const tarpits: { server: NetServer; sockets: Set<Socket> }[] = []

function pick(ids: string[]): SimWorker[] {
  return ids.map((id) => {
    const w = workers.get(id)
    if (!w) throw new Error(`no simulated worker ${id} in this child`)
    return w
  })
}

async function handle(cmd: Command): Promise<Reply> {
  switch (cmd.type) {
    case 'spawn': {
      const made = cmd.workers.map((s) => new SimWorker(s.id, s.port, cmd.heartbeatMs))
      await Promise.all(made.map((w) => w.listen()))
      for (const w of made) workers.set(w.id, w)
      return { seq: cmd.seq, ok: true, workers: made.map((w) => ({ id: w.id, address: w.address })) }
    }
    case 'join': {
      const results = await Promise.all(pick(cmd.ids).map((w) => w.register(cmd.master)))
      const failed = results.filter((ok) => !ok).length
      return failed ? { seq: cmd.seq, ok: false, error: `${failed} of ${results.length} RegisterWorker calls failed` } : { seq: cmd.seq, ok: true }
    }
    case 'offline':
      await Promise.all(pick(cmd.ids).map((w) => w.offline()))
      return { seq: cmd.seq, ok: true }
    case 'online': {
      const list = pick(cmd.ids)
      await Promise.all(list.map((w) => w.listen()))
      // Answer once listening; the joins are what the parent times, through the master.
      if (cmd.join) for (const w of list) void w.register(w.master)
      return { seq: cmd.seq, ok: true }
    }
    case 'tarpits': {
      const addresses: string[] = []
      for (let i = 0; i < cmd.count; i++) {
        const sockets = new Set<Socket>()
        const server = createServer((s) => {
          sockets.add(s)
          s.on('error', () => {})
          s.on('close', () => sockets.delete(s))
        })
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
        const a = server.address()
        addresses.push(`127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`)
        tarpits.push({ server, sockets })
      }
      return { seq: cmd.seq, ok: true, addresses }
    }
    case 'stats':
      return { seq: cmd.seq, ok: true, stats: { ...stats } }
    case 'stop':
      await Promise.all([...workers.values()].map((w) => w.offline()))
      for (const t of tarpits) {
        for (const s of t.sockets) s.destroy()
        t.server.close()
      }
      return { seq: cmd.seq, ok: true }
  }
}

process.on('message', (cmd: Command) => {
  handle(cmd).then(
    (reply) => {
      process.send!(reply)
      if (cmd.type === 'stop') setTimeout(() => process.exit(0), 50)
    },
    (err: Error) => process.send!({ seq: cmd.seq, ok: false, error: err.message }),
  )
})
process.on('disconnect', () => process.exit(0))
