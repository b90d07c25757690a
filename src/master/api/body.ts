import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { CloudaiError } from '../../shared/errors.js'
import type { Reply } from './respond.js'

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

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
 * The headers are checked before a byte is read (415 for a non-JSON content-type, 413 for a
 * declared length over the limit); a body that grows past the limit while streaming (chunked
 * encoding, or a lying content-length) is refused at the first chunk that crosses it.
 */
export function readJsonObject(res: HttpResponse, req: HttpRequest, reply: Reply, maxBytes: number): Promise<Record<string, unknown>> {
  // Until the last chunk arrives, any answer must also close the connection (see Reply).
  reply.bodyPending = true
  try {
    checkHeaders(req.getHeader('content-type'), req.getHeader('content-length'), maxBytes)
  } catch (err) {
    return Promise.reject(err)
  }
  return readBody(res, reply, maxBytes).then(parseJsonObject)
}

function checkHeaders(contentType: string, contentLength: string, maxBytes: number): void {
  if (contentType !== '' && !JSON_MEDIA_TYPE.test(contentType)) {
    throw new CloudaiError(
      'CLOUDAI_UNSUPPORTED_MEDIA_TYPE',
      `content-type ${JSON.stringify(contentType.slice(0, 80))} is not accepted: send application/json`,
    )
  }
  if (contentLength !== '' && Number(contentLength) > maxBytes) {
    throw tooLarge(maxBytes)
  }
}

function tooLarge(maxBytes: number): CloudaiError {
  return new CloudaiError('CLOUDAI_BODY_TOO_LARGE', `the request body is larger than ${maxBytes} bytes`)
}

function readBody(res: HttpResponse, reply: Reply, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    reply.onAbort(() => {
      settled = true
      reject(new BodyAborted())
    })
    res.onData((chunk, isLast) => {
      // uWS keeps calling after we answered a too-large body, until the connection closes.
      if (settled) return
      size += chunk.byteLength
      if (size > maxBytes) {
        settled = true
        reject(tooLarge(maxBytes))
        return
      }
      // uWS neuters the ArrayBuffer when this callback returns: keep a copy, not a view.
      if (chunk.byteLength > 0) chunks.push(Buffer.copyBytesFrom(new Uint8Array(chunk)))
      if (isLast) {
        settled = true
        reply.bodyPending = false
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
      }
    })
  })
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
