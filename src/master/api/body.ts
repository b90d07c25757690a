import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { CloudaiError } from '../../shared/errors.js'
import type { Reply, UnreadBody } from './respond.js'

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
// Enough for the rest of a body a few times over the default limit (the usual oversized request)
// to be read, so that its sender gets the answer instead of a reset; little enough to stay cheap.
export const DEFAULT_DRAIN_BYTES = 4 * 1024 * 1024
// nginx's lingering_timeout; under uWS's own 10 s cut of a stalled body, which would drop the
// connection without closing it cleanly.
export const DEFAULT_DRAIN_MS = 5_000

export interface BodyLimits {
  /** Largest body accepted (413 above it). */
  maxBytes: number
  /** After an answer sent before the body had all arrived, the most of it read and dropped. */
  drainBytes: number
  /** After such an answer, the longest wait for the rest of the body. */
  drainMs: number
}

// application/json, or a structured +json type (application/merge-patch+json), parameters allowed.
const JSON_MEDIA_TYPE = /^application\/(?:[a-z0-9.+-]+\+)?json\s*(?:;|$)/i
// fatal: invalid UTF-8 is refused instead of silently becoming U+FFFD in a worker id.
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Thrown into the body promise when the client goes away; there is nobody left to answer. */
export class BodyAborted extends Error {
  constructor() {
    super('the client closed the connection before the request body arrived')
    this.name = 'BodyAborted'
  }
}

/**
 * Reads a request body and parses it as a JSON object. Must be called synchronously inside the
 * uWS handler: `req` is stack-allocated and gone after the handler returns, and uWS delivers body
 * chunks only to an onData handler attached before then.
 *
 * The headers are checked before a byte is read (415 for a missing or non-JSON content-type, 413 for a
 * declared length over the limit); a body that grows past the limit while streaming (chunked
 * encoding, or a lying content-length) is refused at the first chunk that crosses it. Either way
 * the refusal is answered at once and the rest of the body is drained (see IncomingBody).
 */
export function readJsonObject(res: HttpResponse, req: HttpRequest, reply: Reply, limits: BodyLimits): Promise<Record<string, unknown>> {
  const body = new IncomingBody(res, reply, limits)
  const refusal = headerRefusal(req.getHeader('content-type'), req.getHeader('content-length'), limits.maxBytes)
  if (refusal) body.refuse(refusal)
  return body.bytes.then(parseJsonObject)
}

/**
 * Refuses a request whose body cannot be framed with certainty (two Content-Lengths) and answers
 * `err` at once. The body, as far as uWS frames it, is read and dropped, and the connection closed
 * after it (see IncomingBody). Until the close the answer is unfinished as far as uWS knows, and
 * uWS closes a connection on which a request arrives before the last one was answered: a request
 * hidden in the rest of the body is never served, though the answer may then be lost with it.
 */
export function refuseUnframed(res: HttpResponse, reply: Reply, limits: BodyLimits, err: CloudaiError): void {
  const body = new IncomingBody(res, reply, limits)
  body.refuse(err)
  // Answered here, not by a handler awaiting the body.
  body.bytes.catch(() => undefined)
  reply.error(err)
}

function headerRefusal(contentType: string, contentLength: string, maxBytes: number): CloudaiError | null {
  // Required, not assumed: a page on another site may POST text/plain, a form's types or no type at
  // all without a CORS preflight, and application/json is what makes the browser ask first.
  if (contentType === '') {
    return new CloudaiError('CLOUDAI_UNSUPPORTED_MEDIA_TYPE', 'the request has no content-type: send content-type: application/json with a JSON body')
  }
  if (!JSON_MEDIA_TYPE.test(contentType)) {
    return new CloudaiError(
      'CLOUDAI_UNSUPPORTED_MEDIA_TYPE',
      `content-type ${JSON.stringify(contentType.slice(0, 80))} is not accepted: send application/json`,
    )
  }
  if (contentLength !== '' && Number(contentLength) > maxBytes) return tooLarge(maxBytes)
  return null
}

function tooLarge(maxBytes: number): CloudaiError {
  return new CloudaiError('CLOUDAI_BODY_TOO_LARGE', `the request body is larger than ${maxBytes} bytes`)
}

/**
 * One request body, from the first chunk to the last. Kept in memory up to the limit. Once refused
 * (too large, or a refusal from the headers) the promise rejects, the refusal is answered at once,
 * and the rest of the body is read and dropped: a bounded lingering close, as Node's http server
 * and nginx do it. The connection is closed when the body has all arrived, so that no unread byte
 * turns the close into a reset that could cost a client still sending its answer. A body that goes
 * on for more than `drainBytes` after the answer, or has not ended `drainMs` after it, is cut off.
 */
class IncomingBody implements UnreadBody {
  readonly bytes: Promise<Buffer>
  // reading: keeping chunks; refused: dropping them, no answer yet; draining: dropping them, the
  // answer sent and the connection ours to close; done: no more chunks wanted.
  private phase: 'reading' | 'refused' | 'draining' | 'done' = 'reading'
  private readonly chunks: Buffer[] = []
  private size = 0
  /** Bytes read and dropped since the answer. */
  private drained = 0
  private deadline: NodeJS.Timeout | null = null
  private resolve!: (body: Buffer) => void
  private reject!: (err: unknown) => void

  constructor(
    res: HttpResponse,
    private readonly reply: Reply,
    private readonly limits: BodyLimits,
  ) {
    this.bytes = new Promise((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    reply.unreadBody = this
    reply.onAbort(() => this.aborted())
    res.onData((chunk, isLast) => this.onChunk(chunk, isLast))
  }

  /** Refuses the body with `err`, which the handler answers; what is still to come is dropped. */
  refuse(err: CloudaiError): void {
    if (this.phase !== 'reading') return
    this.phase = 'refused'
    this.chunks.length = 0
    this.reject(err)
  }

  answered(): void {
    // Answered though this reader had not refused the body: the handler will never get it.
    if (this.phase === 'reading') this.refuse(new CloudaiError('CLOUDAI_INTERNAL', 'the request was answered before its body arrived'))
    if (this.phase !== 'refused') return
    this.phase = 'draining'
    this.deadline = setTimeout(() => this.hangUp('drain deadline'), this.limits.drainMs)
  }

  private onChunk(chunk: ArrayBuffer, isLast: boolean): void {
    switch (this.phase) {
      case 'reading':
        this.size += chunk.byteLength
        if (this.size > this.limits.maxBytes) {
          this.refuse(tooLarge(this.limits.maxBytes))
          // The answer is not out yet; this chunk is dropped as a refused one.
          this.onChunk(chunk, isLast)
          return
        }
        // uWS neuters the ArrayBuffer when this callback returns: keep a copy, not a view.
        if (chunk.byteLength > 0) this.chunks.push(Buffer.copyBytesFrom(new Uint8Array(chunk)))
        if (isLast) {
          this.phase = 'done'
          this.reply.unreadBody = null
          this.resolve(this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size))
        }
        return
      case 'refused':
        // The rest arrived before the answer went out: it can go out as usual, on a connection
        // that stays open for the next request.
        if (isLast) {
          this.phase = 'done'
          this.reply.unreadBody = null
        }
        return
      case 'draining':
        this.drained += chunk.byteLength
        if (isLast) this.hangUp('body ended')
        else if (this.drained > this.limits.drainBytes) this.hangUp('drain cap')
        return
      case 'done':
        return
    }
  }

  private hangUp(reason: string): void {
    this.stop()
    this.reply.hangUp(reason, this.drained)
  }

  /** The connection closed: the client went away, uWS timed it out, or the API is closing. */
  private aborted(): void {
    if (this.phase === 'reading') this.reject(new BodyAborted())
    this.stop()
  }

  private stop(): void {
    this.phase = 'done'
    if (this.deadline) clearTimeout(this.deadline)
    this.deadline = null
  }
}

/** A POST body must be one JSON object; arrays, strings and numbers are refused here. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  if (body.length === 0) {
    throw new CloudaiError('CLOUDAI_BAD_JSON', 'the request body is empty: send a JSON object')
  }
  let value: unknown
  try {
    value = JSON.parse(utf8.decode(body))
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new CloudaiError('CLOUDAI_BAD_JSON', `the request body is not valid JSON: ${reason}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CloudaiError('CLOUDAI_BAD_REQUEST', `the request body must be a JSON object, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : `a ${typeof value}`}`)
  }
  return value as Record<string, unknown>
}
