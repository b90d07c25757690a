import { STATUS_CODES } from 'node:http'
import type { HttpResponse } from 'uWebSockets.js'
import { toCloudaiError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { type ListBody, ListBodyWriter, listBodyText } from './list-body.js'

const JSON_TYPE = 'application/json; charset=utf-8'

// uWS wants the whole status line ("404 Not Found"); build each one once, not per response.
const statusLines = new Map<number, string>()
function statusLine(status: number): string {
  let line = statusLines.get(status)
  if (line === undefined) {
    line = `${status} ${STATUS_CODES[status] ?? ''}`.trimEnd()
    statusLines.set(status, line)
  }
  return line
}

export interface ReplyOptions {
  headers?: Readonly<Record<string, string>>
}

/** The request body, while it is still arriving (see Reply.unreadBody). */
export interface UnreadBody {
  /**
   * An answer is going out now, before the last chunk. The body's reader takes the connection
   * over: it goes on reading and dropping the rest, and then calls hangUp().
   */
  answered(): void
}

/**
 * The one owner of a uWS HttpResponse. uWS aborts the process if a response is touched after
 * the client went away or after it was ended, so every write goes through here and is dropped
 * once the reply is no longer open. Writes are corked because most replies are sent from an
 * async continuation, where uWS does not cork for us.
 */
export class Reply {
  /**
   * open: no answer yet. lingering: answered while the request body was still arriving, with the
   * connection kept until hangUp() (see send). sent: answered and done. aborted: the connection
   * went away before an answer. streaming: a ListBody is going out, `res` is its writer's until
   * it is done. `res` may be used only while open, and by hangUp() while lingering.
   */
  private state: 'open' | 'lingering' | 'streaming' | 'sent' | 'aborted' = 'open'
  private writer: ListBodyWriter | null = null
  private abortListener: (() => void) | null = null
  /** The close hangUp() scheduled, while it waits for its turn of the loop. */
  private closing: NodeJS.Immediate | null = null
  /**
   * Set by the body reader while a request body is still arriving. An answer sent then must not
   * close the connection with bytes of the body unread: the kernel would reset it, and a client
   * still sending might never read the answer (write EPIPE instead of a 413).
   */
  unreadBody: UnreadBody | null = null

  constructor(
    private readonly res: HttpResponse,
    private readonly log: Logger,
    readonly method: string,
    readonly url: string,
    private readonly startedAt: number,
  ) {
    // Attached up front, before any async step: uWS requires it for every response that is not
    // ended inside the handler itself. uWS calls it for a lingering reply too (that response is
    // unfinished as far as uWS knows), when the connection closes, hangUp() included.
    res.onAborted(() => {
      const was = this.state
      this.state = was === 'open' || was === 'streaming' ? 'aborted' : 'sent'
      if (this.closing) clearImmediate(this.closing)
      this.closing = null
      this.writer?.stop()
      this.writer = null
      if (was === 'streaming' && this.log.isLevelEnabled('debug')) this.log.debug({ method, url }, 'HTTP client went away during the answer')
      if (was === 'open' && this.log.isLevelEnabled('debug')) this.log.debug({ method, url }, 'HTTP request aborted by the client')
      if (was !== 'sent') this.abortListener?.()
    })
  }

  /** True until a response was sent or the client went away; `res` may be used only while open. */
  get open(): boolean {
    return this.state === 'open'
  }

  /** One listener, for the body reader: it must learn that no more data will come. */
  onAbort(listener: () => void): void {
    this.abortListener = listener
  }

  json(status: number, body: unknown, opts: ReplyOptions = {}): void {
    if (this.state !== 'open') return
    this.send(status, JSON_TYPE, JSON.stringify(body), opts)
  }

  /** A body already rendered as JSON. */
  rawJson(status: number, json: string, opts: ReplyOptions = {}): void {
    if (this.state !== 'open') return
    this.send(status, JSON_TYPE, json, opts)
  }

  /**
   * A JSON body of many items, written a chunk at a time over several turns of the loop (see
   * list-body.ts), with its content-length. While the request body is unread it goes out whole.
   */
  list(status: number, body: ListBody): void {
    if (this.state !== 'open') return
    if (this.unreadBody) {
      this.send(status, JSON_TYPE, listBodyText(body), {})
      return
    }
    this.state = 'streaming'
    const writer = new ListBodyWriter(this.res, body, (err) => {
      this.writer = null
      if (err) {
        // A rendering bug: the client would wait for bytes that never come.
        this.log.error({ err, method: this.method, url: this.url }, `${this.method} ${this.url}: answer cut short (${err.message})`)
        this.state = 'sent'
        this.res.close()
        return
      }
      this.state = 'sent'
      this.logSent(status)
    })
    this.writer = writer
    this.res.cork(() => {
      this.res.writeStatus(statusLine(status)).writeHeader('content-type', JSON_TYPE)
      writer.start()
    })
  }

  /** A body with its own content type (the Prometheus exposition format, the dashboard's files). */
  text(status: number, contentType: string, body: string | Uint8Array, opts: ReplyOptions = {}): void {
    if (this.state !== 'open') return
    this.send(status, contentType, body, opts)
  }

  private send(status: number, contentType: string, payload: string | Uint8Array, opts: ReplyOptions): void {
    const unread = this.unreadBody
    if (unread) {
      // uWS has no call for a whole answer that keeps the connection open for the rest of the
      // body and still lets us close it later: end() either closes at once or leaves the
      // connection with no handle to close it by (res is dead after end()). writeStatus() writes
      // its argument verbatim, so the whole answer goes through it; uWS still counts the response
      // as unanswered, and res.close() stays possible for hangUp().
      this.unreadBody = null
      this.state = 'lingering'
      unread.answered()
      this.res.cork(() => this.res.writeStatus(wholeAnswer(status, contentType, payload, opts)))
    } else {
      this.state = 'sent'
      this.res.cork(() => {
        this.res.writeStatus(statusLine(status)).writeHeader('content-type', contentType)
        if (opts.headers) for (const [key, value] of Object.entries(opts.headers)) this.res.writeHeader(key, value)
        this.res.end(payload)
      })
    }
    this.logSent(status)
  }

  private logSent(status: number): void {
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ method: this.method, url: this.url, status, ms: Date.now() - this.startedAt }, `${this.method} ${this.url} ${status}`)
    }
  }

  /**
   * Starts a streamed answer (Server-Sent Events, NDJSON): the status and headers now, then the
   * body in pieces. A piece is never dropped by us: write() false means uWS holds it and the
   * connection is backed up, and the writer should wait for onWritable before the next one.
   * Null when the reply is no longer open.
   */
  stream(status: number, contentType: string, opts: ReplyOptions = {}): ReplyStream | null {
    if (this.state !== 'open') return null
    this.state = 'streaming'
    const reply = this
    const res = this.res
    let writable: (() => void) | null = null
    res.onWritable(() => {
      const cb = writable
      writable = null
      cb?.()
      return true
    })
    res.cork(() => {
      res.writeStatus(statusLine(status)).writeHeader('content-type', contentType)
      if (opts.headers) for (const [key, value] of Object.entries(opts.headers)) res.writeHeader(key, value)
    })
    return {
      write: (piece: string): boolean => {
        if (this.state !== 'streaming') return true
        let ok = true
        res.cork(() => (ok = res.write(piece)))
        return ok
      },
      onWritable: (cb: () => void): void => {
        writable = cb
      },
      end: (): void => {
        if (this.state !== 'streaming') return
        this.state = 'sent'
        res.cork(() => res.end())
      },
      get open(): boolean {
        return reply.state === 'streaming'
      },
    }
  }

  /**
   * Closes the connection of a lingering reply, once the body reader has read what it will of the
   * rest; a no-op for any other. `drained` is how much of the body was read and dropped after the answer.
   */
  hangUp(reason: string, drained: number): void {
    if (this.state !== 'lingering' || this.closing) return
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ method: this.method, url: this.url, reason, drained }, `${this.method} ${this.url}: connection closed after the answer (${reason})`)
    }
    // On the next turn of the loop, not from inside this uWS callback: until it returns, the answer
    // may still be in uWS's cork buffer (a body that arrived whole with its headers), and a close
    // drops that unsent. By then it has been handed to the kernel, which sends it before the FIN.
    this.closing = setImmediate(() => {
      this.closing = null
      this.state = 'sent'
      this.res.close()
    })
  }

  /**
   * Answers with `{"error":{code,message}}` and the status mapped from the code. Anything that is
   * not a CloudaiError is a bug: it is logged with its stack and the client sees only
   * CLOUDAI_INTERNAL.
   */
  error(err: unknown, opts: ReplyOptions = {}): void {
    const cloudai = toCloudaiError(err)
    const status = cloudai.httpStatus
    if (status >= 500) {
      this.log.error({ err, method: this.method, url: this.url, code: cloudai.code, status }, `${this.method} ${this.url} failed: ${cloudai.message}`)
    }
    if (this.state === 'open') {
      const shown = cloudai === err ? cloudai.toJSON() : { error: { code: cloudai.code, message: 'internal error; see the master log' } }
      this.json(status, shown, opts)
    } else if (this.state !== 'aborted' && status < 500) {
      // A handler that failed after it had answered is a bug even when the error looks benign.
      this.log.error({ err, method: this.method, url: this.url }, `${this.method} ${this.url} failed after its response was sent`)
    }
  }
}

/** A streamed answer in progress (see Reply.stream). */
export interface ReplyStream {
  write(piece: string): boolean
  onWritable(cb: () => void): void
  end(): void
  readonly open: boolean
}

/**
 * A whole HTTP response after "HTTP/1.1 ", as writeStatus() writes it: status line, headers, the
 * blank line and the body. uWS ends what writeStatus() writes with CRLF; that CRLF ends the body
 * and is counted in its length (whitespace after JSON). `connection: close` tells the client that
 * nothing more is coming on this connection.
 */
function wholeAnswer(status: number, contentType: string, payload: string | Uint8Array, opts: ReplyOptions): string | Buffer {
  const bodyBytes = (typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength) + 2
  let head = `${statusLine(status)}\r\ncontent-type: ${contentType}\r\ncontent-length: ${bodyBytes}\r\nconnection: close\r\ndate: ${new Date().toUTCString()}\r\n`
  if (opts.headers) for (const [key, value] of Object.entries(opts.headers)) head += `${key}: ${value}\r\n`
  head += '\r\n'
  return typeof payload === 'string' ? head + payload : Buffer.concat([Buffer.from(head, 'latin1'), payload])
}
