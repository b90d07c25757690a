// The one module both sides of the SQLite thread seam import: the main-thread store (store.ts)
// and the store thread (thread.ts). Plain messages over the worker's port; records travel by
// structured clone, and an error travels as its code and message so that the journal sees the
// same CloudaiError codes and SQLITE_* codes it would see from the connection itself.
import type { TaskRecord, WorkerRecord } from '../../shared/types.js'
import type { Lease, LeaseRequest } from '../lease.js'
import type { WorkerChanges } from '../store.js'

/** What the thread is started with (workerData). */
export interface StoreThreadData {
  dataDir: string
  busyTimeoutMs: number
}

/** Each Store call, by name, with its arguments and its answer. */
export interface StoreCalls {
  open: { args: []; result: void }
  close: { args: []; result: void }
  ping: { args: []; result: void }
  loadWorkers: { args: []; result: WorkerRecord[] }
  writeWorkers: { args: [changes: WorkerChanges]; result: void }
  loadTasks: { args: []; result: TaskRecord[] }
  writeTasks: { args: [tasks: TaskRecord[]]; result: void }
  deleteTasks: { args: [ids: readonly string[]]; result: void }
  deleteFinishedBefore: { args: [before: number]; result: number }
  deleteFinishedBeyond: { args: [keep: number]; result: number }
  acquireLease: { args: [req: LeaseRequest]; result: { acquired: boolean; lease: Lease } }
  renewLease: { args: [req: { holder: string; epoch: number; ttlMs: number }]; result: boolean }
  releaseLease: { args: [req: { holder: string; epoch: number }]; result: void }
  readLease: { args: []; result: Lease | null }
  /** Sets the connection's fence; sent again after each (re)open, since a new thread starts unfenced. */
  fence: { args: [epoch: number | null]; result: void }
}

export type StoreOp = keyof StoreCalls

/** Main thread to store thread: one call; the thread runs them one at a time, in order. */
export interface StoreRequest<K extends StoreOp = StoreOp> {
  id: number
  op: K
  args: StoreCalls[K]['args']
}

/**
 * A leading part of the records of a write (the tasks of writeTasks, the upserts of writeWorkers),
 * sent ahead of its request: cloning a message costs the main thread ~1.5 µs a record, so a large
 * batch goes in parts of at most STAGE_RECORDS, one per event-loop turn, and the thread puts them
 * back in front of the request's own records before it runs the call (one transaction, as before).
 */
export interface StoreStage {
  id: number
  stage: (TaskRecord | WorkerRecord)[]
}

/** Records per message: ~0.15 ms of cloning on the main thread... */
export const STAGE_RECORDS = 100
/** ...and characters of task output and command in one (copied at ~1 GB/s): ~0.25 ms. */
export const STAGE_CHARS = 256 * 1024

/** An error as it crosses the seam: `cloudai` for a CloudaiError, else an Error with SQLite's code. */
export interface WireError {
  cloudai: boolean
  name: string
  code: string | undefined
  message: string
  details: Record<string, unknown> | undefined
}

/** Store thread to main thread: the answer to request `id`, sent only once the call is done (a write once committed). */
export type StoreResponse = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WireError }
