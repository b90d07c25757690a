import { connect, type Socket } from 'node:net'
import type { TestContext } from 'node:test'

export interface RawResponse {
  status: number
  /** Lower-cased names. */
  headers: Map<string, string>
  body: string
}

/** How the connection ended, from the client's side. */
export interface RawClose {
  /** The server closed its side (FIN) before the socket closed. */
  ended: boolean
  /** The first socket error (ECONNRESET, EPIPE, ...), or null for a clean close. */
  error: NodeJS.ErrnoException | null
}

/**
 * An HTTP/1.1 client on a bare socket, for what fetch hides: when the answer arrives relative to the
 * request body, and which side closes the connection, cleanly or with a reset.
 */
export class RawHttp {
  /** Bytes of the request body (or anything else) handed to the kernel so far. */
  sent = 0
  /** Resolves once the socket is closed, however that happened. */
  readonly closed: Promise<RawClose>
  private received = Buffer.alloc(0)
  private ended = false
  private error: NodeJS.ErrnoException | null = null
  private readonly waiters = new Set<() => void>()

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true)
    socket.on('data', (data: Buffer) => {
      this.received = Buffer.concat([this.received, data])
      this.wake()
    })
    socket.on('end', () => (this.ended = true))
    socket.on('error', (err) => (this.error ??= err))
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        resolve({ ended: this.ended, error: this.error })
        this.wake()
      }),
    )
  }

  static open(t: TestContext, port: number): Promise<RawHttp> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1')
      t.after(() => socket.destroy())
      socket.once('error', reject)
      socket.once('connect', () => {
        socket.off('error', reject)
        resolve(new RawHttp(socket))
      })
    })
  }

  /** True while the server has not closed its side. */
  get open(): boolean {
    return !this.ended && !this.socket.destroyed
  }

  /** Writes and waits until the kernel took it; false if the connection failed instead. */
  send(data: string | Buffer): Promise<boolean> {
    if (this.socket.destroyed || !this.socket.writable) return Promise.resolve(false)
    return new Promise((resolve) =>
      this.socket.write(data, (err) => {
        if (!err) this.sent += Buffer.byteLength(data)
        resolve(!err)
      }),
    )
  }

  /** Sends `total` bytes of filler in `chunk`-sized writes, each after the previous was taken; false if cut off first. */
  async sendFiller(total: number, chunk = 64 * 1024): Promise<boolean> {
    for (let left = total; left > 0; left -= chunk) {
      if (!(await this.send(Buffer.alloc(Math.min(chunk, left), 0x20)))) return false
    }
    return true
  }

  /** Destroys the client's side at once (a client that gives up mid-request). */
  destroy(): void {
    this.socket.destroy()
  }

  /**
   * The first complete response (framed by its content-length). Rejects if the connection closes
   * before one has arrived, with what did arrive.
   */
  response(): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const parsed = parseResponse(this.received)
        if (parsed) {
          this.waiters.delete(check)
          resolve(parsed)
        } else if (this.socket.destroyed) {
          this.waiters.delete(check)
          reject(new Error(`the connection closed before a whole response arrived (error ${this.error?.code ?? 'none'}); got ${JSON.stringify(this.received.toString('latin1'))}`))
        }
      }
      this.waiters.add(check)
      check()
    })
  }

  /**
   * Everything the server sent until the connection closed, and how it closed: for answers that end
   * with the connection (uWS's own error pages have no content-length) and for counting answers.
   */
  async untilClosed(): Promise<{ text: string; close: RawClose; statuses: number[] }> {
    const close = await this.closed
    const text = this.received.toString('latin1')
    const statuses = [...text.matchAll(/(?:^|\r\n)HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))
    return { text, close, statuses }
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter()
  }
}

/** `POST path` request headers declaring `contentLength` bytes, or a chunked body when it is null. */
export function postHead(path: string, contentLength: number | null, contentType = 'application/json'): string {
  const framing = contentLength === null ? 'transfer-encoding: chunked' : `content-length: ${contentLength}`
  return `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: ${contentType}\r\n${framing}\r\n\r\n`
}

/** One chunk of a chunked request body. */
export function chunkFrame(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')])
}

function parseResponse(bytes: Buffer): RawResponse | null {
  const headEnd = bytes.indexOf('\r\n\r\n')
  if (headEnd < 0) return null
  const [statusLine = '', ...lines] = bytes.subarray(0, headEnd).toString('latin1').split('\r\n')
  const status = /^HTTP\/1\.1 (\d{3})/.exec(statusLine)
  if (!status) throw new Error(`not an HTTP/1.1 status line: ${JSON.stringify(statusLine)}`)
  const headers = new Map<string, string>()
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim())
  }
  const length = Number(headers.get('content-length'))
  if (!Number.isInteger(length)) throw new Error(`a response without a content-length: ${JSON.stringify(statusLine)}`)
  const bodyStart = headEnd + 4
  if (bytes.length < bodyStart + length) return null
  return { status: Number(status[1]), headers, body: bytes.subarray(bodyStart, bodyStart + length).toString('utf8') }
}
