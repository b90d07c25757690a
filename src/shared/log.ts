import { createRequire } from 'node:module'
import pino, { type Logger, type LevelWithSilent } from 'pino'
import type { prettyFactory as PrettyFactory } from 'pino-pretty'

export type { Logger }

export interface LogOptions {
  level?: LevelWithSilent
  pretty?: boolean
  name?: string
}

/**
 * Where log lines go: stdout, written synchronously so that a crash never swallows the last lines
 * and no transport thread is left behind at shutdown. Something that shares the terminal with the
 * logs (the `master>` prompt) sets `around` and writes each line itself, around what it shows.
 */
export class LogOutput {
  private readonly out = pino.destination({ dest: 1, sync: true })
  around: ((text: string, write: (text: string) => void) => void) | null = null
  private readonly raw = (text: string): void => {
    this.out.write(text)
  }

  write(text: string): boolean {
    const around = this.around
    if (!around) {
      this.raw(text)
      return true
    }
    try {
      around(text, this.raw)
    } catch {
      // Whatever went wrong on the terminal, the line is not lost and logging never throws: the
      // logs go straight to stdout from now on.
      this.around = null
      this.raw(text)
    }
    return true
  }
}

/**
 * JSON lines (one object per event, human text in `msg`) or, with `pretty` (--log-format; the
 * default on a terminal), one readable line per event, both into `output`.
 */
export function createLogger(opts: LogOptions = {}, output: LogOutput = new LogOutput()): Logger {
  const options = { level: opts.level ?? 'info', name: opts.name, base: { pid: process.pid } }
  if (opts.pretty) {
    // Formatted in the call, not in a transform stream: as synchronous as the JSON lines.
    // Loaded only here: a process logging JSON (every one not on a terminal) does without it.
    const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as { prettyFactory: typeof PrettyFactory }
    const format = prettyFactory({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true })
    return pino(options, { write: (line: string) => output.write(format(line)) })
  }
  return pino(options, output)
}
