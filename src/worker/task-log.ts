import { EventEmitter } from 'node:events'
import { renameSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

// A task's output as numbered records: one per line, each with its stream and the time it
// arrived. The running attempt keeps its records in memory, the latest `maxBytes` of them (the
// same bound as the output tail of the report); older ones are dropped, and a reader that asks
// for them is told so (firstSeq). When the attempt ends, what is kept is written to `logs.json`
// in its task directory, beside output.log, so that a finished task's lines, with their sequence
// numbers, outlive the worker's memory (and a restart) until the task directory's retention.

export type LogStream = 'stdout' | 'stderr'

export interface LogRecord {
  /** 1, 2, ... in the order the lines arrived, stdout and stderr interleaved. */
  seq: number
  stream: LogStream
  /** Unix milliseconds. */
  at: number
  text: string
}

export interface LogEnd {
  /** The final status: completed, failed or cancelled. */
  status: 'completed' | 'failed' | 'cancelled'
  /** null when the process was ended by a signal. */
  exitCode: number | null
}

/** A line longer than this is cut into records of at most this many bytes (never inside a UTF-8 character). */
export const MAX_LINE_BYTES = 64 * 1024
/** What a record costs beyond its text, for the bound. */
const RECORD_OVERHEAD = 48
export const LOGS_FILE = 'logs.json'

interface Saved {
  attempt: number
  firstSeq: number
  nextSeq: number
  end: LogEnd | null
  records: [number, LogStream, number, string][]
}

/**
 * The records of one attempt. Emits `change` after new records and after the end, so that
 * followers read on; it holds no reader state, so any number of readers cost nothing here.
 */
export class TaskLog extends EventEmitter<{ change: [] }> {
  private records: LogRecord[] = []
  /** Index in `records` of the oldest kept one (dropped ones are spliced off in batches). */
  private head = 0
  private bytes = 0
  private next = 1
  private ended: LogEnd | null = null
  /** The last record is a line the output did not end (no newline before the end). */
  private unterminated = false
  private readonly partial: Record<LogStream, Buffer[]> = { stdout: [], stderr: [] }
  private readonly partialBytes: Record<LogStream, number> = { stdout: 0, stderr: 0 }

  constructor(readonly attempt: number, private readonly maxBytes: number, private readonly now: () => number = Date.now) {
    super()
    // Any number of followers (each one a master's stream or a test's).
    this.setMaxListeners(0)
  }

  /** The sequence number of the oldest record kept (== nextSeq when none is). */
  get firstSeq(): number {
    return this.next - (this.records.length - this.head)
  }

  /** The sequence number the next record gets. */
  get nextSeq(): number {
    return this.next
  }

  get end(): LogEnd | null {
    return this.ended
  }

  /** The record `seq`, or undefined when it is no longer kept or not there yet. */
  get(seq: number): LogRecord | undefined {
    const first = this.firstSeq
    if (seq < first || seq >= this.next) return undefined
    return this.records[this.head + (seq - first)]
  }

  /** A chunk of the task's output: complete lines become records, the rest waits for its newline. */
  push(stream: LogStream, chunk: Buffer): void {
    if (this.ended) return
    let start = 0
    let added = false
    for (;;) {
      const nl = chunk.indexOf(0x0a, start)
      if (nl < 0) break
      this.hold(stream, chunk.subarray(start, nl))
      this.line(stream)
      added = true
      start = nl + 1
    }
    if (start < chunk.length) added = this.hold(stream, chunk.subarray(start)) || added
    if (added) this.emit('change')
  }

  /** The attempt ended: partial lines become records, then the end is known to every reader. */
  finish(end: LogEnd): void {
    if (this.ended) return
    for (const stream of ['stdout', 'stderr'] as const) {
      if (this.partialBytes[stream] === 0) continue
      this.line(stream)
      this.unterminated = true
    }
    this.ended = end
    this.emit('change')
  }

  /**
   * The kept records' texts, one per line (a newline after each but a last line the output did
   * not end): the output tail of the attempt's report, so that its k-th line from the end is record
   * nextSeq - k, which is how a master numbers it once the worker is gone.
   */
  tailText(): string {
    const texts: string[] = []
    for (let i = this.head; i < this.records.length; i++) texts.push(this.records[i]!.text)
    return texts.length === 0 ? '' : `${texts.join('\n')}${this.unterminated ? '' : '\n'}`
  }

  /** Writes what is kept to `<dir>/logs.json` (whole or not at all). */
  save(dir: string): void {
    const saved: Saved = {
      attempt: this.attempt,
      firstSeq: this.firstSeq,
      nextSeq: this.next,
      end: this.ended,
      records: this.records.slice(this.head).map((r) => [r.seq, r.stream, r.at, r.text]),
    }
    const file = join(dir, LOGS_FILE)
    writeFileSync(`${file}.tmp`, JSON.stringify(saved))
    renameSync(`${file}.tmp`, file)
  }

  /** The log an earlier save() wrote, ended; null when there is none or it cannot be read. */
  static async load(dir: string): Promise<TaskLog | null> {
    let saved: Saved
    try {
      // Read off the event loop: up to 1 MiB of records, for a task no longer in memory.
      saved = JSON.parse(await readFile(join(dir, LOGS_FILE), 'utf8')) as Saved
    } catch {
      return null
    }
    if (!Number.isInteger(saved.nextSeq) || !Array.isArray(saved.records)) return null
    const log = new TaskLog(saved.attempt, Number.MAX_SAFE_INTEGER)
    log.records = saved.records.map(([seq, stream, at, text]) => ({ seq, stream, at, text }))
    log.next = saved.nextSeq
    log.ended = saved.end ?? { status: 'failed', exitCode: null }
    return log
  }

  /** Adds bytes to the stream's partial line; a line at MAX_LINE_BYTES becomes a record. True if one did. */
  private hold(stream: LogStream, bytes: Buffer): boolean {
    let added = false
    while (bytes.length > 0) {
      const room = MAX_LINE_BYTES - this.partialBytes[stream]
      if (bytes.length < room) {
        this.partial[stream].push(bytes)
        this.partialBytes[stream] += bytes.length
        break
      }
      // The record is full: cut before the character the cut would fall in (continuation bytes
      // are 10xxxxxx; a character has at most 3 of them), which starts the next record.
      let take = room
      for (let k = 0; k < 3 && take > 0 && take < bytes.length && (bytes[take]! & 0xc0) === 0x80; k++) take--
      if (take === 0 && this.partialBytes[stream] === 0) take = room
      if (take > 0) {
        this.partial[stream].push(bytes.subarray(0, take))
        this.partialBytes[stream] += take
        bytes = bytes.subarray(take)
      }
      this.line(stream)
      added = true
    }
    return added
  }

  private line(stream: LogStream): void {
    const parts = this.partial[stream]
    let text = (parts.length === 1 ? parts[0]! : Buffer.concat(parts)).toString('utf8')
    if (text.endsWith('\r')) text = text.slice(0, -1)
    this.partial[stream] = []
    this.partialBytes[stream] = 0
    this.records.push({ seq: this.next++, stream, at: this.now(), text })
    // The bound is in bytes, as --output's: a character outside ASCII is more than one.
    this.bytes += Buffer.byteLength(text) + RECORD_OVERHEAD
    while (this.bytes > this.maxBytes && this.records.length - this.head > 1) {
      this.bytes -= Buffer.byteLength(this.records[this.head]!.text) + RECORD_OVERHEAD
      this.head++
    }
    // Dropped records are spliced off once they are half of the array, not one by one.
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head)
      this.head = 0
    }
  }
}
