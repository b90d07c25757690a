import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { msgHas, Proc, reservePort } from '../../test/support/cluster.js'
import { openNetPair, type NetPair, type NsProcess } from '../../test/support/netns.js'
import { startRelay, type Relay } from './relay.js'

// The chaos suite's cluster: one real master and 3 to 5 real workers, the CLI exactly as a user
// runs it (test/support/cluster.ts' Proc: allow-listed environment, a temp dir as cwd, JSON log
// lines), on 127.0.0.1 in the run's temp dir. The master keeps its data dir and gRPC port across
// kill -9 (the workers' --master names that port); its HTTP port is the OS's pick at each start.
// Each worker keeps its data dir and port across restarts. With a partition, the last worker runs
// in a network namespace of its own, bridged to this machine through relay.ts.

export interface ClusterSettings {
  workers: number
  heartbeatTimeoutMs: number
  reconnectIntervalMs: number
  /** Give the last worker a network namespace (the partition fault). */
  partition: boolean
}

export interface WorkerSlot {
  readonly id: string
  /** The address the master dials (the relay's, for the partitioned worker). */
  readonly address: string
  readonly dataDir: string
  /** Set when it runs in namespace b of the partition. */
  readonly partitioned: boolean
  token: string
  proc: Proc | null
  stopped: boolean
  starts: number
}

export interface WorkerView {
  worker_id: string
  is_active: boolean
  last_heartbeat: string | null
  connected_at: string | null
}

/** Port of the master and of the worker inside the partition's namespaces, where nothing else listens. */
const NS_MASTER_PORT = 50051
const NS_WORKER_PORT = 50052
const START_TIMEOUT_MS = 30_000
/** Log lines kept per process once it has started (Proc keeps every line; a long run logs millions). */
const KEEP_LINES = 200

/** Once a process has started nothing waits on its log any more: only its last lines are kept. */
function boundLog(proc: Proc): void {
  proc.child.stdout!.on('data', () => {
    if (proc.lines.length > 5 * KEEP_LINES) proc.lines.splice(0, proc.lines.length - KEEP_LINES)
  })
}

export class ChaosCluster {
  master: Proc | null = null
  httpPort = 0
  /** How many times a master has been started (1 for the first). */
  masterStarts = 0
  readonly workers: WorkerSlot[] = []
  /**
   * Master starts the suite killed to heal a fault while their store was down: what they had
   * accepted as not durable (202) was lost with them, as the README says a journal is.
   */
  readonly killedWhileDegraded = new Set<number>()
  /** Every process this cluster started, for the final clean-up. */
  readonly procs = new Set<Proc>()
  /** Pid of every CLI process it started, for the caller to check that none is left. */
  readonly pids: number[] = []
  private pair: NetPair | null = null
  private nsRelay: NsProcess | null = null
  private readonly relays: Relay[] = []
  private closed = false

  private constructor(readonly dir: string, readonly settings: ClusterSettings, readonly grpcPort: number) {}

  get masterDir(): string {
    return join(this.dir, 'master')
  }

  get api(): string {
    return `http://127.0.0.1:${this.httpPort}`
  }

  /** Master, then the workers' registrations (tokens), then the workers; resolves once all are active. */
  static async start(dir: string, settings: ClusterSettings): Promise<ChaosCluster> {
    const cluster = new ChaosCluster(dir, settings, await reservePort())
    try {
      mkdirSync(cluster.masterDir)
      await cluster.startMaster(START_TIMEOUT_MS)
      for (let i = 1; i <= settings.workers; i++) {
        const partitioned = settings.partition && i === settings.workers
        const id = `chaos-w${i}`
        const port = await reservePort()
        const slot: WorkerSlot = { id, address: `127.0.0.1:${port}`, dataDir: join(dir, id), partitioned, token: '', proc: null, stopped: false, starts: 0 }
        mkdirSync(slot.dataDir)
        if (partitioned) await cluster.openPartition(port)
        const res = await cluster.request('POST', '/api/workers', { worker_id: id, worker_ip: slot.address })
        if (res.status !== 201 || typeof res.body?.token !== 'string') throw new Error(`registering ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
        slot.token = res.body.token as string
        cluster.workers.push(slot)
      }
      for (const slot of cluster.workers) await cluster.startWorker(slot)
      await cluster.waitAllActive(START_TIMEOUT_MS, 0)
      return cluster
    } catch (err) {
      await cluster.close()
      throw err
    }
  }

  /** Namespaces a and b, the relay in a and the two here (see relay.ts). */
  private async openPartition(advertisedPort: number): Promise<void> {
    const pair = await openNetPair()
    this.pair = pair
    const toMaster = join(this.dir, 'to-master.sock')
    const toWorker = join(this.dir, 'to-worker.sock')
    this.relays.push(await startRelay({ path: toMaster }, { host: '127.0.0.1', port: this.grpcPort }))
    this.relays.push(await startRelay({ host: '127.0.0.1', port: advertisedPort }, { path: toWorker }))
    const relayJs = new URL('./relay-child.js', import.meta.url).pathname
    const relay = pair.run(pair.a, [process.execPath, relayJs, `tcp:${pair.a.ip}:${NS_MASTER_PORT}`, `unix:${toMaster}`, `unix:${toWorker}`, `tcp:${pair.b.ip}:${NS_WORKER_PORT}`])
    this.nsRelay = relay
    const deadline = Date.now() + START_TIMEOUT_MS
    while (!relay.stdout().includes('relaying')) {
      if (relay.child.exitCode !== null || Date.now() > deadline) throw new Error(`the relay in ${pair.a.name} did not start: ${relay.stderr().slice(-2000)}`)
      await sleep(20)
    }
  }

  /** Cuts the partitioned worker off (the veth down at both ends). */
  async cut(): Promise<void> {
    if (!this.pair) throw new Error('no partition in this cluster')
    await this.pair.cut()
  }

  async restore(): Promise<void> {
    if (!this.pair) throw new Error('no partition in this cluster')
    await this.pair.restore()
  }

  get partitionedWorker(): WorkerSlot | undefined {
    return this.workers.find((w) => w.partitioned)
  }

  /**
   * Starts the master on its data dir and gRPC port; a start that fails (exits, or no HTTP API
   * within the time) is tried again every half second until `withinMs` has passed.
   */
  async startMaster(withinMs: number): Promise<void> {
    const deadline = Date.now() + withinMs
    let last = ''
    while (!this.closed) {
      const proc = new Proc(`master#${this.masterStarts + 1}`, [
        'master', '--grpc-host', '127.0.0.1', '--grpc-port', String(this.grpcPort), '--http-host', '127.0.0.1', '--http-port', '0',
        '--data-dir', this.masterDir, '--log-level', 'info', '--heartbeat-timeout', `${this.settings.heartbeatTimeoutMs}ms`,
        '--reconnect-interval', `${this.settings.reconnectIntervalMs}ms`, '--dial-timeout', '1s', '--shutdown-grace', '2s',
      ])
      this.procs.add(proc)
      if (proc.child.pid !== undefined) this.pids.push(proc.child.pid)
      this.masterStarts++
      try {
        const line = await proc.waitForLog((l) => l.step === 7, 'HTTP API listening', { timeoutMs: Math.max(1000, deadline - Date.now()) })
        this.master = proc
        this.httpPort = line.httpPort as number
        boundLog(proc)
        return
      } catch (err) {
        last = (err as Error).message
        await proc.kill('SIGKILL')
        this.procs.delete(proc)
        if (Date.now() > deadline) break
        await sleep(500)
      }
    }
    throw new Error(`the master did not start within ${withinMs} ms: ${last}`)
  }

  async killMaster(): Promise<void> {
    const proc = this.master
    this.master = null
    if (proc) {
      await proc.kill('SIGKILL')
      this.procs.delete(proc)
    }
  }

  /** The master's resident set, from /proc (bytes), or null when it is not running. */
  masterRss(): number | null {
    const pid = this.master?.child.pid
    if (pid === undefined) return null
    try {
      const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      return m ? Number(m[1]) * 1024 : null
    } catch {
      return null
    }
  }

  async startWorker(slot: WorkerSlot): Promise<void> {
    const ns = slot.partitioned ? this.pair : null
    const host = ns ? ns.b.ip : '127.0.0.1'
    const port = ns ? NS_WORKER_PORT : Number(slot.address.split(':')[1])
    const master = ns ? `${ns.a.ip}:${NS_MASTER_PORT}` : `127.0.0.1:${this.grpcPort}`
    const proc = new Proc(`${slot.id}#${slot.starts + 1}`, [
      'worker', '--id', slot.id, '--host', host, '--port', String(port), '--advertise', slot.address, '--master', master,
      '--heartbeat-interval', '500ms', '--join-max-backoff', '1s', '--log-level', 'info', '--data-dir', slot.dataDir, '--kill-grace', '1s',
    ], { CLOUDAI_WORKER_TOKEN: slot.token }, ns ? { netns: ns.b.name } : {})
    this.procs.add(proc)
    if (proc.child.pid !== undefined) this.pids.push(proc.child.pid)
    slot.starts++
    slot.proc = proc
    slot.stopped = false
    await proc.waitForLog(msgHas('listening on'), `${slot.id} listening`, { timeoutMs: START_TIMEOUT_MS })
    boundLog(proc)
  }

  async killWorker(slot: WorkerSlot): Promise<void> {
    const proc = slot.proc
    slot.proc = null
    slot.stopped = false
    if (proc) {
      await proc.kill('SIGKILL')
      this.procs.delete(proc)
    }
  }

  /** SIGSTOP (true) or SIGCONT (false) of the worker's process (its tasks, in their own process groups, run on). */
  pauseWorker(slot: WorkerSlot, stop: boolean): void {
    const pid = slot.proc?.child.pid
    if (pid === undefined) throw new Error(`${slot.id} is not running`)
    process.kill(pid, stop ? 'SIGSTOP' : 'SIGCONT')
    slot.stopped = stop
  }

  async request(method: string, path: string, body?: unknown, timeoutMs = 5000): Promise<{ status: number; body: any }> {
    const res = await fetch(this.api + path, {
      method,
      ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
      signal: AbortSignal.timeout(timeoutMs),
    })
    const text = await res.text()
    let parsed: unknown = text
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      // Not JSON: kept as text.
    }
    return { status: res.status, body: parsed }
  }

  /** The workers as the master shows them, or null while its API does not answer. */
  async workerViews(): Promise<Map<string, WorkerView> | null> {
    if (!this.master) return null
    try {
      const res = await this.request('GET', '/api/workers', undefined, 3000)
      if (res.status !== 200) return null
      return new Map((res.body.workers as WorkerView[]).map((w) => [w.worker_id, w]))
    } catch {
      return null
    }
  }

  /** True when the worker is active with a heartbeat at or after `since` (epoch ms). */
  static freshlyActive(w: WorkerView | undefined, since: number): boolean {
    return w !== undefined && w.is_active && w.last_heartbeat !== null && Date.parse(w.last_heartbeat) >= since
  }

  async allActive(since: number): Promise<boolean> {
    const views = await this.workerViews()
    return views !== null && this.workers.every((s) => ChaosCluster.freshlyActive(views.get(s.id), since))
  }

  async waitAllActive(withinMs: number, since: number): Promise<void> {
    const deadline = Date.now() + withinMs
    while (!(await this.allActive(since))) {
      if (Date.now() > deadline) throw new Error(`not every worker was active within ${withinMs} ms: ${JSON.stringify([...((await this.workerViews()) ?? new Map()).values()])}`)
      await sleep(100)
    }
  }

  /** Kills every process it started (stopped ones too), the relays and the namespaces. Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    for (const proc of this.procs) await proc.kill('SIGKILL')
    this.procs.clear()
    this.master = null
    for (const slot of this.workers) slot.proc = null
    if (this.nsRelay) await this.nsRelay.kill('SIGKILL')
    for (const r of this.relays.splice(0)) await r.close()
    if (this.pair) await this.pair.close()
    this.pair = null
  }
}
