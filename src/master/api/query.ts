import { CloudaiError } from '../../shared/errors.js'
import { parseDuration } from '../../shared/duration.js'
import type { TaskStatus } from '../../shared/types.js'

// Query strings of the GET routes. Each parser takes the raw query (without the `?`) and refuses
// unknown, repeated and empty parameters with CLOUDAI_BAD_REQUEST naming what is allowed: a typo
// must not silently widen what is listed.

// --- GET /api/tasks ---------------------------------------------------------------------------------

/** Every TaskStatus, checked by the compiler; CloudAI's `pending` is what we call `queued`. */
const STATUS_NAMES = { queued: true, assigned: true, running: true, completed: true, failed: true, cancelled: true } as const satisfies Record<TaskStatus, true>
const STATUS_ALIASES: Readonly<Record<string, TaskStatus>> = { pending: 'queued' }
const QUERY_KEYS = ['status', 'limit', 'offset'] as const
export const TASK_LIST_MAX_LIMIT = 1000
// 15 digits stay exact as a double; no table gets near that many tasks anyway.
const DIGITS = /^\d{1,15}$/

export interface TaskQuery {
  status?: TaskStatus
  limit?: number
  offset?: number
}

/**
 * Parses and validates `status`, `limit` and `offset` from a raw query string (without the `?`).
 * Anything else, a repeated or an empty parameter, is CLOUDAI_BAD_REQUEST naming what is allowed:
 * a typo must not silently list everything.
 */
export function parseTaskQuery(raw: string): TaskQuery {
  const query: TaskQuery = {}
  const seen = new Set<string>()
  for (const [key, value] of new URLSearchParams(raw)) {
    if (!(QUERY_KEYS as readonly string[]).includes(key)) {
      throw badQuery(`unknown query parameter ${JSON.stringify(key.slice(0, 80))}: use ${QUERY_KEYS.join(', ')}`)
    }
    if (seen.has(key)) throw badQuery(`query parameter ${key} is given more than once: give it once`)
    seen.add(key)
    if (key === 'status') query.status = queryStatus(value)
    else if (key === 'limit') query.limit = queryInteger(value, 'limit', 1, TASK_LIST_MAX_LIMIT)
    else query.offset = queryInteger(value, 'offset', 0, Number.MAX_SAFE_INTEGER)
  }
  return query
}

function queryStatus(value: string): TaskStatus {
  if (Object.hasOwn(STATUS_NAMES, value)) return value as TaskStatus
  if (Object.hasOwn(STATUS_ALIASES, value)) return STATUS_ALIASES[value]!
  throw badQuery(`status ${JSON.stringify(value.slice(0, 80))} is not a task status: use one of ${Object.keys(STATUS_NAMES).join(', ')} (pending means queued)`)
}

function queryInteger(value: string, key: string, min: number, max: number): number {
  // Digits only: Number() would also take "", " 5", "1e3" and "0x10".
  const n = DIGITS.test(value) ? Number(value) : Number.NaN
  if (!(n >= min && n <= max)) {
    const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`
    throw badQuery(`${key} ${JSON.stringify(value.slice(0, 80))} is not allowed: use a whole number ${range}`)
  }
  return n
}

function badQuery(message: string): CloudaiError {
  return new CloudaiError('CLOUDAI_BAD_REQUEST', message)
}

// --- GET /api/workers/{id}/metrics ------------------------------------------------------------------

export interface MetricsQuery {
  /** History from this time on (epoch ms). */
  since?: number
}

/**
 * `since` is an ISO 8601 time (`2026-11-28T10:00:00Z`), epoch milliseconds (`1795860000000`), or a
 * duration back from now (`15m`, `1h`, `90s`).
 */
export function parseMetricsQuery(raw: string, now: number): MetricsQuery {
  const query: MetricsQuery = {}
  const seen = new Set<string>()
  for (const [key, value] of new URLSearchParams(raw)) {
    if (key !== 'since') throw badQuery(`unknown query parameter ${JSON.stringify(key.slice(0, 80))}: use since`)
    if (seen.has(key)) throw badQuery('query parameter since is given more than once: give it once')
    seen.add(key)
    query.since = sinceValue(value, now)
  }
  return query
}

function sinceValue(value: string, now: number): number {
  const allowed = 'use an ISO 8601 time (2026-11-28T10:00:00Z), epoch milliseconds, or a duration back from now (15m, 1h)'
  if (DIGITS.test(value)) return Number(value)
  if (/^\d+(\.\d+)?(ms|s|m|h)$/.test(value)) {
    try {
      return now - parseDuration(value, 'since')
    } catch {
      throw badQuery(`since ${JSON.stringify(value.slice(0, 80))} is too far back: ${allowed}, at most 7 days`)
    }
  }
  // Date.parse also takes "1" or "March"; only full ISO dates and times are accepted.
  if (/^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(value)) {
    const t = Date.parse(value)
    if (Number.isFinite(t)) return t
  }
  throw badQuery(`since ${JSON.stringify(value.slice(0, 80))} is not a time: ${allowed}`)
}

// --- GET /api/tasks/{id}/logs ----------------------------------------------------------------------

const LOG_QUERY_KEYS = ['follow', 'tail', 'since', 'after'] as const
export const LOG_TAIL_MAX = 100_000
/** How far back a `since` duration reaches: further than any task's retention. */
const LOG_SINCE_MAX_MS = 366 * 86_400_000
const LOG_SINCE_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const LOG_SINCE_HELP = 'use a duration back from now (90s, 10m, 2h, 1d) or an RFC 3339 time (2026-12-01T19:00:00Z)'

export interface LogQuery {
  follow: boolean
  /** Lines after this sequence number (the SSE id); 0 = from the first line kept. */
  after: number
  /** Only lines whose time is this or later (epoch ms); null = any time. */
  notBefore: number | null
  /** The last `tail` lines (when after is 0); 0 = all. */
  tail: number
  /** Last-Event-ID was `end`: the reader had the end event already (answered 204, nothing to resume). */
  afterEnd: boolean
}

/**
 * `follow` (1/true/0/false), `tail` (1 to 100000 lines), `after` (a sequence number: the lines
 * after it), `since` (a duration back from `now` or an RFC 3339 time: lines older are not sent).
 * `lastEventId` is the Last-Event-ID header of a reconnecting EventSource: it wins over the query's
 * `after`, since an EventSource reconnects to the URL it was opened with (its `after` is where it
 * started, the header where it is); `end` is the id of the end event.
 */
export function parseLogQuery(raw: string, lastEventId = '', now = Date.now()): LogQuery {
  const query: LogQuery = { follow: false, after: 0, notBefore: null, tail: 0, afterEnd: false }
  const seen = new Set<string>()
  for (const [key, value] of new URLSearchParams(raw)) {
    if (!(LOG_QUERY_KEYS as readonly string[]).includes(key)) {
      throw badQuery(`unknown query parameter ${JSON.stringify(key.slice(0, 80))}: use ${LOG_QUERY_KEYS.join(', ')}`)
    }
    if (seen.has(key)) throw badQuery(`query parameter ${key} is given more than once: give it once`)
    seen.add(key)
    if (key === 'follow') {
      if (value === '1' || value === 'true') query.follow = true
      else if (value !== '0' && value !== 'false') throw badQuery(`follow ${JSON.stringify(value.slice(0, 80))} is not allowed: use 1, true, 0 or false`)
    } else if (key === 'tail') query.tail = queryInteger(value, 'tail', 1, LOG_TAIL_MAX)
    else if (key === 'after') query.after = queryInteger(value, 'after', 0, Number.MAX_SAFE_INTEGER)
    else query.notBefore = parseLogSince(value, now)
  }
  const resume = lastEventId.trim()
  if (resume === 'end') query.afterEnd = true
  else if (resume !== '') query.after = queryInteger(resume, 'Last-Event-ID', 0, Number.MAX_SAFE_INTEGER)
  return query
}

/**
 * A log `since` (the route's and `cloudai logs --since`): a duration back from `now` (`10m`; a
 * unit is required, a bare number could be a sequence number) or an RFC 3339 time with its offset.
 * Epoch ms. CLOUDAI_BAD_REQUEST otherwise.
 */
export function parseLogSince(value: string, now: number): number {
  const shown = JSON.stringify(value.slice(0, 80))
  const duration = /^(\d{1,12}(?:\.\d{1,6})?)(ms|s|m|h|d)$/.exec(value)
  if (duration) {
    const ms = Math.round(Number(duration[1]) * LOG_SINCE_UNITS[duration[2]!]!)
    if (ms > LOG_SINCE_MAX_MS) throw badQuery(`since ${shown} is too far back: ${LOG_SINCE_HELP}, at most 366d`)
    return now - ms
  }
  const time = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/.exec(value)
  if (time) {
    const t = Date.parse(value.replace(' ', 'T').toUpperCase())
    // Date.parse rolls 2026-02-31 over into March: the date must be the one written.
    const [, y, mo, d, h, mi, s] = time.map(Number) as number[]
    const day = new Date(Date.UTC(y!, mo! - 1, d!))
    if (Number.isFinite(t) && day.getUTCMonth() === mo! - 1 && day.getUTCDate() === d && h! < 24 && mi! < 60 && s! < 60) return t
  }
  if (DIGITS.test(value)) throw badQuery(`since ${shown} is not a time: ${LOG_SINCE_HELP}; to read after a line's sequence number, use after=${value.slice(0, 15)}`)
  throw badQuery(`since ${shown} is not a time: ${LOG_SINCE_HELP}`)
}
