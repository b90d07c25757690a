import { type Static, Type } from '@sinclair/typebox'
import { type ErrorCode, ErrorCodes } from '../../../shared/errors.js'

// Every refusal of the HTTP API is `{"error": {code, message, details?}}`, its HTTP status decided
// by the code (src/shared/errors.ts). The document lists, per route and status, the codes that
// route can answer.

export const ERROR_CODES = Object.keys(ErrorCodes) as ErrorCode[]

/** An enum of codes (shorter in the document than a union of constants, the same to a generator). */
const codeSchema = <C extends ErrorCode>(codes: readonly C[], description?: string) => Type.Unsafe<C>({ type: 'string', enum: [...codes], ...(description ? { description } : {}) })

export const ErrorBodySchema = Type.Object(
  {
    error: Type.Object(
      {
        code: codeSchema(ERROR_CODES, 'stable: clients and tests match on it, never on the message'),
        message: Type.String({ description: 'what was wrong and what is allowed, for a human' }),
        details: Type.Optional(
          Type.Record(Type.String(), Type.Unknown(), {
            description: 'CLOUDAI_BAD_FIELD / CLOUDAI_BAD_REQUEST (and CLOUDAI_UNKNOWN_WORKER for a task\'s target_worker_id): `field`, the body field at fault; CLOUDAI_NOT_LEADER: `leader`, the leader\'s API address (null when not known)',
          }),
        ),
      },
      { additionalProperties: false },
    ),
  },
  { $id: 'Error', additionalProperties: false },
)

export type ErrorBodyT = Static<typeof ErrorBodySchema>

/** What each code means to a client, for the document's answer descriptions. */
const MEANING: Partial<Record<ErrorCode, string>> = {
  CLOUDAI_BAD_REQUEST: 'the request is malformed (an unknown query parameter or body field, a body that is not a JSON object)',
  CLOUDAI_BAD_JSON: 'the body is empty or not valid JSON',
  CLOUDAI_BAD_FIELD: 'a body field has a wrong value (details.field names it)',
  CLOUDAI_BAD_WORKER_ID: 'a worker id that is not 1 to 64 characters of A-Z a-z 0-9 . _ -',
  CLOUDAI_BAD_TASK_ID: 'a task id that is not 1 to 128 characters of A-Z a-z 0-9 . _ -',
  CLOUDAI_BAD_ADDRESS: 'an address that is not host:port with a port from 1 to 65535',
  CLOUDAI_BAD_FRAMING: 'two Content-Lengths, or Content-Length with Transfer-Encoding: the connection is closed after the answer',
  CLOUDAI_UNAUTHORIZED: 'this master has an API token and the request did not carry it (Authorization: Bearer <token>)',
  CLOUDAI_BAD_ORIGIN: "a browser page of another origin than the master's own or --api-allow-origin",
  CLOUDAI_NOT_FOUND: 'no such route',
  CLOUDAI_UNKNOWN_WORKER: 'no worker has this id',
  CLOUDAI_UNKNOWN_TASK: 'no task has this id (or a finished one past --task-retention)',
  CLOUDAI_METHOD_NOT_ALLOWED: 'the path exists, not with this method (the Allow header lists them)',
  CLOUDAI_WORKER_EXISTS: 'the worker id is registered with another address',
  CLOUDAI_NOT_DRAINING: 'no drain is on the worker',
  CLOUDAI_TASK_FINISHED: 'the task had finished (before it could be cancelled)',
  CLOUDAI_AMBIGUOUS_TASK_ID: 'more than one task id starts with this prefix',
  CLOUDAI_BODY_TOO_LARGE: 'the body is over the limit (1 MiB by default)',
  CLOUDAI_URI_TOO_LONG: 'the request line is over 8 KiB',
  CLOUDAI_UNSUPPORTED_MEDIA_TYPE: 'the body is not sent as application/json',
  CLOUDAI_BAD_HOST: 'the Host header names no name this master answers to (--api-allow-host)',
  CLOUDAI_HEADERS_TOO_LARGE: 'the headers are over 16 KiB',
  CLOUDAI_NOT_LEADER: "this master is a standby (issue 19): ask the leader, whose API address is details.leader",
  CLOUDAI_SHUTTING_DOWN: 'the master is stopping',
  CLOUDAI_STORE_DEGRADED: 'the store is down and the change could not be made durable (try again once GET /healthz says the store is ok)',
  CLOUDAI_TOO_MANY_CONNECTIONS: 'the master serves as many readers as it takes',
}

/** `- CODE: meaning` lines, one per code, for an answer's description. */
export function describeCodes(codes: readonly ErrorCode[]): string {
  return codes.map((c) => `- \`${c}\`${MEANING[c] ? `: ${MEANING[c]}` : ''}`).join('\n')
}

/** The codes of one answer, as a schema: the error body with `code` narrowed to them. */
export function errorBodyFor(codes: readonly ErrorCode[]) {
  return Type.Object(
    {
      error: Type.Object(
        {
          code: codeSchema(codes),
          message: Type.String(),
          details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
        },
        { additionalProperties: false },
      ),
    },
    { additionalProperties: false },
  )
}
