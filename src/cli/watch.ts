import WebSocket from 'ws'
import { CloudaiError } from '../shared/errors.js'
import type { LiveMessage, LiveSnapshot } from '../master/live.js'

// The operator commands' view of the master's /ws: `cloudai watch` and `register --wait`. A lost
// connection is retried with backoff, and every (re)connection starts with a snapshot, so a
// watcher never misses the state it resumes from.

export type WatchMessage = LiveSnapshot | LiveMessage | { type: 'subscribed' | 'error'; [key: string]: unknown }

/** ws:// (or wss://) URL of the /ws of an API base URL. */
export function wsUrl(api: string): string {
  const url = new URL(api)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/ws`
  return url.href
}

export interface WatchHandlers {
  message(m: WatchMessage): void
  /** The connection dropped after having been open; a reconnection follows. */
  lost?(reason: string): void
}

export interface WatchOptions {
  api: string
  /** Sent right after connecting, e.g. to stop telemetry. */
  subscribe?: { add?: string[]; remove?: string[] }
  connectTimeoutMs?: number
  apiToken?: string | null
}

/**
 * Connects and keeps reconnecting until `close()`. The first connection failing is an error
 * (CLOUDAI_API_UNREACHABLE): a watcher pointed at the wrong address should hear it at once.
 */
export class LiveConnection {
  private ws: WebSocket | null = null
  private closed = false
  private retryTimer: NodeJS.Timeout | null = null
  private delayMs = 250

  constructor(
    private readonly opts: WatchOptions,
    private readonly handlers: WatchHandlers,
  ) {}

  /** Resolves once the first connection is open. */
  open(): Promise<void> {
    return new Promise((resolve, reject) => this.connect(resolve, reject))
  }

  close(): void {
    this.closed = true
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = null
    this.ws?.close(1000)
    this.ws?.terminate()
    this.ws = null
  }

  private connect(opened?: () => void, failed?: (err: Error) => void): void {
    if (this.closed) return
    const url = wsUrl(this.opts.api)
    const ws = new WebSocket(url, {
      handshakeTimeout: this.opts.connectTimeoutMs ?? 10_000,
      ...(this.opts.apiToken ? { headers: { authorization: `Bearer ${this.opts.apiToken}` } } : {}),
    })
    this.ws = ws
    let wasOpen = false
    // The first connection's failure ends the watch (reported by open()); later ones are retried.
    let gaveUp = false
    const fail = (err: Error): void => {
      if (!failed || gaveUp) return
      gaveUp = true
      failed(err)
    }
    ws.on('open', () => {
      wasOpen = true
      this.delayMs = 250
      const { add, remove } = this.opts.subscribe ?? {}
      if (remove?.length) ws.send(JSON.stringify({ type: 'unsubscribe', topics: remove }))
      if (add?.length) ws.send(JSON.stringify({ type: 'subscribe', topics: add }))
      opened?.()
    })
    ws.on('message', (data) => {
      let m: WatchMessage
      try {
        m = JSON.parse(String(data)) as WatchMessage
      } catch {
        return
      }
      this.handlers.message(m)
    })
    ws.on('unexpected-response', (_req, res) => {
      const err = res.statusCode === 401
        ? new CloudaiError('CLOUDAI_UNAUTHORIZED', 'the master requires its API token: set CLOUDAI_API_TOKEN or pass --api-token')
        : new CloudaiError('CLOUDAI_API_UNREACHABLE', `${url} answered HTTP ${res.statusCode} instead of opening a WebSocket: is ${this.opts.api} a cloudai master?`)
      res.resume()
      fail(err)
      ws.terminate()
    })
    ws.on('error', (err: Error & { code?: string }) => {
      if (!wasOpen) fail(new CloudaiError('CLOUDAI_API_UNREACHABLE', `cannot reach the master at ${this.opts.api} (${err.code ?? err.message}): is \`cloudai master\` running?`))
    })
    ws.on('close', (code, reason) => {
      if (this.ws !== ws) return
      this.ws = null
      if (this.closed || gaveUp) return
      if (wasOpen) this.handlers.lost?.(`${code}${reason.length ? ` ${String(reason)}` : ''}`)
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null
        this.connect()
      }, this.delayMs)
      this.delayMs = Math.min(5000, this.delayMs * 2)
    })
  }
}
