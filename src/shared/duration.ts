import { CloudaiError } from './errors.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * Parses `500ms`, `3s`, `1m`, `1h` or a plain number of seconds (`2.5`) into milliseconds.
 * Negative, empty and unparsable values are refused: a typo must not become a zero interval.
 */
export function parseDuration(value: unknown, field = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw bad(field, value)
    return Math.round(value * 1000)
  }
  if (typeof value !== 'string') throw bad(field, value)
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value)
  if (!match) throw bad(field, value)
  const amount = Number(match[1])
  const unit = UNITS[match[2] ?? 's'] ?? 1000
  const ms = Math.round(amount * unit)
  if (!Number.isFinite(ms) || ms > 7 * 24 * 3_600_000) throw bad(field, value)
  return ms
}

function bad(field: string, value: unknown): CloudaiError {
  return new CloudaiError(
    'CLOUDAI_BAD_CONFIG',
    `${field} ${JSON.stringify(value)} is not a duration: use 500ms, 3s, 1m or a plain number of seconds (0 or more, at most 7 days)`,
  )
}

const DAY_MS = 86_400_000
const LONG = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/

/**
 * Like parseDuration, with days too (`7d`) and a ceiling of the caller's: retention times run past
 * the week parseDuration allows.
 */
export function parseLongDuration(value: unknown, field: string, maxMs: number): number {
  const text = typeof value === 'number' ? String(value) : value
  const match = typeof text === 'string' ? LONG.exec(text) : null
  const unit = match ? (match[2] === 'd' ? DAY_MS : UNITS[match[2] ?? 's']) : undefined
  const ms = match && unit !== undefined ? Math.round(Number(match[1]) * unit) : Number.NaN
  if (!(ms >= 0 && ms <= maxMs)) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value)} is not a duration: use 30s, 15m, 12h, 7d or a plain number of seconds (at most ${formatLongDuration(maxMs)})`)
  }
  return ms
}

/** formatDuration, in days when it is whole days (`7d`). */
export function formatLongDuration(ms: number): string {
  return ms >= DAY_MS && ms % DAY_MS === 0 ? `${ms / DAY_MS}d` : formatDuration(ms)
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  return `${ms / 1000}s`
}
