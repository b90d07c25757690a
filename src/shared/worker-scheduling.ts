import { CloudaiError } from './errors.js'

/**
 * Whether a worker takes new placements, as an operator set it (cordon, drain). Kept on the
 * worker's record and in the store with it, so a cordon or a drain outlives a master restart, and a
 * drained worker that comes back stays cordoned until it is uncordoned. Replaced whole on every
 * change, never edited in place (the worker list's rendered JSON sees change by identity).
 * Absent or null: the worker takes placements.
 */
export interface WorkerScheduling {
  /** Epoch ms of the cordon (a drain cordons first). */
  cordonedAt: number
  drain: WorkerDrain | null
}

export interface WorkerDrain {
  startedAt: number
  /** Epoch ms when what still runs is cancelled and requeued; null: no deadline (wait for them). */
  deadline: number | null
  /** `--force`: what ran was cancelled and requeued at once. */
  force: boolean
  /** When nothing was left on the worker; null while the drain is under way. */
  drainedAt: number | null
}

export type SchedulingState = 'eligible' | 'cordoned' | 'draining' | 'drained'

export function schedulingState(s: WorkerScheduling | null | undefined): SchedulingState {
  if (!s) return 'eligible'
  if (!s.drain) return 'cordoned'
  return s.drain.drainedAt === null ? 'draining' : 'drained'
}

/** Longest drain deadline accepted (a week, as for every duration). */
export const MAX_DRAIN_DEADLINE_S = 7 * 24 * 3600

/**
 * A drain request body `{deadline_s, force}`, both optional: deadline_s a number of seconds,
 * 0 < deadline_s <= a week (absent or null: no deadline); force a boolean.
 * @throws CLOUDAI_BAD_REQUEST (not an object, unknown field), CLOUDAI_BAD_FIELD (a bad value)
 */
export function parseDrainRequest(body: unknown): { deadlineMs: number | null; force: boolean } {
  if (body === undefined || body === null) return { deadlineMs: null, force: false }
  if (typeof body !== 'object' || Array.isArray(body)) throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'the body must be a JSON object: {"deadline_s": 3600, "force": false}')
  const b = body as Record<string, unknown>
  for (const k of Object.keys(b)) {
    if (k !== 'deadline_s' && k !== 'force') throw new CloudaiError('CLOUDAI_BAD_REQUEST', `unknown field ${JSON.stringify(k.slice(0, 40))} in a drain request: it takes deadline_s and force`, { field: k.slice(0, 40) })
  }
  let deadlineMs: number | null = null
  if (b.deadline_s !== undefined && b.deadline_s !== null) {
    const d = b.deadline_s
    if (typeof d !== 'number' || !Number.isFinite(d) || d <= 0 || d > MAX_DRAIN_DEADLINE_S) {
      throw new CloudaiError('CLOUDAI_BAD_FIELD', `deadline_s ${JSON.stringify(d)} is not a deadline: give a number of seconds above 0 and at most ${MAX_DRAIN_DEADLINE_S} (a week), or leave it out for none`, { field: 'deadline_s' })
    }
    deadlineMs = Math.round(d * 1000)
  }
  if (b.force !== undefined && typeof b.force !== 'boolean') {
    throw new CloudaiError('CLOUDAI_BAD_FIELD', `force ${JSON.stringify(b.force)} must be true or false`, { field: 'force' })
  }
  return { deadlineMs, force: b.force === true }
}

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0

/** Reads a stored scheduling state field by field; anything damaged reads as null (the worker takes placements). */
export function readWorkerScheduling(v: unknown): WorkerScheduling | null {
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  if (!isTime(o.cordonedAt)) return null
  const d = o.drain as Record<string, unknown> | null | undefined
  let drain: WorkerDrain | null = null
  if (typeof d === 'object' && d !== null && isTime(d.startedAt)) {
    drain = {
      startedAt: d.startedAt,
      deadline: isTime(d.deadline) ? d.deadline : null,
      force: d.force === true,
      drainedAt: isTime(d.drainedAt) ? d.drainedAt : null,
    }
  }
  return { cordonedAt: o.cordonedAt, drain }
}

/** The field as a record read from a store carries it: absent when none, as a record never cordoned. */
export function withScheduling(s: WorkerScheduling | null): { scheduling?: WorkerScheduling } {
  return s ? { scheduling: s } : {}
}
