// A JSON answer made of many rendered items (GET /api/workers: one text per worker), written in
// chunks. At 10,000 workers the list is ~7 MB: as one string, then its UTF-8 copy handed to
// res.end(), it was ~10 ms of main-thread CPU a request in one block (the loop held for all of it)
// and 14 MB of garbage a request. In chunks, each turn of the loop copies and writes at most
// TURN_BYTES, and a client that reads slower than the master writes holds the rest back (tryEnd
// writes only what the socket takes; onWritable resumes): nothing of the body is buffered beyond
// the chunk in hand, where uWS used to keep whatever the socket had not taken yet.

import type { ListBody } from '../list-body.js'

// The body's shape lives with the control that renders it (src/master/list-body.ts).
export { type ListBody, listBodyText } from '../list-body.js'

const COMMA = 0x2c

/** A chunk's size: big enough that per-write costs vanish, small enough that a reply's buffer stays small. */
export const CHUNK_BYTES = 64 * 1024
/**
 * What one turn of the loop writes before it lets other work run: a copy and a send of 1 MiB, ~1 ms
 * on an idle core, a few on a busy one. Smaller turns cost the request itself a wait behind whatever
 * else is ready at each yield (heartbeat batches): a 2,000-worker list (1.4 MB) goes in two turns.
 */
export const TURN_BYTES = 1024 * 1024

/** What of uWS's HttpResponse the writer uses: a streamed answer of known size. */
export interface StreamTarget {
  cork(cb: () => void): unknown
  /** [the chunk was taken whole, the response is complete] */
  tryEnd(chunk: Uint8Array, totalSize: number): [boolean, boolean]
  getWriteOffset(): number
  onWritable(handler: (offset: number) => boolean): unknown
}

/**
 * Writes a ListBody through tryEnd, TURN_BYTES a turn, waiting on onWritable whenever the socket
 * is full. The caller writes the status line and headers first, in the same cork as start().
 * uWS sends `content-length: body.bytes`; the chunks must add up to it exactly, or the client would
 * wait for bytes that never come: `done` reports a mismatch (a rendering bug) as an error, and the
 * caller closes the connection.
 */
export class ListBodyWriter {
  private next = 0
  /** Items per chunk, from their average size. */
  private readonly perChunk: number
  /** The chunk tryEnd did not take whole, and the write offset it started at. */
  private pending: Buffer | null = null
  private pendingAt = 0
  private written = 0
  private turn: NodeJS.Immediate | null = null
  private state: 'writing' | 'done' | 'stopped' = 'writing'
  /**
   * True when the body is all ASCII: its UTF-8 size equals its length in UTF-16 units (any other
   * character takes more bytes than units). Its chunks are then copied byte for byte into one
   * buffer, reused once uWS took a chunk (uWS copies what it keeps), instead of UTF-8 encoded anew.
   */
  private readonly ascii: boolean
  private scratch: Buffer | null = null

  constructor(
    private readonly res: StreamTarget,
    private readonly body: ListBody,
    private readonly done: (err: Error | null) => void,
  ) {
    const avg = body.items.length === 0 ? 1 : Math.max(1, body.bytes / body.items.length)
    this.perChunk = Math.max(1, Math.floor(CHUNK_BYTES / avg))
    let units = body.open.length + body.close.length + Math.max(0, body.items.length - 1)
    for (const item of body.items) units += item.length
    this.ascii = units === body.bytes
  }

  /** Writes the first turn's worth. Call it corked, right after the headers. */
  start(): void {
    this.res.onWritable((offset) => this.writable(offset))
    this.pump()
  }

  /** The connection went away (onAborted): the response must not be touched again. */
  stop(): void {
    this.state = 'stopped'
    if (this.turn) clearImmediate(this.turn)
    this.turn = null
  }

  private chunk(): Buffer {
    const { items } = this.body
    const from = this.next
    const to = Math.min(items.length, from + this.perChunk)
    this.next = to
    if (this.ascii) return this.asciiChunk(from, to)
    let text = from === to ? '' : items.slice(from, to).join(',')
    if (from > 0 && from < to) text = `,${text}`
    if (from === 0) text = this.body.open + text
    if (to === items.length) text += this.body.close
    return Buffer.from(text, 'utf8')
  }

  /**
   * Items copied one by one into the reused buffer: no text of the chunk is made (7 MB a request
   * through V8's young generation at 10,000 workers, a scavenge each), and an item rendered once
   * is copied, not encoded.
   */
  private asciiChunk(from: number, to: number): Buffer {
    const { items, open, close } = this.body
    let size = (from === 0 ? open.length : 0) + (to === items.length ? close.length : 0)
    for (let i = from; i < to; i++) size += items[i]!.length + (i > 0 ? 1 : 0)
    if (this.scratch === null || this.scratch.length < size) this.scratch = Buffer.allocUnsafeSlow(Math.max(size, CHUNK_BYTES * 2))
    const buf = this.scratch
    let at = from === 0 ? buf.write(open, 0, 'latin1') : 0
    for (let i = from; i < to; i++) {
      if (i > 0) buf[at++] = COMMA
      at += buf.write(items[i]!, at, 'latin1')
    }
    if (to === items.length) at += buf.write(close, at, 'latin1')
    return buf.subarray(0, at)
  }

  /** Writes until the turn's budget is spent, the socket is full, or the body is done. */
  private pump(): void {
    let spent = 0
    while (this.state === 'writing') {
      if (this.pending === null) {
        this.pendingAt = this.res.getWriteOffset()
        this.pending = this.chunk()
      }
      const chunk = this.pending
      const last = this.next >= this.body.items.length
      if (last && this.written + chunk.length !== this.body.bytes) {
        this.finish(new Error(`the list's chunks add up to ${this.written + chunk.length} bytes, not the ${this.body.bytes} announced`))
        return
      }
      const [ok, responded] = this.res.tryEnd(chunk, this.body.bytes)
      if (responded) {
        this.written += chunk.length
        this.finish(null)
        return
      }
      if (!ok) return // the rest of `pending` goes out from writable()
      this.written += chunk.length
      spent += chunk.length
      this.pending = null
      if (last) {
        // Everything written without uWS counting the response done: announced more than sent.
        this.finish(new Error(`the list's ${this.written} bytes did not complete the ${this.body.bytes} announced`))
        return
      }
      if (spent >= TURN_BYTES) {
        this.turn = setImmediate(() => {
          this.turn = null
          if (this.state === 'writing') this.res.cork(() => this.pump())
        })
        return
      }
    }
  }

  /** uWS: the socket takes more. True if what was pending went out (uWS then stops calling until the next refusal). */
  private writable(offset: number): boolean {
    if (this.state !== 'writing' || this.pending === null) return true
    const rest = this.pending.subarray(offset - this.pendingAt)
    const [ok, responded] = this.res.tryEnd(rest, this.body.bytes)
    if (responded) {
      this.written += this.pending.length
      this.finish(null)
      return true
    }
    if (!ok) return false
    this.written += this.pending.length
    this.pending = null
    this.res.cork(() => this.pump())
    return true
  }

  private finish(err: Error | null): void {
    this.state = 'done'
    this.pending = null
    this.done(err)
  }
}
