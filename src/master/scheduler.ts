import type { TaskRecord, WorkerRecord } from '../shared/types.js'

// Resource-aware placement. A worker's free capacity is its specs minus what the tasks the
// master placed on it hold (the master's own books, not the heartbeat's view, so two tasks placed
// in the same drain never both count the same free core). Among the workers that fit, the least
// loaded wins, then the one with the fewest tasks, then the lowest id; a target worker is honoured
// and never substituted. A suspect worker (it did not answer its last AssignTask) is never picked,
// nor a cordoned or draining one (an operator took it out of placement): a task that targets it waits.
//
// Load is the larger of the CPU and memory shares in use, where each task weighs at least one
// core: a task without a request still runs a process there, and holds nothing, so by requests
// alone six such tasks would all go to the same worker. Only the ranking counts that core; whether
// a task fits is decided by what the tasks really asked for.

export interface Capacity {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

export interface Candidate {
  worker: WorkerRecord
  /** Held by tasks assigned to or running on this worker (what fits() checks). */
  held: Capacity
  /** Tasks assigned to or running on it, and those a drain is placing there. */
  tasks: number
  /** CPU the ranking counts for those tasks: each at least one core. */
  busyCpu: number
}

export const EMPTY: Capacity = { cpu: 0, memory: 0, storage: 0, gpu: 0 }

/** A candidate with nothing on it yet; add its tasks with place(). */
export function candidate(worker: WorkerRecord): Candidate {
  return { worker, held: { ...EMPTY }, tasks: 0, busyCpu: 0 }
}

/** Counts a task on a candidate (already there, or just placed). */
export function place(c: Candidate, t: TaskRecord): void {
  c.held.cpu += t.req.cpu
  c.held.memory += t.req.memory
  c.held.storage += t.req.storage
  c.held.gpu += t.req.gpu
  c.tasks++
  c.busyCpu += Math.max(1, t.req.cpu)
}

export function fits(task: TaskRecord, total: Capacity, held: Capacity): boolean {
  // A tiny epsilon keeps 0.1 + 0.2 style sums from refusing an exact fit.
  const e = 1e-9
  return (
    held.cpu + task.req.cpu <= total.cpu + e &&
    held.memory + task.req.memory <= total.memory + e &&
    held.storage + task.req.storage <= total.storage + e &&
    held.gpu + task.req.gpu <= total.gpu + e
  )
}

/** The larger of the CPU share (each task at least one core) and the memory share in use. */
function load(total: Capacity, c: Candidate): number {
  const cpu = total.cpu > 0 ? c.busyCpu / total.cpu : c.tasks > 0 ? Number.POSITIVE_INFINITY : 0
  const mem = total.memory > 0 ? c.held.memory / total.memory : c.held.memory > 0 ? Number.POSITIVE_INFINITY : 0
  return Math.max(cpu, mem)
}

/** The worker this task should go to now, or null if no active, unsuspected, uncordoned worker fits it at the moment. */
export function pickWorker(task: TaskRecord, candidates: Iterable<Candidate>): WorkerRecord | null {
  let best: Candidate | null = null
  let bestLoad = Number.POSITIVE_INFINITY
  for (const c of candidates) {
    const w = c.worker
    if (!w.isActive || !w.specs || w.suspect || w.scheduling) continue
    if (task.targetWorkerId && task.targetWorkerId !== w.id) continue
    if (!fits(task, w.specs, c.held)) continue
    const l = load(w.specs, c)
    if (best === null || l < bestLoad || (l === bestLoad && (c.tasks < best.tasks || (c.tasks === best.tasks && w.id < best.worker.id)))) {
      best = c
      bestLoad = l
    }
  }
  return best?.worker ?? null
}

/**
 * Why a queued task is waiting, for its status: null when some registered worker could run it
 * once free (or has not told us its size yet); a reason when none ever could.
 */
export function neverFitsReason(task: TaskRecord, workers: Iterable<WorkerRecord>): string | null {
  let any = false
  for (const w of workers) {
    if (task.targetWorkerId && task.targetWorkerId !== w.id) continue
    any = true
    if (!w.specs || fits(task, w.specs, EMPTY)) return null
  }
  if (!any) return task.targetWorkerId ? `target worker ${task.targetWorkerId} is not registered` : null
  const r = task.req
  return `no registered worker${task.targetWorkerId ? ` (target ${task.targetWorkerId})` : ''} is large enough for ${r.cpu} CPU, ${r.memory} GB memory, ${r.gpu} GPU, ${r.storage} GB storage`
}
