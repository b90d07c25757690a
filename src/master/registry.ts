import { EventEmitter } from 'node:events'
import { CloudaiError } from '../shared/errors.js'
import type { InactiveReason, RegistryEvents, RunningTaskInfo, WorkerRecord, WorkerSpecs, WorkerUsage } from '../shared/types.js'

/**
 * The worker registry: the master's single owner of worker state. Registration is
 * authorization-based: only ids an operator registered may connect. Every state change is
 * emitted as an event; the store journal, liveness, the monitor and the API react to them
 * instead of reaching into this map.
 *
 * Heartbeats are the hot path, so they emit nothing: they update the record in place and mark it
 * for the store's next batch (drainHeartbeats).
 */
export class Registry extends EventEmitter<RegistryEvents> {
  private readonly workers = new Map<string, WorkerRecord>()
  private readonly heartbeatDirty = new Set<string>()

  /**
   * Loads persisted workers. All start inactive: none has proven it is alive to us yet. An id memory
   * already holds keeps memory's state (it registered while the store was down). Returns the ids added.
   */
  load(records: Iterable<WorkerRecord>): string[] {
    const added: string[] = []
    for (const r of records) {
      if (this.workers.has(r.id)) continue
      this.workers.set(r.id, { ...r, isActive: false, runningTasks: r.runningTasks ?? [] })
      added.push(r.id)
    }
    return added
  }

  get size(): number {
    return this.workers.size
  }

  get(id: string): WorkerRecord | undefined {
    return this.workers.get(id)
  }

  /** @throws CLOUDAI_UNKNOWN_WORKER */
  require(id: string): WorkerRecord {
    const w = this.workers.get(id)
    if (!w) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    return w
  }

  list(): WorkerRecord[] {
    return [...this.workers.values()]
  }

  values(): IterableIterator<WorkerRecord> {
    return this.workers.values()
  }

  inactive(): WorkerRecord[] {
    const out: WorkerRecord[] = []
    for (const w of this.workers.values()) if (!w.isActive) out.push(w)
    return out
  }

  counts(): { total: number; active: number; inactive: number } {
    let active = 0
    for (const w of this.workers.values()) if (w.isActive) active++
    return { total: this.workers.size, active, inactive: this.workers.size - active }
  }

  /**
   * Operator registration (ids and addresses already validated by the caller). The same id with
   * the same address again is a no-op; with another address it is refused, so a typo can't
   * silently repoint a worker.
   */
  register(id: string, address: string, now: number): { worker: WorkerRecord; created: boolean } {
    const existing = this.workers.get(id)
    if (existing) {
      if (existing.address === address) return { worker: existing, created: false }
      throw new CloudaiError(
        'CLOUDAI_WORKER_EXISTS',
        `worker ${id} is already registered at ${existing.address}; unregister it first to move it to ${address}`,
      )
    }
    const worker: WorkerRecord = {
      id,
      address,
      isActive: false,
      specs: null,
      usage: null,
      runningTasks: [],
      reportedAddress: null,
      registeredAt: now,
      connectedAt: null,
      lastHeartbeat: null,
      disconnectedAt: null,
      reconnects: 0,
    }
    this.workers.set(id, worker)
    this.emit('worker-registered', worker)
    return { worker, created: true }
  }

  /** @throws CLOUDAI_UNKNOWN_WORKER */
  unregister(id: string): WorkerRecord {
    const worker = this.require(id)
    this.workers.delete(id)
    this.heartbeatDirty.delete(id)
    worker.isActive = false
    this.emit('worker-unregistered', worker)
    return worker
  }

  /**
   * A registered worker called RegisterWorker: it becomes active with the specs it sent.
   * @throws CLOUDAI_WORKER_NOT_REGISTERED for an id no operator registered
   */
  connect(id: string, info: { specs: WorkerSpecs; reportedAddress: string | null }, now: number): WorkerRecord {
    const worker = this.workers.get(id)
    if (!worker) {
      throw new CloudaiError(
        'CLOUDAI_WORKER_NOT_REGISTERED',
        `worker ${id} is not registered with this master; an operator must run \`cloudai register ${id} <host:port>\` first`,
      )
    }
    const wasActive = worker.isActive
    const everConnected = worker.connectedAt !== null
    worker.specs = info.specs
    worker.reportedAddress = info.reportedAddress
    worker.lastHeartbeat = now
    if (wasActive) {
      // A worker that restarted faster than the heartbeat timeout: same session as far as
      // anyone watching is concerned, but its specs may have changed.
      this.emit('worker-changed', worker)
      return worker
    }
    worker.isActive = true
    worker.connectedAt = now
    worker.runningTasks = []
    if (everConnected) worker.reconnects++
    this.emit('worker-active', worker, { reconnect: everConnected })
    return worker
  }

  /**
   * @throws CLOUDAI_UNKNOWN_WORKER for an unregistered id,
   *         CLOUDAI_WORKER_INACTIVE for a worker that must RegisterWorker again first
   */
  heartbeat(id: string, usage: WorkerUsage, runningTasks: RunningTaskInfo[], now: number): void {
    const worker = this.workers.get(id)
    if (!worker) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `heartbeat from ${id}, which is not registered with this master`)
    if (!worker.isActive) {
      throw new CloudaiError('CLOUDAI_WORKER_INACTIVE', `worker ${id} is not connected to this master; call RegisterWorker before sending heartbeats`)
    }
    worker.usage = usage
    worker.runningTasks = runningTasks
    worker.lastHeartbeat = now
    this.heartbeatDirty.add(id)
  }

  markInactive(id: string, reason: InactiveReason, now: number): boolean {
    const worker = this.workers.get(id)
    if (!worker || !worker.isActive) return false
    worker.isActive = false
    worker.disconnectedAt = now
    this.emit('worker-inactive', worker, { reason })
    return true
  }

  /** Ids whose heartbeat fields changed since the last call; the store journal batches them. */
  drainHeartbeats(): string[] {
    if (this.heartbeatDirty.size === 0) return []
    const ids = [...this.heartbeatDirty]
    this.heartbeatDirty.clear()
    return ids
  }
}
