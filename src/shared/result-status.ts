import { CloudaiError } from './errors.js'

// TaskResult.status on the wire, in both directions. A CloudAI worker says "success" (the
// container exited 0), "failed" (a non-zero exit, or an image that could not be pulled or
// started) and "cancelled" (after CancelTask); a CloudAI master takes every word but "success" as
// a failure. So our workers send CloudAI's words, and a CloudAI master counts their successes;
// our masters take those, the "completed" that earlier cloudai workers sent, and the other
// spellings of a failure that peers use, in any case.

export type ResultStatus = 'completed' | 'failed' | 'cancelled'

const WORDS: ReadonlyMap<string, ResultStatus> = new Map([
  ['success', 'completed'],
  ['completed', 'completed'],
  ['failed', 'failed'],
  ['failure', 'failed'],
  ['error', 'failed'],
  ['cancelled', 'cancelled'],
  ['canceled', 'cancelled'],
])

const SENT: Readonly<Record<ResultStatus, string>> = { completed: 'success', failed: 'failed', cancelled: 'cancelled' }

/** What a peer's TaskResult.status means. @throws CLOUDAI_BAD_FIELD for any other word */
export function parseResultStatus(value: unknown, field = 'status'): ResultStatus {
  const status = typeof value === 'string' && value.length <= 32 ? WORDS.get(value.toLowerCase()) : undefined
  if (status === undefined) {
    throw new CloudaiError(
      'CLOUDAI_BAD_FIELD',
      `${field} must be success, failed or cancelled (or completed, failure, error), got ${JSON.stringify(String(value ?? '').slice(0, 40))}`,
    )
  }
  return status
}

/** The word a worker sends for a final status: CloudAI's, which every master understands. */
export function resultStatusWord(status: ResultStatus): string {
  return SENT[status]
}
