import type { MasterConfig } from '../config.js'
import type { CloudaiError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { LiveSource } from './api/ws.js'
import type { MasterControl } from './control.js'
import type { LiveEvents, LiveSnapshot } from './live.js'
import { Master, type MasterDeps } from './master.js'

export interface StandbyCycleOptions {
  log: Logger
  /** A deposed master that could not start again as a standby: the process should end (main.ts shuts down). */
  onFailure: (err: unknown) => void
}

/**
 * A master process over its lifetime (issue 19): it leads or stands by, and when it is deposed
 * (its lease lapsed while it was paused or cut off) it goes back to standby. A deposed master's
 * memory is stale (the new leader has moved on) and its parts are stopped, so it is not revived:
 * it is closed and a new Master starts in its place as a standby, on the same gRPC port, the same
 * HTTP API (kept listening: uWebSockets.js cannot bind a port again in the process that had it)
 * and the same hold on the data directory; it takes over again once its successor stops. The API
 * serves whichever master runs now, through the forwarders below.
 */
export class StandbyCycle {
  private master: Master
  private cycling: Promise<void> | null = null
  private closed = false
  private readonly live = new LiveForwarder()

  /** The operator's control of whichever master runs now (the HTTP API and the prompt hold it across cycles). */
  readonly control: MasterControl = new Proxy({} as MasterControl, {
    get: (_, key) => {
      const control = this.master.control
      const value = (control as unknown as Record<PropertyKey, unknown>)[key]
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(control) : value
    },
  })

  constructor(private readonly config: MasterConfig, private readonly opts: StandbyCycleOptions) {
    this.master = new Master(config, {
      log: opts.log,
      cycle: { front: { control: this.control, live: this.live, notLeader: () => this.notLeader() }, onDeposed: () => this.deposed() },
    })
    this.live.follow(this.master.live)
  }

  /** The master running now. */
  get current(): Master {
    return this.master
  }

  start(): Promise<void> {
    return this.master.start()
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.cycling) await this.cycling
    await this.master.close()
  }

  private notLeader(): CloudaiError | null {
    return this.master.notLeader()
  }

  private deposed(): void {
    if (this.closed || this.cycling) return
    this.cycling = this.again().finally(() => (this.cycling = null))
  }

  private async again(): Promise<void> {
    const old = this.master
    const config: MasterConfig = { ...this.config, standby: true, grpcPort: old.grpcPort, httpPort: old.httpPort }
    this.opts.log.warn({ grpcPort: config.grpcPort, httpPort: config.httpPort }, 'Deposed: starting again as a standby on the same ports, to take over when the new leader stops')
    try {
      const { http, dirLock } = old.handOver()
      await old.close()
      if (this.closed) {
        // A shutdown came meanwhile: what was handed over closes here.
        await http.close()
        dirLock?.release()
        return
      }
      const next = new Master(config, { log: this.opts.log, cycle: { http, dirLock, onDeposed: () => this.deposed() } })
      // The API keeps serving the deposed master (it refuses and names the leader) until the new
      // one has read the lease: then a standby that knows whom to name.
      await next.start()
      this.master = next
      this.live.follow(next.live)
    } catch (err) {
      this.opts.log.error({ err }, 'The deposed master could not start again as a standby')
      this.opts.onFailure(err)
    }
  }
}

/**
 * The live feed of whichever master runs now, for the WebSocket of an API that outlives masters.
 * It listens to that master's feed only while something listens to it: a feed with no listener
 * builds no message (live.ts).
 */
export class LiveForwarder implements LiveSource {
  private source: Master['live'] | null = null
  private readonly wanted = new Set<string>()
  private readonly listeners = new Set<LiveListener>()
  private readonly relay: LiveListener = (...args) => {
    for (const l of this.listeners) l(...args)
  }

  follow(source: Master['live']): void {
    if (this.listeners.size > 0) this.source?.off('message', this.relay)
    this.source = source
    if (this.listeners.size > 0) source.on('message', this.relay)
    for (const key of this.wanted) source.want(key, true)
  }

  on(_event: 'message', listener: LiveListener): this {
    const had = this.listeners.size
    this.listeners.add(listener)
    if (had === 0 && this.listeners.size === 1) this.source?.on('message', this.relay)
    return this
  }

  off(_event: 'message', listener: LiveListener): this {
    if (this.listeners.delete(listener) && this.listeners.size === 0) this.source?.off('message', this.relay)
    return this
  }

  snapshot(): LiveSnapshot {
    return this.source!.snapshot()
  }

  want(workerId: string, on: boolean): void {
    if (on) this.wanted.add(workerId)
    else this.wanted.delete(workerId)
    this.source?.want(workerId, on)
  }
}

type LiveListener = (...args: LiveEvents['message']) => void
