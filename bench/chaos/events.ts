import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import type { ChaosCluster } from './cluster.js'

// The master's /ws task events, watched for the whole run and across master restarts: each
// task_status message is kept per task, in the order it arrived, with the master start that sent
// it. A connection lost with its master is opened again on the next one (its snapshot is not an
// event and is not counted). Telemetry is unsubscribed: the suite does not need it.

export interface TaskEvent {
  status: string
  previous: string | null
  at: number
  /** Which master start sent it (ChaosCluster.masterStarts at the time). */
  masterStart: number
}

export class TaskEventLog {
  readonly byTask = new Map<string, TaskEvent[]>()
  connections = 0
  private ws: WebSocket | null = null
  private loop: Promise<void> | null = null
  private stopping = false
  private failure: unknown = null

  constructor(private readonly cluster: ChaosCluster) {}

  start(): void {
    this.loop = this.run().catch((err: unknown) => {
      this.failure = err
    })
  }

  /** Stops watching; rejects if the watcher itself crashed. */
  async stop(): Promise<void> {
    this.stopping = true
    this.ws?.terminate()
    await this.loop
    if (this.failure !== null) throw this.failure
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      if (!this.cluster.master) {
        await sleep(100)
        continue
      }
      const masterStart = this.cluster.masterStarts
      await this.watch(`ws://127.0.0.1:${this.cluster.httpPort}/ws`, masterStart)
      if (!this.stopping) await sleep(100)
    }
  }

  /** One connection, until it closes. */
  private watch(url: string, masterStart: number): Promise<void> {
    return new Promise((resolve) => {
      const ws = new WebSocket(url)
      this.ws = ws
      ws.on('open', () => {
        this.connections++
        ws.send(JSON.stringify({ type: 'unsubscribe', topics: ['metrics'] }))
      })
      ws.on('message', (data) => {
        let m: { type?: string; task_id?: string; status?: string; previous?: string | null }
        try {
          m = JSON.parse(String(data)) as typeof m
        } catch {
          return
        }
        if (m.type !== 'task_status' || typeof m.task_id !== 'string' || typeof m.status !== 'string') return
        let list = this.byTask.get(m.task_id)
        if (!list) this.byTask.set(m.task_id, (list = []))
        list.push({ status: m.status, previous: m.previous ?? null, at: Date.now(), masterStart })
      })
      ws.on('error', () => {}) // the close that follows ends this connection
      ws.once('close', () => resolve())
    })
  }
}
