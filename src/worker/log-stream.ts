import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type * as grpc from '@grpc/grpc-js'
import { resultStatusWord } from '../shared/result-status.js'
import type { LogChunkMsg, TaskLogRequestMsg } from '../shared/wire.js'
import { TaskLog, type LogEnd } from './task-log.js'
import { isoTime } from '../shared/iso-time.js'

// StreamTaskLogs on the worker: CloudAI's messages, one chunk per line, then a last chunk with
// is_complete and the final status. Where CloudAI's worker drops lines for a reader that is slow,
// ours waits: a write that grpc-js cannot take at once (write() false) is followed by the next
// only after 'drain', so the reader's HTTP/2 window paces us. A reader that falls so far behind
// that the lines it is to get next are no longer kept (the running attempt keeps its latest
// --output bound) gets a gap chunk saying how many it missed, then the rest: never a silent hole.

/** Finished attempts whose logs stay in memory (up to 1 MiB each); older ones are read back from their logs.json. */
const FINISHED_IN_MEMORY = 8

export interface LogRequest {
  taskId: string
  follow: boolean
  fromSeq: number
  tail: number
}

/** The request's fields, checked; the task id by the caller's rules. */
export function parseLogRequest(req: TaskLogRequestMsg, taskId: string): LogRequest {
  const whole = (v: unknown, max: number): number => (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max ? v : 0)
  return { taskId, follow: req.follow === true, fromSeq: whole(req.from_seq, Number.MAX_SAFE_INTEGER), tail: whole(req.tail, 2 ** 31 - 1) }
}

/** Where a task's log is: the running attempt's, a finished one in memory, or one on disk. */
export class TaskLogIndex {
  private readonly finished = new Map<string, TaskLog>()

  constructor(private readonly dataDir: string, private readonly running: (taskId: string) => TaskLog | undefined) {}

  /** An attempt ended: its log stays at hand for a while (the latest few). */
  keep(taskId: string, log: TaskLog): void {
    this.finished.delete(taskId)
    this.finished.set(taskId, log)
    if (this.finished.size > FINISHED_IN_MEMORY) this.finished.delete(this.finished.keys().next().value!)
  }

  /** The log of the task's latest attempt here (in memory at once, else from disk), or null when this worker has none. */
  find(taskId: string): TaskLog | Promise<TaskLog | null> {
    const live = this.running(taskId)
    if (live) return live
    const kept = this.finished.get(taskId)
    if (kept) return kept
    return this.fromDisk(taskId)
  }

  /** The highest attempt's saved log among `<data-dir>/tasks/<task id>-<attempt>/`, read without blocking the loop. */
  private async fromDisk(taskId: string): Promise<TaskLog | null> {
    let names: string[]
    try {
      names = await readdir(join(this.dataDir, 'tasks'))
    } catch {
      return null
    }
    const prefix = `${taskId}-`
    const attempts = names
      .filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length)))
      .map((n) => Number(n.slice(prefix.length)))
      .sort((a, b) => b - a)
    for (const attempt of attempts) {
      const log = await TaskLog.load(join(this.dataDir, 'tasks', `${prefix}${attempt}`))
      if (log) return log
    }
    return null
  }
}

function chunk(taskId: string, fields: Partial<LogChunkMsg>): LogChunkMsg {
  const now = Date.now()
  return { task_id: taskId, content: '', timestamp: isoTime(now), time_ms: now, is_complete: false, status: 'running', seq: 0, stream: '', gap: false, missed: 0, exit_code: 0, has_exit_code: false, attempt: 0, ...fields }
}

/** CloudAI's last chunk for a task this worker does not have. */
export function notFoundChunk(taskId: string): LogChunkMsg {
  return chunk(taskId, { is_complete: true, status: 'not_found', content: 'Task not found or not running on this worker' })
}

function endChunk(taskId: string, log: TaskLog, end: LogEnd | null): LogChunkMsg {
  if (end === null) return chunk(taskId, { seq: log.nextSeq, attempt: log.attempt })
  return chunk(taskId, {
    is_complete: true, status: resultStatusWord(end.status), seq: log.nextSeq, attempt: log.attempt,
    exit_code: end.exitCode ?? 0, has_exit_code: end.exitCode !== null,
  })
}

/**
 * Serves one StreamTaskLogs call from `log` until its end (with `follow`) or until the lines there
 * now are sent, honouring flow control; stops when the caller goes away. Resolves when done.
 */
export function serveLog(call: grpc.ServerWritableStream<TaskLogRequestMsg, LogChunkMsg>, req: LogRequest, log: TaskLog): Promise<void> {
  const { taskId } = req
  let cursor = req.fromSeq > 0 ? req.fromSeq : req.tail > 0 ? Math.max(1, log.nextSeq - req.tail) : 1
  // Without follow: the lines there at the call, and the end if there is one by then. With follow,
  // for a cloudai master, one chunk like the last one but without is_complete marks the point
  // where the lines there at the call are sent.
  const stopAt = req.follow ? Infinity : log.nextSeq
  return new Promise<void>((resolve) => {
    let done = false
    let waiting = false
    let caughtUp = false
    const finish = (): void => {
      if (done) return
      done = true
      log.off('change', onChange)
      call.off('drain', onDrain)
      resolve()
    }
    const onChange = (): void => {
      if (waiting) return
      pump()
    }
    const onDrain = (): void => {
      waiting = false
      pump()
    }
    const pump = (): void => {
      while (!done) {
        if (call.cancelled) return finish()
        if (cursor >= log.nextSeq || cursor >= stopAt) {
          const end = log.end
          if (end === null && req.follow) {
            // A cloudai master (it sets from_seq) learns where "now" is: the lines up to here were
            // there when it asked, the ones after are new (its `tail` and non-follow readers need it).
            if (!caughtUp && req.fromSeq > 0) {
              caughtUp = true
              if (!call.write(endChunk(taskId, log, null))) {
                waiting = true
                call.once('drain', onDrain)
              }
            }
            return // onChange calls again
          }
          call.write(endChunk(taskId, log, end))
          call.end()
          return finish()
        }
        let msg: LogChunkMsg
        const first = log.firstSeq
        if (cursor < first) {
          msg = chunk(taskId, { gap: true, seq: cursor, missed: first - cursor, attempt: log.attempt, content: `${first - cursor} line(s) no longer kept` })
          cursor = first
        } else {
          const r = log.get(cursor)!
          msg = chunk(taskId, { seq: r.seq, stream: r.stream, timestamp: isoTime(r.at), time_ms: r.at, content: r.text, attempt: log.attempt })
          cursor++
        }
        if (!call.write(msg)) {
          waiting = true
          call.once('drain', onDrain)
          return
        }
      }
    }
    log.on('change', onChange)
    call.on('cancelled', finish)
    call.on('error', finish)
    pump()
  })
}
