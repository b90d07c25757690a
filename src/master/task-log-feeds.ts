import { EventEmitter } from 'node:events'
import type * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { CloudaiError } from '../shared/errors.js'
import type { TaskRecord, WorkerRecord } from '../shared/types.js'
import type { LogChunkMsg } from '../shared/wire.js'
import { C, type Counters } from './counters.js'
import { isoTime } from '../shared/iso-time.js'
import type { WorkerClients } from './worker-clients.js'

// The master's side of a task's output: one upstream StreamTaskLogs per task, however many
// readers follow it (fan-out). The feed keeps the latest lines it received (bounded like the
// worker's), each reader has its own cursor into them and is paced by its own connection: a slow
// reader never slows the upstream or the other readers; one that falls behind what the feed keeps
// gets a gap, never a silent hole. A lost upstream is opened again from the next sequence number.
//
// A line's number (its SSE id) depends on nothing but the line: line k of placement A is
// (A - 1) * ATTEMPT_SPAN + k, so a reader that resumes (after its own reconnection, a master
// restart, or with a feed opened afresh) is placed exactly, whichever attempts the feed saw. A
// placement from the second on starts with a line of stream `cloudai` numbered (A - 1) * ATTEMPT_SPAN.
// The feed ends only when the task record is final for the attempt it follows: a worker's end
// chunk alone (a run cancelled by a drain or a worker's shutdown, a stale run) is one attempt's end,
// and the feed waits for the task to run again. A finished task whose worker is gone (not
// registered, inactive, or without the task any more) is served from what the master kept: the
// task record's output tail, numbered to end at the attempt's last line: the count a cloudai
// worker's report carries (so the numbers are the worker's, after a restart of this master too),
// else the one a feed saw at the attempt's end. A reader's `notBefore` (the route's `since`) skips
// lines older than it by their time.

export type LogEvent =
  | { type: 'line'; seq: number; stream: string; timestamp: string; text: string }
  | { type: 'gap'; seq: number; missed: number }
  /** complete: the task ended (status and exit code are final); else the lines there now were sent. */
  | { type: 'end'; seq: number; complete: boolean; status: string; exit_code: number | null }

/** `ms`: the line's time as epoch ms (a `since` reader's filter), `timestamp` the same as RFC 3339. */
interface Line { seq: number; stream: string; timestamp: string; ms: number; text: string }
interface End { status: string; exitCode: number | null }

export interface FeedsOptions {
  clients: WorkerClients
  task: (id: string) => TaskRecord | undefined
  worker: (id: string) => WorkerRecord | undefined
  log: Logger
  /** Refused readers are counted here (LOG_READERS_REFUSED). */
  counters?: Counters
  /** Bytes of lines a feed keeps (default 1 MiB, the worker's bound). */
  maxBytes?: number
  /** Wait before an upstream is opened again after it failed, or while the task has no worker yet. */
  retryMs?: number
  /** Readers served at once (default MAX_LOG_READERS). */
  maxReaders?: number
}

/** The numbers of one placement's lines: (attempt - 1) * ATTEMPT_SPAN + the worker's own number. */
export const ATTEMPT_SPAN = 1_000_000_000
/** Readers (SSE and NDJSON connections) served at once; one more is refused with CLOUDAI_TOO_MANY_CONNECTIONS (503). */
export const MAX_LOG_READERS = 256
/** Tasks whose attempts' line counts the master remembers (for numbering a stored tail). */
const KNOWN_COUNTS = 4096

const FINAL = new Set(['completed', 'failed', 'cancelled'])
const LINE_OVERHEAD = 64

const stamp = (ms: number): { ms: number; timestamp: string } => ({ ms, timestamp: isoTime(ms) })

/**
 * A LogChunk's `timestamp` (a string on CloudAI's wire) as epoch ms: RFC 3339, or Unix seconds
 * (or milliseconds, past year 5138 as seconds) in digits; null when it says neither.
 */
export function chunkTime(value: unknown): number | null {
  const text = String(value ?? '').trim()
  if (text === '') return null
  if (/^\d{1,16}(\.\d+)?$/.test(text)) {
    const n = Number(text)
    if (!(n > 0)) return null
    return n < 1e11 ? Math.round(n * 1000) : Math.round(n)
  }
  // Date.parse alone reads almost anything ("-5" is a date in 2001): only a date-time, then.
  if (!/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}/.test(text)) return null
  const t = Date.parse(text)
  return Number.isFinite(t) && t > 0 ? t : null
}
const attemptOf = (id: number): number => Math.floor(id / ATTEMPT_SPAN) + 1
const baseOf = (attempt: number): number => (Math.max(1, attempt) - 1) * ATTEMPT_SPAN

type Opts = FeedsOptions & { maxBytes: number; retryMs: number; maxReaders: number; lineCount: (taskId: string, attempt: number) => number | undefined; counted: (taskId: string, attempt: number, lines: number) => void }

/** One task's upstream and the lines it brought. */
class Feed extends EventEmitter<{ change: [] }> {
  /** Held lines, by increasing seq (not contiguous across attempts); lines[head] is the oldest. */
  lines: Line[] = []
  head = 0
  bytes = 0
  /** One past the last number covered (a line, or lines a worker's gap said are gone). */
  next = 1
  /** The upstream said where "now" was (its caught-up chunk, its end, or there is no upstream now): `tail` and non-follow readers can be placed. */
  live = false
  end: End | null = null
  readers = 0
  /** Exact ends (one past the last number) of the attempts whose end chunk came. */
  readonly ends = new Map<number, number>()
  /** The attempt whose lines come now (null before the first chunk). */
  private attempt: number | null = null
  /** Its worker sent its end chunk: the feed waits for the task record to be final for it. */
  private attemptEnded = false
  private call: grpc.ClientReadableStream<LogChunkMsg> | null = null
  private timer: NodeJS.Timeout | null = null
  private closed = false

  constructor(readonly taskId: string, private readonly opts: Opts) {
    super()
    this.setMaxListeners(0)
  }

  /** Index of the first held line numbered `seq` or more (lines.length when none is). */
  indexFrom(seq: number): number {
    let lo = this.head
    let hi = this.lines.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.lines[mid]!.seq < seq) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** The task record's status now, for an end that is not the task's. */
  status(): string {
    return this.opts.task(this.taskId)?.status ?? 'running'
  }

  /** The task changed: a feed waiting for it (no upstream now) looks again at once. */
  nudge(): void {
    if (!this.timer) return
    clearTimeout(this.timer)
    this.timer = null
    this.open()
  }

  open(): void {
    if (this.closed || this.end) return
    const task = this.opts.task(this.taskId)
    if (!task) return this.finish({ status: 'not_found', exitCode: null })
    const final = FINAL.has(task.status)
    if (this.attemptEnded && this.attempt === task.attempt) {
      // The attempt we follow ended on its worker: the task's end once the record says so; until
      // then (its report is on its way, or the task waits to run again under a new number) there
      // is nothing to ask a worker for.
      if (final) return this.finish({ status: task.status, exitCode: task.exitCode })
      return this.retry()
    }
    const worker = task.workerId ? this.opts.worker(task.workerId) : undefined
    if (!worker || !worker.isActive) {
      if (final) return this.fromRecord(task)
      return this.wait() // queued, or its worker is away: it may come back
    }
    const client = this.opts.clients.get(worker.id, worker.address)
    const fromSeq = this.attempt === null || this.attempt !== task.attempt ? 1 : Math.max(1, this.next - baseOf(this.attempt))
    const call = client.StreamTaskLogs(
      { task_id: this.taskId, user_id: '', follow: true, from_seq: fromSeq, tail: 0 },
      this.opts.clients.proof(worker, 'StreamTaskLogs', this.taskId),
    )
    this.call = call
    // A CloudAI worker's chunks carry no attempt (it has one run per task) and no number: it
    // replays from its first line on each call, so its k-th line of a call is its line k.
    const attemptAtOpen = Math.max(1, task.attempt)
    let unnumbered = 0
    let ended = false
    const drop = (): void => {
      ended = true
      this.call = null
      call.cancel()
    }
    call.on('data', (c: LogChunkMsg) => {
      if (this.call !== call) return
      if (c.status === 'not_found' || c.status === 'error') {
        drop()
        // Our worker no longer has it (its retention, a restart before the attempt ended).
        const now = this.opts.task(this.taskId)
        if (now && FINAL.has(now.status)) this.fromRecord(now)
        else this.wait()
        return
      }
      const attempt = Number(c.attempt) > 0 ? Number(c.attempt) : attemptAtOpen
      const now = this.opts.task(this.taskId)
      if ((now && attempt < now.attempt) || (this.attempt !== null && attempt < this.attempt)) {
        // The worker still holds an older attempt's log (the task was placed on it again and the
        // new run has not started): its lines and its end are not the current attempt's.
        drop()
        if (now && FINAL.has(now.status)) this.fromRecord(now)
        else this.wait()
        return
      }
      if (this.attempt === null || attempt > this.attempt) {
        const first = this.attempt === null
        this.newAttempt(attempt)
        if (!first && fromSeq !== 1) {
          // Asked from our place in the last attempt: again from this one's first line.
          drop()
          this.open()
          return
        }
      }
      const seq = Number(c.seq) === 0 && !c.gap && !c.is_complete ? ++unnumbered : Number(c.seq)
      if (this.take(c, seq)) ended = true
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

  /** Nothing to read now: readers get what is there (non-follow ones end), and we look again later. */
  private wait(): void {
    if (!this.live) {
      this.live = true
      this.emit('change')
    }
    this.retry()
  }

  private retry(): void {
    if (this.closed || this.end || this.timer) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.open()
    }, this.opts.retryMs)
  }

  private newAttempt(attempt: number): void {
    this.attempt = attempt
    this.attemptEnded = false
    const base = baseOf(attempt)
    if (attempt >= 2 && this.next <= base) this.push({ seq: base, stream: 'cloudai', ...stamp(Date.now()), text: `attempt ${attempt} of the task starts; its output follows` })
    this.next = Math.max(this.next, base + 1)
    this.emit('change')
  }

  private push(line: Line): void {
    this.lines.push(line)
    this.next = line.seq + 1
    this.bytes += Buffer.byteLength(line.text) + LINE_OVERHEAD
    while (this.bytes > this.opts.maxBytes && this.lines.length - this.head > 1) {
      this.bytes -= Buffer.byteLength(this.lines[this.head]!.text) + LINE_OVERHEAD
      this.head++
    }
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.head)
      this.head = 0
    }
  }

  /** One chunk of the current attempt (`seq` its number there); true when it was the attempt's end. */
  private take(c: LogChunkMsg, seq: number): boolean {
    const base = baseOf(this.attempt!)
    const id = base + seq
    if (c.gap) {
      // Lines the worker no longer keeps: readers see the hole as a gap.
      this.next = Math.max(this.next, id + Number(c.missed))
    } else if (c.stream !== '' || (Number(c.seq) === 0 && !c.is_complete)) {
      if (id < this.next) return false // a repeat after a reconnection
      const ms = Number(c.time_ms) > 0 ? Number(c.time_ms) : (chunkTime(c.timestamp) ?? Date.now())
      this.push({ seq: id, stream: c.stream || 'output', ...stamp(ms), text: c.content })
    } else if (c.is_complete) {
      // The attempt's end on its worker; the task's end only if the record says so (open()).
      const end = seq > 0 ? base + seq : this.next
      this.ends.set(this.attempt!, end)
      this.next = Math.max(this.next, end)
      this.opts.counted(this.taskId, this.attempt!, end - base - 1)
      this.attemptEnded = true
      this.live = true
      this.call = null
      const task = this.opts.task(this.taskId)
      if (task && FINAL.has(task.status) && task.attempt === this.attempt) {
        this.finish({ status: task.status, exitCode: task.exitCode })
      } else {
        this.emit('change')
        this.retry() // the record is behind (its report is on its way), or the task runs again
      }
      return true
    } else {
      this.live = true
    }
    this.emit('change')
    return false
  }

  /** What the master kept of a finished task: its output tail, numbered to end where the attempt did. */
  private fromRecord(task: TaskRecord): void {
    if (this.attempt !== null && this.attempt >= task.attempt) return this.finish({ status: task.status, exitCode: task.exitCode })
    let texts = task.logsTail === '' ? [] : task.logsTail.replace(/\n$/, '').split('\n')
    if (task.attempt >= 1) {
      this.newAttempt(task.attempt)
      const base = baseOf(task.attempt)
      // The worker's count (in its report) numbers the tail as the worker did, after a restart of
      // this master too; a CloudAI worker sends none: what a feed saw of the attempt's end, else the tail's own lines.
      const count = (task.logLines !== undefined && task.logLines >= texts.length ? task.logLines : undefined) ?? this.opts.lineCount(this.taskId, task.attempt) ?? texts.length
      if (texts.length > count) texts = texts.slice(texts.length - count)
      // Fewer lines kept than the attempt printed: the tail was cut by bytes (--task-output-tail),
      // so its first piece is most likely the end of a line, which must not be served under that
      // whole line's id. It is left out (a reader sees it in the gap before the first line).
      else if (texts.length < count && texts.length > 1) texts = texts.slice(1)
      const at = stamp(task.finishedAt ?? Date.now())
      const first = base + count - texts.length + 1
      texts.forEach((text, i) => this.push({ seq: first + i, stream: 'output', ...at, text }))
      this.next = base + count + 1
      this.ends.set(task.attempt, this.next)
    }
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
  /** Lines with seq > after; 0 = from the first line kept. */
  after: number
  /** Only lines whose time is this or later (epoch ms); null = any. */
  notBefore: number | null
  /** When > 0 and no after: the last `tail` lines. */
  tail: number
}

export class TaskLogFeeds {
  private readonly feeds = new Map<string, Feed>()
  private readonly opts: Opts
  /** Per task, the latest attempt whose end a feed saw and its line count (oldest first). */
  private readonly counts = new Map<string, [number, number]>()
  /** The readers served now: each one's call that ends it (close()). */
  private readonly readers = new Set<() => void>()
  private closed = false

  constructor(opts: FeedsOptions) {
    this.opts = {
      ...opts, maxBytes: opts.maxBytes ?? 1024 * 1024, retryMs: opts.retryMs ?? 500, maxReaders: opts.maxReaders ?? MAX_LOG_READERS,
      lineCount: (taskId, attempt) => {
        const known = this.counts.get(taskId)
        return known && known[0] === attempt ? known[1] : undefined
      },
      counted: (taskId, attempt, lines) => {
        this.counts.delete(taskId)
        this.counts.set(taskId, [attempt, lines])
        if (this.counts.size > KNOWN_COUNTS) this.counts.delete(this.counts.keys().next().value!)
      },
    }
  }

  /** Upstreams open now (one per task with readers). */
  get size(): number {
    return this.feeds.size
  }

  /** Readers served now. */
  get readerCount(): number {
    return this.readers.size
  }

  /** A task changed (TaskTable's `task-changed`): its feed, if it waits for the task, looks again now. */
  readonly taskChanged = (taskId: string): void => {
    this.feeds.get(taskId)?.nudge()
  }

  /**
   * Serves `taskId`'s output to `sink`, from the next turn of the loop on; returns the call that
   * stops it (the reader went away). Refused once closing (CLOUDAI_SHUTTING_DOWN) and beyond
   * `maxReaders` readers at once (CLOUDAI_TOO_MANY_CONNECTIONS).
   */
  read(taskId: string, req: ReadRequest, sink: LogSink): () => void {
    if (this.closed) throw new CloudaiError('CLOUDAI_SHUTTING_DOWN', 'the master is shutting down')
    if (this.readers.size >= this.opts.maxReaders) {
      this.opts.counters?.add(C.LOG_READERS_REFUSED)
      throw new CloudaiError('CLOUDAI_TOO_MANY_CONNECTIONS', `the master already serves ${this.opts.maxReaders} task log readers: try again later`)
    }
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
      if (req.after > 0) cursor = req.after + 1
      else if (req.tail > 0) {
        if (!f.live) return false
        const i = Math.max(f.head, f.lines.length - req.tail)
        cursor = i < f.lines.length ? f.lines[i]!.seq : f.next
      } else cursor = 1
      return true
    }
    const stop = (): void => {
      if (done) return
      done = true
      this.readers.delete(end)
      f.off('change', pump)
      if (--f.readers === 0 && this.feeds.get(taskId) === f) {
        this.feeds.delete(taskId)
        f.close()
      }
    }
    // Shutdown: the connection is closed without an end event, so that the reader resumes later.
    const end = (): void => {
      if (done) return
      stop()
      sink.close()
    }
    this.readers.add(end)
    /** The gap before `to` (the next number there is) for a reader at `cursor`, or null. */
    const gapTo = (to: number): LogEvent | null => {
      if (attemptOf(to) === attemptOf(cursor)) {
        const gap: LogEvent | null = to > cursor ? { type: 'gap', seq: cursor, missed: to - cursor } : null
        cursor = to
        return gap
      }
      // The rest of the reader's attempt, when the feed knows where it ended; the next attempt
      // then from its first number (its notice).
      const ended = f.ends.get(attemptOf(cursor))
      const gap: LogEvent | null = ended !== undefined && ended > cursor ? { type: 'gap', seq: cursor, missed: ended - cursor } : null
      cursor = baseOf(attemptOf(to))
      return gap
    }
    // With `notBefore`, lines older are skipped, and so is a gap followed by such a line (its lines
    // were older still); a gap is held until the line after it shows which side of the time it is.
    const notBefore = req.notBefore
    let heldGap: LogEvent | null = null
    const emit = (e: LogEvent): boolean => {
      if (notBefore === null) return sink.write(e)
      if (e.type === 'gap') {
        heldGap = heldGap?.type === 'gap' ? { type: 'gap', seq: heldGap.seq, missed: e.seq + e.missed - heldGap.seq } : e
        return true
      }
      let ok = true
      if (heldGap) ok = sink.write(heldGap)
      heldGap = null
      return sink.write(e) && ok
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
          emit(e ? { type: 'end', seq: f.next, complete: true, status: e.status, exit_code: e.exitCode } : { type: 'end', seq: cursor, complete: false, status: f.status(), exit_code: null })
          stop()
          sink.close()
          return
        }
        const i = f.indexFrom(cursor)
        const to = i < f.lines.length ? f.lines[i]!.seq : f.next
        let ok = true
        if (to > cursor) {
          const gap = gapTo(to)
          if (gap) ok = emit(gap)
        } else {
          const l = f.lines[i]!
          if (notBefore !== null && l.ms < notBefore) heldGap = null
          else ok = emit({ type: 'line', seq: l.seq, stream: l.stream, timestamp: l.timestamp, text: l.text })
          cursor = l.seq + 1
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

  /** Refuses new readers, ends every reader (its connection is closed) and every upstream. */
  close(): void {
    if (this.closed) return
    this.closed = true
    for (const end of [...this.readers]) end()
    for (const f of this.feeds.values()) f.close()
    this.feeds.clear()
  }
}
