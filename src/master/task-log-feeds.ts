import { EventEmitter } from 'node:events'
import type * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { parseResultStatus } from '../shared/result-status.js'
import type { TaskRecord, WorkerRecord } from '../shared/types.js'
import type { LogChunkMsg } from '../shared/wire.js'
import type { WorkerClients } from './worker-clients.js'

// The master's side of a task's output: one upstream StreamTaskLogs per task, however many
// readers follow it (fan-out). The feed keeps the latest lines it received (bounded like the
// worker's), each reader has its own cursor into them and is paced by its own connection: a slow
// reader never slows the upstream or the other readers; one that falls behind what the feed keeps
// gets a gap, never a silent hole. A lost upstream is opened again from the next sequence number.
// A finished task whose worker is gone (not registered, inactive, or without the task any more)
// is served from what the master kept: the task record's output tail, numbered from 1.

export type LogEvent =
  | { type: 'line'; seq: number; stream: string; timestamp: string; text: string }
  | { type: 'gap'; seq: number; missed: number }
  /** complete: the task ended (status and exit code are final); else the lines there now were sent. */
  | { type: 'end'; seq: number; complete: boolean; status: string; exit_code: number | null }

interface Line { seq: number; stream: string; timestamp: string; text: string }
interface End { status: string; exitCode: number | null }

export interface FeedsOptions {
  clients: WorkerClients
  task: (id: string) => TaskRecord | undefined
  worker: (id: string) => WorkerRecord | undefined
  log: Logger
  /** Bytes of lines a feed keeps (default 1 MiB, the worker's bound). */
  maxBytes?: number
  /** Wait before an upstream is opened again after it failed, or while the task has no worker yet. */
  retryMs?: number
}

const FINAL = new Set(['completed', 'failed', 'cancelled'])
const LINE_OVERHEAD = 64

/** One task's upstream and the lines it brought. */
class Feed extends EventEmitter<{ change: [] }> {
  lines: Line[] = []
  head = 0
  bytes = 0
  next = 1
  /** The upstream said where "now" was (its caught-up chunk) or it ended: `tail` and non-follow readers can be placed. */
  live = false
  end: End | null = null
  readers = 0
  /**
   * The attempt whose lines come now, and how our numbers run ahead of its own: a task requeued
   * after its worker was lost runs again from line 1, and its lines go on after the ones before
   * (behind a line of stream "cloudai" that says so), so that a reader's numbers never go back.
   */
  private attempt: number | null = null
  private offset = 0
  private call: grpc.ClientReadableStream<LogChunkMsg> | null = null
  private timer: NodeJS.Timeout | null = null
  private closed = false

  constructor(readonly taskId: string, private readonly opts: FeedsOptions & { maxBytes: number; retryMs: number }) {
    super()
    this.setMaxListeners(0)
  }

  get firstSeq(): number {
    return this.next - (this.lines.length - this.head)
  }

  get(seq: number): Line | undefined {
    const first = this.firstSeq
    return seq >= first && seq < this.next ? this.lines[this.head + (seq - first)] : undefined
  }

  open(): void {
    if (this.closed || this.end) return
    const task = this.opts.task(this.taskId)
    if (!task) return this.finish({ status: 'not_found', exitCode: null })
    const final = FINAL.has(task.status)
    const worker = task.workerId ? this.opts.worker(task.workerId) : undefined
    if (!worker || !worker.isActive) {
      if (final) return this.fromRecord(task)
      return this.retry() // queued, or its worker is away: it may come back
    }
    const client = this.opts.clients.get(worker.id, worker.address)
    const call = client.StreamTaskLogs(
      { task_id: this.taskId, user_id: '', follow: true, from_seq: this.next - this.offset, tail: 0 },
      this.opts.clients.proof(worker, 'StreamTaskLogs', this.taskId),
    )
    this.call = call
    let ended = false
    call.on('data', (c: LogChunkMsg) => {
      if (this.call !== call) return
      if (c.status === 'not_found' || c.status === 'error') {
        ended = true
        this.call = null
        call.cancel()
        // Our worker no longer has it (its retention, a restart before the attempt ended).
        const now = this.opts.task(this.taskId)
        if (now && FINAL.has(now.status)) this.fromRecord(now)
        else this.retry()
        return
      }
      const attempt = Number(c.attempt)
      if (this.attempt !== null && attempt !== this.attempt) {
        // Another attempt: asked from our place in the last one; again from its first line.
        call.cancel()
        this.call = null
        this.newAttempt(attempt)
        this.open()
        return
      }
      this.attempt ??= attempt
      this.take(c)
      if (c.is_complete) ended = true
    })
    call.on('error', (err: grpc.ServiceError) => {
      if (this.call !== call || ended) return
      this.call = null
      this.opts.log.debug({ taskId: this.taskId, workerId: worker.id, code: err.code, err: err.details }, `Task ${this.taskId}: log stream from worker ${worker.id} lost (${err.details}); opening it again from line ${this.next}`)
      this.retry()
    })
    call.on('end', () => {
      if (this.call === call && !ended) {
        this.call = null
        this.retry()
      }
    })
  }

  private retry(): void {
    if (this.closed || this.end || this.timer) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.open()
    }, this.opts.retryMs)
  }

  private newAttempt(attempt: number): void {
    this.push({ seq: this.next, stream: 'cloudai', timestamp: new Date().toISOString(), text: `attempt ${attempt} of the task starts; its output follows` })
    this.attempt = attempt
    this.offset = this.next - 1
    this.emit('change')
  }

  private push(line: Line): void {
    this.lines.push(line)
    this.next++
    this.bytes += line.text.length + LINE_OVERHEAD
    while (this.bytes > this.opts.maxBytes && this.lines.length - this.head > 1) {
      this.bytes -= this.lines[this.head]!.text.length + LINE_OVERHEAD
      this.head++
    }
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.head)
      this.head = 0
    }
  }

  private take(c: LogChunkMsg): void {
    let seq = Number(c.seq) + this.offset
    // A CloudAI worker's line: no number, no stream (and it replays from its start on a reconnection).
    const cloudaiLine = Number(c.seq) === 0 && !c.gap && !c.is_complete
    if (cloudaiLine) seq = this.next
    if (c.gap) {
      // Lines the worker no longer keeps: what we hold (older still) is dropped, readers see the gap.
      const after = seq + Number(c.missed)
      if (after > this.next) {
        this.lines = []
        this.head = 0
        this.bytes = 0
        this.next = after
      }
    } else if (c.stream !== '' || cloudaiLine) {
      if (seq !== this.next) return // a repeat after a reconnection
      const ms = Number(c.time_ms) > 0 ? Number(c.time_ms) : Number(c.timestamp) > 0 ? Number(c.timestamp) * 1000 : Date.now()
      this.push({ seq, stream: c.stream || 'output', timestamp: new Date(ms).toISOString(), text: c.content })
    } else if (c.is_complete) {
      this.live = true
      let status = c.status
      try {
        status = parseResultStatus(c.status)
      } catch {
        // A word we do not know is passed on as it is.
      }
      return this.finish({ status, exitCode: c.has_exit_code ? c.exit_code : null })
    } else {
      this.live = true
    }
    this.emit('change')
  }

  /** What the master kept of a finished task: its output tail, numbered from 1. */
  private fromRecord(task: TaskRecord): void {
    const texts = task.logsTail === '' ? [] : task.logsTail.replace(/\n$/, '').split('\n')
    const at = new Date(task.finishedAt ?? Date.now()).toISOString()
    this.lines = texts.map((text, i) => ({ seq: i + 1, stream: 'output', timestamp: at, text }))
    this.head = 0
    this.next = texts.length + 1
    this.live = true
    this.finish({ status: task.status, exitCode: task.exitCode })
  }

  private finish(end: End): void {
    this.end = end
    this.live = true
    this.emit('change')
  }

  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    const call = this.call
    this.call = null
    call?.cancel()
  }
}

/** Where a reader writes: false when its connection is backed up (then `resume` is awaited). */
export interface LogSink {
  write(event: LogEvent): boolean
  /** Called once the sink takes writes again after write() returned false. */
  onWritable(resume: () => void): void
  /** The stream is over (after the end event). */
  close(): void
}

export interface ReadRequest {
  follow: boolean
  /** Lines with seq > since; 0 = from the first line kept. */
  since: number
  /** When > 0 and no since: the last `tail` lines. */
  tail: number
}

export class TaskLogFeeds {
  private readonly feeds = new Map<string, Feed>()
  private readonly opts: FeedsOptions & { maxBytes: number; retryMs: number }
  private closed = false

  constructor(opts: FeedsOptions) {
    this.opts = { ...opts, maxBytes: opts.maxBytes ?? 1024 * 1024, retryMs: opts.retryMs ?? 500 }
  }

  /** Upstreams open now (one per task with readers). */
  get size(): number {
    return this.feeds.size
  }

  /**
   * Serves `taskId`'s output to `sink`, from the next turn of the loop on; returns the call that
   * stops it (the reader went away).
   */
  read(taskId: string, req: ReadRequest, sink: LogSink): () => void {
    let feed = this.feeds.get(taskId)
    if (!feed) {
      feed = new Feed(taskId, this.opts)
      this.feeds.set(taskId, feed)
      feed.open()
    }
    const f = feed
    f.readers++
    let cursor = -1
    let stopAt = Infinity
    let done = false
    let waiting = false
    const place = (): boolean => {
      if (cursor >= 0) return true
      if (req.since > 0) cursor = req.since + 1
      else if (req.tail > 0) {
        if (!f.live) return false
        cursor = Math.max(1, f.next - req.tail)
      } else cursor = 1
      return true
    }
    const stop = (): void => {
      if (done) return
      done = true
      f.off('change', pump)
      if (--f.readers === 0 && this.feeds.get(taskId) === f) {
        this.feeds.delete(taskId)
        f.close()
      }
    }
    function pump(): void {
      if (done || waiting) return
      if (!place()) return
      if (!req.follow && stopAt === Infinity) {
        if (!f.live) return
        stopAt = f.next
      }
      while (!done) {
        if (cursor >= f.next || cursor >= stopAt) {
          if (f.end === null && req.follow) return
          const e = f.end
          sink.write(e ? { type: 'end', seq: f.next, complete: true, status: e.status, exit_code: e.exitCode } : { type: 'end', seq: cursor, complete: false, status: 'running', exit_code: null })
          stop()
          sink.close()
          return
        }
        let ok: boolean
        const first = f.firstSeq
        if (cursor < first) {
          ok = sink.write({ type: 'gap', seq: cursor, missed: first - cursor })
          cursor = first
        } else {
          const l = f.get(cursor)!
          ok = sink.write({ type: 'line', seq: l.seq, stream: l.stream, timestamp: l.timestamp, text: l.text })
          cursor++
        }
        if (!ok) {
          waiting = true
          sink.onWritable(() => {
            waiting = false
            pump()
          })
          return
        }
      }
    }
    f.on('change', pump)
    // Not before the caller has its stop function and its stream open (a finished task's lines
    // are all there at once).
    setImmediate(pump)
    return stop
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const f of this.feeds.values()) f.close()
    this.feeds.clear()
  }
}
