import type { TestContext } from 'node:test'
import WebSocket from 'ws'
import { isChecked, wsViolation } from './contract.js'

// A WebSocket client of the master's /ws for tests: every message kept in order, and a way to wait
// for the next one that matches. From a master the test started (startMaster), every message must
// match the OpenAPI document's WsServerMessage; one that does not fails the test when it ends.

export interface WatchedMessage {
  type: string
  timestamp: string
  [key: string]: any
}

export class Watcher {
  readonly messages: WatchedMessage[] = []
  /** Messages that do not match the document (checked only for a master the test started). */
  readonly violations: string[] = []
  readonly closed: Promise<{ code: number; reason: string }>
  private waiters: { pred: (m: WatchedMessage) => boolean; from: number; resolve: (m: WatchedMessage) => void }[] = []

  private constructor(readonly ws: WebSocket, checked: boolean) {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as WatchedMessage
      const violation = checked ? wsViolation(m) : null
      if (violation) this.violations.push(violation)
      this.messages.push(m)
      const idx = this.messages.length - 1
      this.waiters = this.waiters.filter((w) => (idx >= w.from && w.pred(m) ? (w.resolve(m), false) : true))
    })
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
  }

  static async open(t: TestContext, url: string): Promise<Watcher> {
    const ws = new WebSocket(url)
    const watcher = new Watcher(ws, isChecked(url.replace(/^ws/, 'http')))
    t.after(() => {
      ws.terminate()
      if (watcher.violations.length > 0) throw new Error(watcher.violations.join('\n'))
    })
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })))
    })
    return watcher
  }

  mark(): number {
    return this.messages.length
  }

  send(message: unknown): void {
    this.ws.send(JSON.stringify(message))
  }

  next(pred: (m: WatchedMessage) => boolean, what: string, opts: { from?: number; timeoutMs?: number } = {}): Promise<WatchedMessage> {
    const from = opts.from ?? 0
    for (let i = from; i < this.messages.length; i++) if (pred(this.messages[i]!)) return Promise.resolve(this.messages[i]!)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done)
        reject(new Error(`no WebSocket message "${what}" within ${opts.timeoutMs ?? 20_000}ms; last: ${JSON.stringify(this.messages.slice(-5)).slice(0, 2000)}`))
      }, opts.timeoutMs ?? 20_000)
      const done = (m: WatchedMessage): void => {
        clearTimeout(timer)
        resolve(m)
      }
      this.waiters.push({ pred, from, resolve: done })
    })
  }
}
