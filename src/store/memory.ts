import type { TaskRecord, WorkerRecord } from '../shared/types.js'
import { FINAL_TASK_STATUSES, taskVersion, type Store, type WorkerChanges } from './store.js'

/** A store that keeps copies in memory: the contract's reference, and a master without a disk. */
export class MemoryStore implements Store {
  readonly kind = 'memory'
  readonly location = 'memory'
  private readonly workers = new Map<string, WorkerRecord>()
  private readonly tasks = new Map<string, TaskRecord>()

  async open(): Promise<void> {}

  async close(): Promise<void> {}

  async ping(): Promise<void> {}

  async loadWorkers(): Promise<WorkerRecord[]> {
    return [...this.workers.values()].map((w) => structuredClone(w))
  }

  async writeWorkers(changes: WorkerChanges): Promise<void> {
    for (const w of changes.upserts) this.workers.set(w.id, structuredClone(w))
    for (const id of changes.deletes) this.workers.delete(id)
  }

  async loadTasks(): Promise<TaskRecord[]> {
    return [...this.tasks.values()].map((t) => structuredClone(t))
  }

  async writeTasks(tasks: TaskRecord[]): Promise<void> {
    for (const t of tasks) {
      const held = this.tasks.get(t.id)
      if (!held || taskVersion(t) > taskVersion(held)) this.tasks.set(t.id, structuredClone(t))
    }
  }

  async deleteTasks(ids: readonly string[]): Promise<void> {
    for (const id of ids) this.tasks.delete(id)
  }

  async deleteFinishedBefore(before: number): Promise<number> {
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
    const final: readonly string[] = FINAL_TASK_STATUSES
    // Newest first; among equal times the one stored later counts as newer (Map order).
    const finished = [...this.tasks.values()].filter((t) => final.includes(t.status)).map((t, i) => ({ id: t.id, at: t.updatedAt, i }))
    finished.sort((a, b) => b.at - a.at || b.i - a.i)
    const beyond = finished.slice(Math.max(0, keep))
    for (const f of beyond) this.tasks.delete(f.id)
    return beyond.length
  }
}
