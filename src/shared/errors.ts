import type { status } from '@grpc/grpc-js'

// One error type with stable codes; the HTTP and gRPC status of each code is decided here and
// nowhere else, so the REST API, the gRPC server and the CLI agree on what a failure means.

/**
 * The gRPC status codes these errors map to, as the gRPC spec numbers them (test/unit/errors.test.ts
 * checks them against grpc-js). Not grpc-js' own enum: that import would load all of grpc-js into
 * every thread that reports an error, the SQLite thread included (about 60 ms of CPU each start).
 */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const satisfies Partial<Record<keyof typeof status, status>>
type GrpcStatus = status

interface CodeSpec {
  http: number
  grpc: GrpcStatus
}

export const ErrorCodes = {
  CLOUDAI_BAD_REQUEST: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_BAD_JSON: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_BAD_WORKER_ID: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_BAD_ADDRESS: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_BAD_FIELD: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_BODY_TOO_LARGE: { http: 413, grpc: GrpcStatus.RESOURCE_EXHAUSTED },
  CLOUDAI_UNSUPPORTED_MEDIA_TYPE: { http: 415, grpc: GrpcStatus.INVALID_ARGUMENT },
  // HTTP only (src/master/api/guard.ts): requests refused before any route sees them.
  CLOUDAI_BAD_FRAMING: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_URI_TOO_LONG: { http: 414, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_HEADERS_TOO_LARGE: { http: 431, grpc: GrpcStatus.RESOURCE_EXHAUSTED },
  // 421 Misdirected Request: the request names a host this server does not answer for (RFC 9110 15.5.20).
  CLOUDAI_BAD_HOST: { http: 421, grpc: GrpcStatus.PERMISSION_DENIED },
  CLOUDAI_BAD_ORIGIN: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED },
  CLOUDAI_UNAUTHORIZED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED },
  CLOUDAI_UNAUTHENTICATED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED },
  /** A worker call without a worker token where one is needed (not from loopback, or its id has presented one). */
  CLOUDAI_WORKER_TOKEN_REQUIRED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED },
  /** A worker token this master does not know: malformed, revoked, or replaced and past its grace. */
  CLOUDAI_WORKER_TOKEN_INVALID: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED },
  /** A worker's token used to act as another worker. */
  CLOUDAI_WRONG_WORKER: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED },
  /** A call to a worker without a valid proof that it comes from the worker's master. */
  CLOUDAI_MASTER_PROOF_REQUIRED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED },
  /** MasterRegister naming a master other than the one a worker was started to follow (--master). */
  CLOUDAI_WRONG_MASTER: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED },
  CLOUDAI_NOT_FOUND: { http: 404, grpc: GrpcStatus.NOT_FOUND },
  CLOUDAI_METHOD_NOT_ALLOWED: { http: 405, grpc: GrpcStatus.UNIMPLEMENTED },
  CLOUDAI_UNKNOWN_WORKER: { http: 404, grpc: GrpcStatus.NOT_FOUND },
  CLOUDAI_WORKER_NOT_REGISTERED: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED },
  CLOUDAI_WORKER_INACTIVE: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_WORKER_EXISTS: { http: 409, grpc: GrpcStatus.ALREADY_EXISTS },
  /** DELETE /api/workers/{id}/drain of a worker no drain is on. */
  CLOUDAI_NOT_DRAINING: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_BAD_TASK_ID: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_UNKNOWN_TASK: { http: 404, grpc: GrpcStatus.NOT_FOUND },
  /** A task id prefix that more than one task's id starts with. */
  CLOUDAI_AMBIGUOUS_TASK_ID: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_TASK_FINISHED: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_TASK_REFUSED: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_SHUTTING_DOWN: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
  /** A standby master (or one that lost its lease) asked to act: details.leader names the leader's API or gRPC address, when known. */
  CLOUDAI_NOT_LEADER: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
  /** A master started without --standby on a store whose lease another live master holds (exit 2). */
  CLOUDAI_LEASE_HELD: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  /** A call or a write from a master whose epoch is below the newest one seen: a deposed leader. */
  CLOUDAI_STALE_EPOCH: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_TOO_MANY_CONNECTIONS: { http: 503, grpc: GrpcStatus.RESOURCE_EXHAUSTED },
  CLOUDAI_BAD_CONFIG: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  CLOUDAI_STORE_FAILED: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
  CLOUDAI_STORE_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
  CLOUDAI_STORE_DEGRADED: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
  /** A master or worker started on a data directory another process holds (src/shared/data-dir-lock.ts). */
  CLOUDAI_DATA_DIR_LOCKED: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION },
  /** A master or worker started on a data directory it cannot write; a store that found its own so. */
  CLOUDAI_DATA_DIR_READONLY: { http: 503, grpc: GrpcStatus.FAILED_PRECONDITION },
  CLOUDAI_UWS_FALLBACK: { http: 500, grpc: GrpcStatus.INTERNAL },
  CLOUDAI_UWS_NO_BINARY: { http: 500, grpc: GrpcStatus.INTERNAL },
  CLOUDAI_UNSUPPORTED_NODE: { http: 500, grpc: GrpcStatus.INTERNAL },
  CLOUDAI_API_UNREACHABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
  CLOUDAI_INTERNAL: { http: 500, grpc: GrpcStatus.INTERNAL },
} as const satisfies Record<string, CodeSpec>

export type ErrorCode = keyof typeof ErrorCodes

export class CloudaiError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message)
    this.name = 'CloudaiError'
    this.code = code
    this.details = details
  }

  get httpStatus(): number {
    return ErrorCodes[this.code].http
  }

  get grpcStatus(): GrpcStatus {
    return ErrorCodes[this.code].grpc
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } }
  }
}

export function isCloudaiError(err: unknown): err is CloudaiError {
  return err instanceof CloudaiError
}

/** Anything thrown that is not ours becomes an internal error with its message kept for the log. */
export function toCloudaiError(err: unknown): CloudaiError {
  if (err instanceof CloudaiError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new CloudaiError('CLOUDAI_INTERNAL', `internal error: ${message}`)
}
