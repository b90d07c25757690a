import { CloudaiError } from '../shared/errors.js'
import { MAX_TASK_REQUEST, validateTaskSpec, validateWorkerId } from '../shared/validation.js'
import type { TaskRecord, TaskRequirements } from '../shared/types.js'

// The operator's task body, validated. CloudAI clients send cpu_required / memory_required /
// gpu_required / storage_required; ours send req_*; both are accepted (not both with different
// values). Unknown fields are ignored so that CloudAI clients' extra fields do not break them.

/** What an operator decides about a task; the rest of a TaskRecord is the master's. */
export type TaskInput = Pick<TaskRecord, 'command' | 'name' | 'dockerImage' | 'req' | 'targetWorkerId' | 'userId' | 'timeoutS' | 'maxAttempts' | 'env'>


export function parseTaskInput(body: unknown): TaskInput {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'the body must be a JSON object: {"command": "...", "req_cpu": 1, ...}')
  }
  const b = body as Record<string, unknown>
  // The worker's own check of what runs (AssignTask): what it would refuse is refused here, with 400.
  const { dockerImage, command, env } = validateTaskSpec(b)
  const req: TaskRequirements = {
    cpu: amount(b, 'req_cpu', 'cpu_required', MAX_TASK_REQUEST.cpu),
    memory: amount(b, 'req_memory', 'memory_required', MAX_TASK_REQUEST.memory),
    storage: amount(b, 'req_storage', 'storage_required', MAX_TASK_REQUEST.storage),
    gpu: amount(b, 'req_gpu', 'gpu_required', MAX_TASK_REQUEST.gpu),
  }
  const target = b.target_worker_id ?? null
  return {
    command,
    name: text(b.name, 'name', 128),
    dockerImage,
    req,
    targetWorkerId: target === null || target === '' ? null : validateWorkerId(target, 'target_worker_id'),
    userId: text(b.user_id, 'user_id', 128),
    timeoutS: number(b.timeout_s, 'timeout_s', 0, 7 * 24 * 3600, 0),
    maxAttempts: integer(b.max_attempts, 'max_attempts', 1, 100, 3),
    env,
  }
}

function amount(b: Record<string, unknown>, name: string, alias: string, max: number): number {
  const a = b[name]
  const c = b[alias]
  if (a !== undefined && c !== undefined && a !== c) throw new CloudaiError('CLOUDAI_BAD_FIELD', `${name} and ${alias} are the same field with different values; send one`)
  return a !== undefined ? number(a, name, 0, max, 0) : number(c, alias, 0, max, 0)
}

function number(value: unknown, field: string, min: number, max: number, fallback: number): number {
  // Absent means the default; null is not a number (JSON turns NaN and Infinity into null).
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a number from ${min} to ${max}, got ${JSON.stringify(value)}`)
  }
  return value
}

function integer(value: unknown, field: string, min: number, max: number, fallback: number): number {
  const n = number(value, field, min, max, fallback)
  if (!Number.isInteger(n)) throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a whole number from ${min} to ${max}, got ${n}`)
  return n
}

function text(value: unknown, field: string, max: number): string {
  if (value === undefined || value === null) return ''
  if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a string`)
  if (value.length > max) throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} is longer than ${max} characters`)
  return value
}
