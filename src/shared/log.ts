import pino, { type Logger, type LevelWithSilent } from 'pino'
import pretty from 'pino-pretty'

export type { Logger }

export interface LogOptions {
  level?: LevelWithSilent
  pretty?: boolean
  name?: string
}

/**
 * JSON lines on stdout (one object per event, human text in `msg`) or, with `pretty`
 * (--log-format; the default on a terminal), one readable line per event. Both write synchronously so that a crash never swallows the last
 * lines and no transport thread is left behind at shutdown.
 */
export function createLogger(opts: LogOptions = {}): Logger {
  const options = { level: opts.level ?? 'info', name: opts.name, base: { pid: process.pid } }
  if (opts.pretty) {
    return pino(options, pretty({ sync: true, colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }))
  }
  return pino(options, pino.destination({ dest: 1, sync: true }))
}

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
