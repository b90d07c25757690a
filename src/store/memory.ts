import type { TaskRecord, WorkerRecord } from '../shared/types.js'
import { acquireOutcome, checkLeaseRequest, holdsLease, staleEpochError, type Lease, type LeaseRequest } from './lease.js'
import { FINAL_TASK_STATUSES, taskVersion, type Store, type WorkerChanges } from './store.js'

/** What MemoryStore handles made by share() have in common. */
export interface MemoryData {
  workers: Map<string, WorkerRecord>
  tasks: Map<string, TaskRecord>
  lease: Lease | null
}

/**
 * A store that keeps copies in memory: the contract's reference, and a master without a disk.
 * Its lease's clock is this process's Date.now(); share() gives a second handle on the same data
 * with a fence of its own, as two masters have on one database. Each call checks and changes in
 * one synchronous step, which is its transaction.
 */
export class MemoryStore implements Store {
  readonly kind = 'memory'
  readonly location = 'memory'
  private readonly data: MemoryData
  private fenceEpoch: number | null = null

  constructor(data?: MemoryData) {
    this.data = data ?? { workers: new Map(), tasks: new Map(), lease: null }
  }

  /** Another store on this one's data (workers, tasks, lease), fenced on its own. */
  share(): MemoryStore {
    return new MemoryStore(this.data)
  }

  private get workers(): Map<string, WorkerRecord> {
    return this.data.workers
  }

  private get tasks(): Map<string, TaskRecord> {
    return this.data.tasks
  }

  private get lease(): Lease | null {
    return this.data.lease
  }

  private set lease(lease: Lease | null) {
    this.data.lease = lease
  }

  async open(): Promise<void> {}

  async close(): Promise<void> {}

  async ping(): Promise<void> {}

  async loadWorkers(): Promise<WorkerRecord[]> {
    return [...this.workers.values()].map((w) => structuredClone(w))
  }

  async writeWorkers(changes: WorkerChanges): Promise<void> {
    this.checkFence()
    for (const w of changes.upserts) this.workers.set(w.id, structuredClone(w))
    for (const id of changes.deletes) this.workers.delete(id)
  }

  async loadTasks(): Promise<TaskRecord[]> {
    return [...this.tasks.values()].map((t) => structuredClone(t))
  }

  async writeTasks(tasks: TaskRecord[]): Promise<void> {
    this.checkFence()
    for (const t of tasks) {
      const held = this.tasks.get(t.id)
      if (!held || taskVersion(t) > taskVersion(held)) this.tasks.set(t.id, structuredClone(t))
    }
  }

  async deleteTasks(ids: readonly string[]): Promise<void> {
    this.checkFence()
    for (const id of ids) this.tasks.delete(id)
  }

  async deleteFinishedBefore(before: number): Promise<number> {
    this.checkFence()
    const final: readonly string[] = FINAL_TASK_STATUSES
    let removed = 0
    for (const [id, t] of this.tasks) {
      if (final.includes(t.status) && t.updatedAt < before) {
        this.tasks.delete(id)
        removed++
      }
    }
    return removed
  }

  async deleteFinishedBeyond(keep: number): Promise<number> {
    this.checkFence()
    const final: readonly string[] = FINAL_TASK_STATUSES
    // Newest first; among equal times the one stored later counts as newer (Map order).
    const finished = [...this.tasks.values()].filter((t) => final.includes(t.status)).map((t, i) => ({ id: t.id, at: t.updatedAt, i }))
    finished.sort((a, b) => b.at - a.at || b.i - a.i)
    const beyond = finished.slice(Math.max(0, keep))
    for (const f of beyond) this.tasks.delete(f.id)
    return beyond.length
  }

  async acquireLease(req: LeaseRequest): Promise<{ acquired: boolean; lease: Lease }> {
    checkLeaseRequest(req)
    const outcome = acquireOutcome(this.lease, req, Date.now())
    this.lease = outcome.lease
    return { acquired: outcome.acquired, lease: { ...outcome.lease } }
  }

  async renewLease(req: { holder: string; epoch: number; ttlMs: number }): Promise<boolean> {
    checkLeaseRequest(req)
    if (!holdsLease(this.lease, req)) return false
    this.lease = { ...this.lease, expiresAt: Date.now() + req.ttlMs }
    return true
  }

  async releaseLease(req: { holder: string; epoch: number }): Promise<void> {
    checkLeaseRequest(req)
    if (holdsLease(this.lease, req)) this.lease = { ...this.lease, expiresAt: Date.now() }
  }

  async readLease(): Promise<Lease | null> {
    return this.lease ? { ...this.lease } : null
  }

  fence(epoch: number | null): void {
    if (epoch !== null) checkLeaseRequest({ holder: '-', epoch })
    this.fenceEpoch = epoch
  }

  private checkFence(): void {
    const fence = this.fenceEpoch
    if (fence === null) return
    const stored = this.lease?.epoch ?? null
    if (stored !== fence) throw staleEpochError(fence, stored)
  }
}
