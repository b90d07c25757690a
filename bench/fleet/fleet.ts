// The fleet simulator's parent side: N simulated workers spread over several child processes,
// commanded over IPC (join, go offline, come back, tarpits), plus "refusing" addresses.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { freePort } from './master.js'
import type { ChildStats, Command, HeartbeatTransport, Reply } from './protocol.js'

type Body<T> = T extends unknown ? Omit<T, 'seq'> : never

class FleetChild {
  private seq = 0
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>()
  readonly ids: string[] = []
  readonly exited: Promise<void>

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (r: Reply) => {
      const p = this.pending.get(r.seq)
      if (!p) return
      this.pending.delete(r.seq)
      if (r.ok) p.resolve(r)
      else p.reject(new Error(`fleet child: ${r.error}`))
    })
    this.exited = new Promise((resolve) => proc.once('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`fleet child exited with ${code}`))
      this.pending.clear()
      resolve()
    }))
  }

  send(cmd: Body<Command>): Promise<Extract<Reply, { ok: true }>> {
    const seq = ++this.seq
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (r: Reply) => void, reject })
      this.proc.send({ ...cmd, seq } as Command)
    })
  }
}

export interface FleetOptions {
  workers: number
  /** Simulated workers per child process (several hundred). */
  perChild?: number
  heartbeatMs: number
  /** Default 'unary' (SendHeartbeat, as CloudAI's workers send). */
  transport?: HeartbeatTransport
  idPrefix?: string
}

export class Fleet {
  private readonly children: FleetChild[] = []
  private readonly owner = new Map<string, FleetChild>()
  readonly workers: { id: string; address: string }[] = []

  private constructor() {}

  /** Forks the children and starts every simulated worker's gRPC server. */
  static async start(opts: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet()
    const perChild = opts.perChild ?? 250
    const nChildren = Math.max(1, Math.ceil(opts.workers / perChild))
    const childPath = fileURLToPath(new URL('./child.js', import.meta.url))
    for (let c = 0; c < nChildren; c++) fleet.children.push(new FleetChild(fork(childPath, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })))
    const prefix = opts.idPrefix ?? 'sim'
    const specs = Array.from({ length: opts.workers }, (_, i) => ({ id: `${prefix}-${String(i).padStart(5, '0')}`, port: 0 }))
    try {
      await Promise.all(fleet.children.map(async (child, c) => {
        const mine = specs.filter((_, i) => i % nChildren === c)
        const r = await child.send({ type: 'spawn', workers: mine, heartbeatMs: opts.heartbeatMs, transport: opts.transport ?? 'unary' })
        for (const w of r.workers ?? []) {
          child.ids.push(w.id)
          fleet.owner.set(w.id, child)
          fleet.workers.push(w)
        }
      }))
    } catch (err) {
      await fleet.stop()
      throw err
    }
    fleet.workers.sort((a, b) => a.id.localeCompare(b.id))
    return fleet
  }

  get ids(): string[] {
    return this.workers.map((w) => w.id)
  }

  private async each(ids: string[], cmd: (ids: string[]) => Body<Command>): Promise<void> {
    const byChild = new Map<FleetChild, string[]>()
    for (const id of ids) {
      const child = this.owner.get(id)
      if (!child) throw new Error(`no simulated worker ${id}`)
      byChild.set(child, [...(byChild.get(child) ?? []), id])
    }
    await Promise.all([...byChild].map(([child, mine]) => child.send(cmd(mine))))
  }

  /** The workers call RegisterWorker on the master themselves and start heartbeating. */
  join(ids: string[], master: string): Promise<void> {
    return this.each(ids, (mine) => ({ type: 'join', ids: mine, master }))
  }

  offline(ids: string[]): Promise<void> {
    return this.each(ids, (mine) => ({ type: 'offline', ids: mine }))
  }

  /** Listening again on the same ports; with `join`, each calls RegisterWorker at once. */
  online(ids: string[], join: boolean, master?: string): Promise<void> {
    return this.each(ids, (mine) => ({ type: 'online', ids: mine, join, ...(master ? { master } : {}) }))
  }

  /** Paused workers turn MasterRegister down, still listening (see the `pause` command). */
  pause(ids: string[], paused: boolean): Promise<void> {
    return this.each(ids, (mine) => ({ type: 'pause', ids: mine, paused }))
  }

  /** These workers also send each heartbeat to `address` (a baseline server), on a connection of their own; null stops it. */
  mirror(ids: string[], address: string | null): Promise<void> {
    return this.each(ids, (mine) => ({ type: 'mirror', ids: mine, address }))
  }

  /** Every worker sends its following heartbeats this way (a stream is opened at the next beat). */
  async transport(transport: HeartbeatTransport): Promise<void> {
    await Promise.all(this.children.map((c) => c.send({ type: 'transport', transport })))
  }

  /** Addresses that accept connections and never answer, spread over the children. */
  async tarpits(count: number): Promise<string[]> {
    const n = this.children.length
    const parts = await Promise.all(this.children.map((child, c) => child.send({ type: 'tarpits', count: Math.floor(count / n) + (c < count % n ? 1 : 0) })))
    return parts.flatMap((r) => r.addresses ?? [])
  }

  async stats(): Promise<ChildStats> {
    const all = await Promise.all(this.children.map((c) => c.send({ type: 'stats' })))
    const sum: ChildStats = { heartbeatsSent: 0, heartbeatsFailed: 0, registers: 0, registerFailures: 0, masterRegisters: 0, tasksAssigned: 0, tasksFinished: 0, reportsFailed: 0, mirrorFailed: 0 }
    for (const r of all) for (const k of Object.keys(sum) as (keyof ChildStats)[]) sum[k] += r.stats?.[k] ?? 0
    return sum
  }

  /** Every master address that sent one of the fleet's workers a MasterRegister. */
  async masters(): Promise<Set<string>> {
    const all = await Promise.all(this.children.map((c) => c.send({ type: 'masters' })))
    return new Set(all.flatMap((r) => r.masters ?? []))
  }

  /** How many times each task id was started, over the whole fleet. */
  async executions(): Promise<Map<string, number>> {
    const all = await Promise.all(this.children.map((c) => c.send({ type: 'executions' })))
    const sum = new Map<string, number>()
    for (const r of all) for (const [id, n] of r.executions ?? []) sum.set(id, (sum.get(id) ?? 0) + n)
    return sum
  }

  async stop(): Promise<void> {
    await Promise.all(this.children.map(async (c) => {
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) return
      const timer = setTimeout(() => c.proc.kill('SIGKILL'), 5000)
      await c.send({ type: 'stop' }).catch(() => c.proc.kill('SIGKILL'))
      await c.exited
      clearTimeout(timer)
    }))
  }
}

/**
 * `count` distinct addresses where nothing listens. The hosts are 127.0.0.2 and up (all of
 * 127.0.0.0/8 loops back on Linux), where neither the bench nor the tests bind anything: a port
 * free on 127.0.0.1 now can be handed to another process's listener a moment later, and would
 * then answer. bind(0) hands out only a few thousand distinct ports here, so further hosts give
 * every address a pair of its own.
 */
export async function refusingAddresses(count: number): Promise<string[]> {
  const ports = new Set<number>()
  for (let i = 0; i < Math.min(count, 2000); i++) ports.add(await freePort())
  const list = [...ports]
  return Array.from({ length: count }, (_, i) => `127.0.0.${2 + Math.floor(i / list.length)}:${list[i % list.length]}`)
}
