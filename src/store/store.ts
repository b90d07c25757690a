import type { TaskRecord, TaskStatus, WorkerRecord } from '../shared/types.js'
import type { LeaseStore } from './lease.js'

/**
 * What the master persists. Kept small on purpose: the in-memory registry is authoritative at run
 * time and the store only has to load it at start and take batches of changes, which SQLite does
 * in one transaction and MongoDB in one unordered bulkWrite.
 *
 * Every store is used through the journal (journal.ts), which orders, batches and retries the
 * writes; a store only has to apply one batch and throw when it could not.
 *
 * Every store also holds the leader's lease (lease.ts), so that masters sharing it agree on one
 * leader, and fences the writes of a deposed one: once fence(epoch) is set, each write below
 * (workers, tasks, deletions) is applied only if the stored epoch is still that one, checked in
 * the write's own transaction, and otherwise throws CLOUDAI_STALE_EPOCH having changed nothing.
 */
export interface Store extends LeaseStore {
  /** Short name for logs and /api/status ("sqlite", "memory", "mongodb"). */
  readonly kind: string
  /** Where it keeps its data, for the start-up log line (no credentials in it). */
  readonly location: string
  /**
   * Connects and prepares (schema, indexes). Can be called again after it failed.
   * @throws CLOUDAI_STORE_UNAVAILABLE when the store cannot be reached now but may be later (the
   *   master then starts from memory and keeps trying); CLOUDAI_STORE_FAILED when it never will
   *   (a bad path, a schema from a newer cloudai): the master refuses to start.
   */
  open(): Promise<void>
  /** Idempotent. */
  close(): Promise<void>
  /** One cheap round trip that needs write access: how the journal learns the store is back. */
  ping(): Promise<void>
  loadWorkers(): Promise<WorkerRecord[]>
  /** Applies upserts (latest state of each worker) and deletions atomically where the store can. */
  writeWorkers(changes: WorkerChanges): Promise<void>
  loadTasks(): Promise<TaskRecord[]>
  /**
   * Upserts the given state of each task, atomically where the store can. A write whose
   * taskVersion is not above the stored copy's is ignored, so a stale write can never move a task
   * backwards.
   */
  writeTasks(tasks: TaskRecord[]): Promise<void>
  /**
   * Removes these tasks (retention: the task table names only finished ones, as memory holds
   * them, which is newer than any stored copy); ids it does not hold are skipped.
   */
  deleteTasks(ids: readonly string[]): Promise<void>
  /**
   * Removes the finished tasks (completed, failed, cancelled) whose last change is before `before`
   * (epoch ms), and returns how many: at start, so that tasks past their retention are never
   * loaded. A task stored in any other state is kept, however old.
   */
  deleteFinishedBefore(before: number): Promise<number>
  /**
   * Removes the finished tasks past the newest `keep` of them (by last change; ties broken by the
   * store's own order, so that exactly `keep` stay), and returns how many: at start, with
   * --max-finished-tasks, so that a history longer than the count is never loaded only to be
   * pruned. A task stored in any other state is kept and not counted.
   */
  deleteFinishedBeyond(keep: number): Promise<number>
}

/** The states a task never leaves: the only ones retention removes. */
export const FINAL_TASK_STATUSES = ['completed', 'failed', 'cancelled'] as const satisfies readonly TaskStatus[]

export interface WorkerChanges {
  upserts: WorkerRecord[]
  deletes: string[]
  /**
   * Only heartbeat fields moved (last heartbeat, usage). A store may write these more cheaply and
   * less durably: after a crash a heartbeat time a few seconds old is as good as the newest, and the
   * next durable write still lands after this one.
   */
  heartbeatsOnly?: boolean
}

/** Every transition appends to a task's history and nothing removes from it: a version for free. */
export function taskVersion(task: TaskRecord): number {
  return task.history.length
}
