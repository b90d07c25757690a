import type { TaskRecord } from '../../src/shared/types.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { MemoryStore } from '../../src/store/memory.js'
import type { WorkerChanges } from '../../src/store/store.js'

/**
 * The in-memory store (the contract's reference), able to fail on demand: every call throws while
 * `failing`, or only task writes while `failTasks`, and open() refuses while `unreachable`. It
 * records each batch it took, to check how writes were grouped.
 */
export class FlakyStore extends MemoryStore {
  failing = false
  failTasks = false
  unreachable = false
  failures = 0
  /** While set, task writes wait for it (a write held open: the store is slow, not failing). */
  holdTasks: Promise<void> | null = null
  /** The batches that have waited on holdTasks, as `id:status` (a test waits for the one it means to hold). */
  readonly heldTaskBatches: string[][] = []
  /** While set, worker writes other than heartbeats wait for it (a registration held open). */
  holdWorkers: Promise<void> | null = null
  /** While set, heartbeat-only worker writes wait for it; `heartbeatParts` counts those started. */
  holdHeartbeats: Promise<void> | null = null
  heartbeatParts = 0
  readonly workerBatches: WorkerChanges[] = []
  readonly taskBatches: string[][] = []

  private check(): void {
    if (this.failing) {
      this.failures++
      throw new Error('database is locked')
    }
  }

  override async open(): Promise<void> {
    if (this.unreachable) {
      this.failures++
      throw new CloudaiError('CLOUDAI_STORE_UNAVAILABLE', 'connection refused')
    }
  }

  override async ping(): Promise<void> {
    this.check()
  }

  override async writeWorkers(changes: WorkerChanges): Promise<void> {
    if (changes.heartbeatsOnly) {
      this.heartbeatParts++
      if (this.holdHeartbeats) await this.holdHeartbeats
    } else if (this.holdWorkers) await this.holdWorkers
    this.check()
    this.workerBatches.push(structuredClone(changes))
    await super.writeWorkers(changes)
  }

  override async writeTasks(tasks: TaskRecord[]): Promise<void> {
    if (this.holdTasks) {
      this.heldTaskBatches.push(tasks.map((t) => `${t.id}:${t.status}`))
      await this.holdTasks
    }
    this.check()
    if (this.failTasks) {
      this.failures++
      throw new Error('tasks collection is read-only')
    }
    this.taskBatches.push(tasks.map((t) => `${t.id}:${t.status}`))
    await super.writeTasks(tasks)
  }

  override async deleteTasks(ids: readonly string[]): Promise<void> {
    this.check()
    if (this.failTasks) {
      this.failures++
      throw new Error('tasks collection is read-only')
    }
    this.taskBatches.push(ids.map((id) => `${id}:deleted`))
    await super.deleteTasks(ids)
  }

  override async deleteFinishedBefore(before: number): Promise<number> {
    this.check()
    return super.deleteFinishedBefore(before)
  }

  override async deleteFinishedBeyond(keep: number): Promise<number> {
    this.check()
    return super.deleteFinishedBeyond(keep)
  }

  /** Holds every task write from now until the returned function is called. */
  hold(): () => void {
    let release!: () => void
    this.holdTasks = new Promise<void>((resolve) => (release = resolve))
    return () => {
      this.holdTasks = null
      release()
    }
  }
}
