import { STATUS_CODES } from 'node:http'
import type { HttpResponse } from 'uWebSockets.js'
import { toCloudaiError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'

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

/**
 * The one owner of a uWS HttpResponse. uWS aborts the process if a response is touched after
 * the client went away or after it was ended, so every write goes through here and is dropped
 * once the reply is no longer open. Writes are corked because most replies are sent from an
 * async continuation, where uWS does not cork for us.
 */
export class Reply {
  private state: 'open' | 'aborted' | 'sent' = 'open'
  private abortListener: (() => void) | null = null
  /**
   * Set while a request body is still arriving: a reply sent then also closes the connection,
   * or uWS would go on receiving (and feeding us) the rest of a body nobody wants.
   */
  bodyPending = false

  constructor(
    private readonly res: HttpResponse,
    private readonly log: Logger,
    readonly method: string,
    readonly url: string,
    private readonly startedAt: number,
  ) {
    // Attached up front, before any async step: uWS requires it for every response that is not
    // ended inside the handler itself.
    res.onAborted(() => {
      this.state = 'aborted'
      if (this.log.isLevelEnabled('debug')) this.log.debug({ method, url }, 'HTTP request aborted by the client')
      this.abortListener?.()
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

  /** A body with its own content type (the Prometheus exposition format, the dashboard's files). */
  text(status: number, contentType: string, body: string | Uint8Array, opts: ReplyOptions = {}): void {
    if (this.state !== 'open') return
    this.send(status, contentType, body, opts)
  }

  private send(status: number, contentType: string, payload: string | Uint8Array, opts: ReplyOptions): void {
    const close = this.bodyPending
    this.state = 'sent'
    this.res.cork(() => {
      this.res.writeStatus(statusLine(status)).writeHeader('content-type', contentType)
      if (opts.headers) for (const [key, value] of Object.entries(opts.headers)) this.res.writeHeader(key, value)
      this.res.end(payload, close)
    })
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ method: this.method, url: this.url, status, ms: Date.now() - this.startedAt }, `${this.method} ${this.url} ${status}`)
    }
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
    } else if (this.state === 'sent' && status < 500) {
      // A handler that failed after it had answered is a bug even when the error looks benign.
      this.log.error({ err, method: this.method, url: this.url }, `${this.method} ${this.url} failed after its response was sent`)
    }
  }
}
