// One child process of the fleet simulator: several hundred simulated workers, each a real gRPC
// server speaking the real protocol (MasterRegister -> RegisterWorker back on the master's address,
// then heartbeats at an interval with realistic usage, unary SendHeartbeat or on one StreamHeartbeats
// call as the real worker does by default), driven by IPC commands from the parent.
// AssignTask really runs the command (`/bin/sh -c`, as the real worker's executor does) and reports
// its end with ReportTaskCompletion, so the master sees real task transitions.
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, type Server as NetServer, type Socket } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { AckMsg, HeartbeatAckMsg, HeartbeatMsg, MasterInfoMsg, RegisterAckMsg, TaskAckMsg, TaskIdMsg, TaskMsg, TaskResultMsg, WorkerInfoMsg } from '../../src/shared/wire.js'
import type { ChildStats, Command, HeartbeatTransport, Reply } from './protocol.js'

const proto = loadProto()
// Which masters told a worker of this child to register: a bench's own, or any other that dials its ports.
const mastersSeen = new Set<string>()
const stats: ChildStats = { mirrorFailed: 0, heartbeatsSent: 0, heartbeatsFailed: 0, registers: 0, registerFailures: 0, masterRegisters: 0, tasksAssigned: 0, tasksFinished: 0, reportsFailed: 0 }
// The report keeps the end of the output, like the real worker's (smaller: the commands are trivial).
const MAX_LOG_BYTES = 4096

interface RunningTask {
  task: TaskMsg
  child: ChildProcess
  startedAt: number
}
const CALL_TIMEOUT_MS = 5000
/** How long the `join` command keeps trying before it reports the workers that could not join. */
const JOIN_WITHIN_MS = 30_000

class SimWorker {
  server: grpc.Server | null = null
  client: MasterWorkerClient | null = null
  clientTarget = ''
  master = ''
  online = false
  paused = false
  timer: NodeJS.Timeout | null = null
  stream: grpc.ClientDuplexStream<HeartbeatMsg, HeartbeatAckMsg> | null = null
  registering: Promise<boolean> | null = null
  /** A second server that gets a copy of every heartbeat (the bare baseline of `scaling`), on a connection of its own. */
  mirror: { client: MasterWorkerClient; stream: grpc.ClientDuplexStream<HeartbeatMsg, HeartbeatAckMsg> | null } | null = null
  private rejoining: Promise<boolean> | null = null
  readonly tasks = new Map<string, RunningTask>()
  /** Results the master has not acknowledged yet; retried with the next heartbeat. */
  readonly unreported = new Map<string, TaskResultMsg>()
  // A random walk per worker: realistic, not constant, payloads.
  usage = { cpu: Math.random() * 60, mem: 20 + Math.random() * 40, storage: 10 + Math.random() * 50, gpu: Math.random() * 30 }

  constructor(readonly id: string, public port: number, private readonly heartbeatMs: number, public transport: HeartbeatTransport) {}

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async listen(): Promise<void> {
    const server = new grpc.Server()
    server.addService(proto.service, {
      MasterRegister: (call: grpc.ServerUnaryCall<MasterInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
        stats.masterRegisters++
        const master = call.request.master_address
        mastersSeen.add(master)
        if (this.paused) return cb(null, { success: false, message: 'paused' })
        this.register(master).then(
          (ok) => cb(null, ok ? { success: true, message: `registered with ${master}` } : { success: false, message: `could not register with ${master}` }),
          (err: Error) => cb(null, { success: false, message: `could not register with ${master}: ${err.message}` }),
        )
      },
      RegisterWorker: unimplemented, SendHeartbeat: unimplemented, ReportTaskCompletion: unimplemented, StreamHeartbeats: unimplemented,
      AssignTask: (call: grpc.ServerUnaryCall<TaskMsg, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => cb(null, this.assign(call.request)),
      CancelTask: (call: grpc.ServerUnaryCall<TaskIdMsg, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => {
        const t = this.tasks.get(call.request.task_id)
        if (t) t.child.kill('SIGKILL')
        cb(null, { success: t !== undefined, message: t ? 'cancelled' : 'not running here' })
      },
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

  /**
   * Joins as a real worker does: RegisterWorker again, with a growing pause, until the master takes
   * it, the worker goes offline, or `withinMs` has passed. One lost call on a loaded machine must
   * not strand the worker.
   */
  async join(master: string, withinMs = Infinity): Promise<boolean> {
    const deadline = Date.now() + withinMs
    for (let pauseMs = 100; this.online; pauseMs = Math.min(2000, pauseMs * 2)) {
      if (await this.register(master)) return true
      if (Date.now() + pauseMs > deadline) break
      await new Promise((r) => setTimeout(r, pauseMs))
    }
    return false
  }

  /** Starts the command and answers at once, as the real agent does once the process is spawned. */
  private assign(task: TaskMsg): TaskAckMsg {
    if (this.tasks.has(task.task_id)) return { success: true, message: 'already running' }
    if (this.unreported.has(task.task_id)) return { success: false, message: 'already finished; result pending delivery' }
    const startedAt = Date.now()
    const child = spawn('/bin/sh', ['-c', task.command], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CLOUDAI_TASK_ID: task.task_id, ...task.env } })
    stats.tasksAssigned++
    executions.set(task.task_id, (executions.get(task.task_id) ?? 0) + 1)
    const out: Buffer[] = []
    let size = 0
    const keep = (b: Buffer): void => {
      out.push(b)
      size += b.length
      while (size > MAX_LOG_BYTES && out.length > 1) size -= out.shift()!.length
    }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    this.tasks.set(task.task_id, { task, child, startedAt })
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): void => {
      this.tasks.delete(task.task_id)
      stats.tasksFinished++
      const finishedAt = Date.now()
      const ok = code === 0
      const result: TaskResultMsg = {
        task_id: task.task_id, worker_id: this.id, status: ok ? 'completed' : signal === 'SIGKILL' ? 'cancelled' : 'failed',
        logs: Buffer.concat(out).toString('utf8').slice(-MAX_LOG_BYTES), result_location: '', output_files: [], exit_code: code ?? -1,
        duration_ms: finishedAt - startedAt, started_at: startedAt, finished_at: finishedAt, attempt: task.attempt,
        reason: spawnError ? spawnError.message : ok ? '' : code !== null ? `exit code ${code}` : `killed by ${signal}`, has_exit_code: code !== null,
      }
      this.unreported.set(task.task_id, result)
      this.report(result)
    }
    child.once('error', (err) => finish(null, null, err))
    child.once('close', (code, signal) => finish(code, signal))
    return { success: true, message: 'started' }
  }

  /** ReportTaskCompletion to the master this worker is registered with; kept for a retry on failure. */
  private report(result: TaskResultMsg): void {
    if (!this.online || !this.client) return
    this.client.ReportTaskCompletion(result, new grpc.Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err: grpc.ServiceError | null, _ack?: AckMsg) => {
      if (err) stats.reportsFailed++
      else this.unreported.delete(result.task_id)
    })
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
    // Running tasks and undelivered results are listed, as the real worker does, so the master
    // does not requeue them as lost.
    const running_tasks = this.tasks.size === 0 && this.unreported.size === 0 ? [] : [
      ...[...this.tasks.values()].map(({ task }) => ({ task_id: task.task_id, cpu_allocated: task.req_cpu, memory_allocated: task.req_memory, gpu_allocated: task.req_gpu, status: 'running', attempt: task.attempt })),
      ...[...this.unreported.values()].map((r) => ({ task_id: r.task_id, cpu_allocated: 0, memory_allocated: 0, gpu_allocated: 0, status: r.status, attempt: r.attempt })),
    ]
    for (const r of this.unreported.values()) this.report(r)
    const hb: HeartbeatMsg = { worker_id: this.id, cpu_usage: u.cpu, memory_usage: u.mem, storage_usage: u.storage, gpu_usage: u.gpu, running_tasks }
    stats.heartbeatsSent++
    if (this.mirror) this.mirrorBeat(hb)
    if (this.transport === 'stream') {
      this.openStream().write(hb)
      return
    }
    this.client.SendHeartbeat(hb, new grpc.Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err: grpc.ServiceError | null, _ack?: HeartbeatAckMsg) => {
      if (err) this.heartbeatFailed(err)
    })
  }

  private openStream(): grpc.ClientDuplexStream<HeartbeatMsg, HeartbeatAckMsg> {
    if (this.stream) return this.stream
    const stream = this.client!.StreamHeartbeats(new grpc.Metadata())
    // The master writes nothing while it accepts; reading keeps the call's flow control open anyway.
    stream.on('data', () => {})
    stream.on('error', (err: grpc.ServiceError) => {
      if (this.stream === stream) this.stream = null
      if (err.code !== grpc.status.CANCELLED) this.heartbeatFailed(err)
    })
    stream.on('end', () => {
      if (this.stream === stream) this.stream = null
    })
    this.stream = stream
    return stream
  }

  /** The same heartbeat, the same way, to the mirror; its failures are only counted. */
  private mirrorBeat(hb: HeartbeatMsg): void {
    const m = this.mirror!
    if (this.transport === 'stream') {
      if (!m.stream) {
        const stream = m.client.StreamHeartbeats(new grpc.Metadata())
        stream.on('data', () => {})
        stream.on('error', (err: grpc.ServiceError) => {
          if (err.code !== grpc.status.CANCELLED) stats.mirrorFailed++
          if (m.stream === stream) m.stream = null
        })
        stream.on('end', () => {
          if (m.stream === stream) m.stream = null
        })
        m.stream = stream
      }
      m.stream.write(hb)
      return
    }
    m.client.SendHeartbeat(hb, new grpc.Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err: grpc.ServiceError | null) => {
      if (err) stats.mirrorFailed++
    })
  }

  setMirror(address: string | null): void {
    if (this.mirror) {
      this.mirror.stream?.cancel()
      this.mirror.client.close()
      this.mirror = null
    }
    if (address) this.mirror = { client: new proto.Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.enable_retries': 0 }), stream: null }
  }

  private closeStream(): void {
    const stream = this.stream
    this.stream = null
    stream?.cancel()
  }

  setTransport(transport: HeartbeatTransport): void {
    this.transport = transport
    if (transport === 'unary') {
      this.closeStream()
      if (this.mirror?.stream) {
        this.mirror.stream.cancel()
        this.mirror.stream = null
      }
    }
  }

  private heartbeatFailed(err: grpc.ServiceError): void {
    stats.heartbeatsFailed++
    // Refused (the master thinks it inactive, or forgot it): join again, with backoff, as a real worker does.
    if (!this.online || !this.master || err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED) return
    // One re-join at a time: each later refused heartbeat would start another loop.
    this.rejoining ??= this.join(this.master, JOIN_WITHIN_MS).finally(() => (this.rejoining = null))
  }

  async offline(): Promise<void> {
    this.online = false
    // A worker process that died takes its tasks with it.
    for (const t of this.tasks.values()) t.child.kill('SIGKILL')
    if (this.timer) {
      clearTimeout(this.timer)
      clearInterval(this.timer)
      this.timer = null
    }
    this.closeStream()
    this.setMirror(null)
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
/** Starts per task id, over every worker of this child: a task started twice anywhere shows. */
const executions = new Map<string, number>()
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
      const made = cmd.workers.map((s) => new SimWorker(s.id, s.port, cmd.heartbeatMs, cmd.transport ?? 'unary'))
      await Promise.all(made.map((w) => w.listen()))
      for (const w of made) workers.set(w.id, w)
      return { seq: cmd.seq, ok: true, workers: made.map((w) => ({ id: w.id, address: w.address })) }
    }
    case 'join': {
      const results = await Promise.all(pick(cmd.ids).map((w) => w.join(cmd.master, JOIN_WITHIN_MS)))
      const failed = results.filter((ok) => !ok).length
      return failed ? { seq: cmd.seq, ok: false, error: `${failed} of ${results.length} workers could not join within ${JOIN_WITHIN_MS} ms` } : { seq: cmd.seq, ok: true }
    }
    case 'offline':
      await Promise.all(pick(cmd.ids).map((w) => w.offline()))
      return { seq: cmd.seq, ok: true }
    case 'online': {
      const list = pick(cmd.ids)
      await Promise.all(list.map((w) => w.listen()))
      // Answer once listening; the joins are what the parent times, through the master.
      if (cmd.join) {
        for (const w of list) w.join(cmd.master ?? w.master).catch((err: Error) => process.stderr.write(`fleet worker ${w.id} could not join: ${err.message}\n`))
      }
      return { seq: cmd.seq, ok: true }
    }
    case 'pause':
      for (const w of pick(cmd.ids)) w.paused = cmd.paused
      return { seq: cmd.seq, ok: true }
    case 'tarpits': {
      const addresses: string[] = []
      for (let i = 0; i < cmd.count; i++) {
        const sockets = new Set<Socket>()
        const server = createServer((s) => {
          sockets.add(s)
          s.on('error', () => {})
          s.on('close', () => sockets.delete(s))
          // Read and drop what the dialer sends: a socket nobody reads never sees the dialer hang up,
          // and each pass would leave a descriptor behind until accept fails (EMFILE) and libuv
          // closes new connections at once, turning tarpits into refusals.
          s.resume()
        })
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
        const a = server.address()
        addresses.push(`127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`)
        tarpits.push({ server, sockets })
      }
      return { seq: cmd.seq, ok: true, addresses }
    }
    case 'mirror':
      for (const w of pick(cmd.ids)) w.setMirror(cmd.address)
      return { seq: cmd.seq, ok: true }
    case 'transport':
      for (const w of workers.values()) w.setTransport(cmd.transport)
      return { seq: cmd.seq, ok: true }
    case 'stats':
      return { seq: cmd.seq, ok: true, stats: { ...stats } }
    case 'executions':
      return { seq: cmd.seq, ok: true, executions: [...executions] }
    case 'masters':
      return { seq: cmd.seq, ok: true, masters: [...mastersSeen] }
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
