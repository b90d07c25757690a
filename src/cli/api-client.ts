import type { HealthReport } from '../master/health.js'
import type { ClusterStatus, TaskView, WorkerMetricsView, WorkerView } from '../master/views.js'
import { CloudaiError, ErrorCodes, type ErrorCode } from '../shared/errors.js'
import type { TaskStatus } from '../shared/types.js'

// The operator commands' view of a running master: one method per REST route. Failures come back
// as CloudaiError: the master's own code and message for an error response, and
// CLOUDAI_API_UNREACHABLE when no answer came at all.

export const API_TIMEOUT_MS = 10_000

export interface ApiResponse<T> {
  status: number
  body: T
  /** The response body as received, for `--json`. */
  text: string
}

export interface RegisterResponse {
  message: string
  worker: WorkerView
  persisted: boolean
  /** The new worker's token, in the 201 answer only (older masters send none). */
  token?: string
}

export interface TokenResponse {
  message: string
  worker_id: string
  token: string
  previous_valid_until: string | null
  persisted: boolean
}

export interface UnregisterResponse {
  message: string
  worker_id: string
  persisted: boolean
  /** The tasks it ran, back in the queue (a master before this field sends none). */
  tasks_requeued?: string[]
}

/** POST /api/workers/{id}/cordon, /uncordon, /drain and DELETE …/drain. */
export interface SchedulingResponse {
  message: string
  worker: WorkerView
  persisted: boolean
}

/** POST /api/tasks: only `command` is required; the master applies its defaults to the rest. */
export interface TaskSubmitBody {
  command: string
  name?: string
  req_cpu?: number
  req_memory?: number
  req_gpu?: number
  req_storage?: number
  target_worker_id?: string
  timeout_s?: number
  max_attempts?: number
  env?: Record<string, string>
  docker_image?: string
}

export interface SubmitTaskResponse {
  task_id: string
  status: string
  message: string
  task: TaskView
}

export interface TaskListQuery {
  status?: TaskStatus
  limit?: number
  offset?: number
}

export interface TaskListResponse {
  tasks: TaskView[]
  total: number
  limit: number
  offset: number
}

export interface CancelTaskResponse {
  message: string
  task: TaskView
}

export class ApiClient {
  private readonly base: string
  private readonly timeoutMs: number
  private readonly token: string | null

  /** `base` is the API's URL, e.g. http://127.0.0.1:8080 (validated by the caller). */
  constructor(base: string, opts: { timeoutMs?: number; token?: string | null } = {}) {
    this.base = base.replace(/\/+$/, '')
    this.timeoutMs = opts.timeoutMs ?? API_TIMEOUT_MS
    this.token = opts.token ?? null
  }

  status(): Promise<ApiResponse<ClusterStatus>> {
    return this.request('GET', '/api/status')
  }

  async listWorkers(): Promise<ApiResponse<{ workers: WorkerView[] }>> {
    const res = await this.request<{ workers: WorkerView[] }>('GET', '/api/workers')
    if (!Array.isArray(res.body.workers)) throw this.unexpected('GET', '/api/workers', res.status, 'no "workers" list in the answer')
    return res
  }

  registerWorker(id: string, address: string): Promise<ApiResponse<RegisterResponse>> {
    return this.request('POST', '/api/workers', { worker_id: id, worker_ip: address })
  }

  rotateWorkerToken(id: string): Promise<ApiResponse<TokenResponse>> {
    return this.request('POST', `/api/workers/${encodeURIComponent(id)}/token`, {})
  }

  unregisterWorker(id: string): Promise<ApiResponse<UnregisterResponse>> {
    return this.request('DELETE', `/api/workers/${encodeURIComponent(id)}`)
  }

  getWorker(id: string): Promise<ApiResponse<WorkerView>> {
    return this.request('GET', `/api/workers/${encodeURIComponent(id)}`)
  }

  cordonWorker(id: string): Promise<ApiResponse<SchedulingResponse>> {
    return this.request('POST', `/api/workers/${encodeURIComponent(id)}/cordon`, {})
  }

  uncordonWorker(id: string): Promise<ApiResponse<SchedulingResponse>> {
    return this.request('POST', `/api/workers/${encodeURIComponent(id)}/uncordon`, {})
  }

  drainWorker(id: string, body: { deadline_s?: number; force: boolean }): Promise<ApiResponse<SchedulingResponse>> {
    return this.request('POST', `/api/workers/${encodeURIComponent(id)}/drain`, body)
  }

  submitTask(body: TaskSubmitBody): Promise<ApiResponse<SubmitTaskResponse>> {
    return this.request('POST', '/api/tasks', body)
  }

  async listTasks(query: TaskListQuery = {}): Promise<ApiResponse<TaskListResponse>> {
    const params = new URLSearchParams()
    for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value))
    const path = params.size === 0 ? '/api/tasks' : `/api/tasks?${params}`
    const res = await this.request<TaskListResponse>('GET', path)
    if (!Array.isArray(res.body.tasks)) throw this.unexpected('GET', path, res.status, 'no "tasks" list in the answer')
    return res
  }

  /** `since`: as the route takes it (ISO time, epoch ms, or a duration back from now). */
  workerMetrics(id: string, since?: string): Promise<ApiResponse<WorkerMetricsView>> {
    const path = `/api/workers/${encodeURIComponent(id)}/metrics${since === undefined ? '' : `?${new URLSearchParams({ since })}`}`
    return this.request('GET', path)
  }

  /** 503 is an answer here, not a failure: it carries the reasons. */
  health(): Promise<ApiResponse<HealthReport>> {
    return this.request('GET', '/healthz', undefined, [503])
  }

  getTask(id: string): Promise<ApiResponse<TaskView>> {
    return this.request('GET', `/api/tasks/${encodeURIComponent(id)}`)
  }

  cancelTask(id: string): Promise<ApiResponse<CancelTaskResponse>> {
    return this.request('DELETE', `/api/tasks/${encodeURIComponent(id)}`)
  }

  private async request<T>(method: string, path: string, body?: unknown, alsoOk: readonly number[] = []): Promise<ApiResponse<T>> {
    let status: number
    let text: string
    try {
      // The timeout covers the body too: a master that sends headers and then stalls still fails.
      const res = await fetch(this.base + path, {
        method,
        signal: AbortSignal.timeout(this.timeoutMs),
        headers: {
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      })
      status = res.status
      text = await res.text()
    } catch (err) {
      throw this.unreachable(err)
    }
    let parsed: unknown
    try {
      parsed = text === '' ? undefined : JSON.parse(text)
    } catch {
      parsed = undefined
    }
    if ((status < 200 || status >= 300) && !alsoOk.includes(status)) throw this.errorFrom(method, path, status, parsed, text)
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw this.unexpected(method, path, status, 'the answer is not a JSON object')
    return { status, body: parsed as T, text }
  }

  private unreachable(err: unknown): CloudaiError {
    const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } }
    if (e?.name === 'TimeoutError') {
      return new CloudaiError('CLOUDAI_API_UNREACHABLE', `the master at ${this.base} did not answer within ${this.timeoutMs / 1000}s`, { api: this.base })
    }
    const reason = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err)
    return new CloudaiError(
      'CLOUDAI_API_UNREACHABLE',
      `cannot reach the master at ${this.base} (${reason}): is \`cloudai master\` running? Start it, or point --api at the master's HTTP API`,
      { api: this.base },
    )
  }

  /**
   * The master's `{"error":{code,message,details}}`, kept as it is when the code is one we know:
   * its details too (`field`, `leader`), beside the HTTP status and the body.
   */
  private errorFrom(method: string, path: string, status: number, parsed: unknown, text: string): CloudaiError {
    const error = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error
    const own = error?.details !== null && typeof error?.details === 'object' && !Array.isArray(error.details) ? (error.details as Record<string, unknown>) : {}
    const details = { ...own, httpStatus: status, body: text }
    if (typeof error?.code === 'string' && typeof error.message === 'string') {
      if (Object.hasOwn(ErrorCodes, error.code)) return new CloudaiError(error.code as ErrorCode, error.message, details)
      return new CloudaiError('CLOUDAI_INTERNAL', `${error.message} (master code ${error.code}, HTTP ${status})`, details)
    }
    return this.unexpected(method, path, status, `HTTP ${status} without a cloudai error body`, text)
  }

  private unexpected(method: string, path: string, status: number, what: string, text = ''): CloudaiError {
    return new CloudaiError('CLOUDAI_INTERNAL', `${method} ${this.base}${path}: ${what}; is ${this.base} a cloudai master?`, { httpStatus: status, body: text })
  }
}
