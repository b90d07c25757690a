import * as grpc from '@grpc/grpc-js'

// What a failed AssignTask says about the task and about the worker. Only INVALID_ARGUMENT is the
// worker's verdict on the task itself (its AssignTask parsing, the same check as the master's
// submission: src/shared/validation.ts): the task is failed with that reason and never retried.
// Anything else says nothing against the task: no answer at all (connection refused, unreachable,
// deadline), or a worker that cannot take tasks from us right now (shutting down, full, following
// another master, refusing our proof). The worker is then suspect (no placements until it answers
// again) and the task is placed elsewhere without spending an attempt.

export interface AssignFailure {
  kind: 'refused' | 'unreachable'
  /** The gRPC status name. */
  code: string
  /** The worker's reason (its details), or the transport's. */
  message: string
}

export function assignFailure(err: grpc.ServiceError): AssignFailure {
  const code = grpc.status[err.code] ?? String(err.code)
  const message = err.details || err.message
  return { kind: err.code === grpc.status.INVALID_ARGUMENT ? 'refused' : 'unreachable', code, message }
}
