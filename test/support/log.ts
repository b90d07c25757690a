import pino from 'pino'
import { Writable } from 'node:stream'
import type { Logger } from '../../src/shared/log.js'

/** A real pino logger whose lines the test can read back. */
export function memoryLogger(level: pino.LevelWithSilent = 'debug'): { log: Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const raw of chunk.toString('utf8').split('\n')) if (raw) lines.push(JSON.parse(raw))
      cb()
    },
  })
  return { log: pino({ level }, stream), lines }
}
