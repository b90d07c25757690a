import type { TaskRecord, WorkerRecord } from '../shared/types.js'

// Resource-aware placement. A worker's free capacity is its specs minus what the tasks the
// master placed on it hold (the master's own books, not the heartbeat's view, so two tasks placed
// in the same drain never both count the same free core). Among the workers that fit, the least
// loaded wins; a target worker is honoured and never substituted.

export interface Capacity {
  cpu: number
  memory: number
  storage: number
  gpu: number
}

export interface Candidate {
  worker: WorkerRecord
  /** Held by tasks assigned to or running on this worker. */
  held: Capacity
}

export const EMPTY: Capacity = { cpu: 0, memory: 0, storage: 0, gpu: 0 }

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

/** Load after placing nothing: the larger of the CPU and memory shares in use. */
function load(total: Capacity, held: Capacity): number {
  const cpu = total.cpu > 0 ? held.cpu / total.cpu : 1
  const mem = total.memory > 0 ? held.memory / total.memory : 1
  return Math.max(cpu, mem)
}

/** The worker this task should go to now, or null if no active worker fits it at the moment. */
export function pickWorker(task: TaskRecord, candidates: Iterable<Candidate>): WorkerRecord | null {
  let best: Candidate | null = null
  let bestLoad = Number.POSITIVE_INFINITY
  for (const c of candidates) {
    const w = c.worker
    if (!w.isActive || !w.specs) continue
    if (task.targetWorkerId && task.targetWorkerId !== w.id) continue
    if (!fits(task, w.specs, c.held)) continue
    const l = load(w.specs, c.held)
    if (l < bestLoad || (l === bestLoad && best && w.id < best.worker.id)) {
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
