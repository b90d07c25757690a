import type { TaskRecord, WorkerRecord } from '../shared/types.js'

/**
 * What the master persists. Kept small on purpose: the in-memory registry is authoritative at run
 * time and the store only has to load it at start and take batches of changes, which SQLite does
 * in one transaction and MongoDB in one unordered bulkWrite.
 */
export interface Store {
  /** Short name for logs and /api/status ("sqlite", "memory", "mongodb"). */
  readonly kind: string
  /** Where it keeps its data, for the start-up log line. */
  readonly location: string
  open(): Promise<void>
  /** Idempotent. */
  close(): Promise<void>
  loadWorkers(): Promise<WorkerRecord[]>
  /** Applies upserts (latest state of each worker) and deletions atomically where the store can. */
  writeWorkers(changes: WorkerChanges): Promise<void>
  loadTasks(): Promise<TaskRecord[]>
  /** Upserts the latest state of each task, atomically where the store can. */
  writeTasks(tasks: TaskRecord[]): Promise<void>
}

export interface WorkerChanges {
  upserts: WorkerRecord[]
  deletes: string[]
}
