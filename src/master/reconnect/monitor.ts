import { monitorEventLoopDelay } from 'node:perf_hooks'
import type { Logger } from '../../shared/log.js'
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.js'
import type { WorkerRecord } from '../../shared/types.js'
import { masterRegisterTarget, type Dialer, type PendingDial } from './dialer.js'
import type { DialResult } from './protocol.js'
import type { Registry } from '../registry.js'

export interface ReconnectOptions {
  intervalMs: number
  dialTimeoutMs: number
  masterId: string
  /** Called at dial time: the gRPC port is only known once the server is bound. */
  masterAddress: () => string
  log: Logger
  clock?: Clock
}

export type MonitorState = 'running' | 'disabled' | 'stopped'

/** Dials handed to the dialer per event-loop turn at the start of a pass. */
const DISPATCH_CHUNK = 64

/** The latest pass that dialled anything: how long it took and what it cost the main thread. */
export interface PassReport {
  /** Epoch ms. */
  startedAt: number
  durationMs: number
  dials: number
  /**
   * The main thread's event-loop delay while the pass ran (p99 and max, ms): the API and the
   * heartbeats wait this long behind the dials. Keeping it low is what the dial pool is for.
   */
  loopDelayP99Ms: number
  loopDelayMaxMs: number
}

/**
 * The worker reconnection monitor. Every interval it dials MasterRegister on each inactive
 * worker, all in parallel on the dialer, each bounded by the dial timeout. A worker that answers
 * calls RegisterWorker back and turns active through the registry; failures are silent (debug).
 *
 * Invariants: at most one dial in flight per worker (single flight); passes never overlap (the next
 * is scheduled when the previous one ends); unregistering a worker cancels its dial; close()
 * cancels every dial and waits for them.
 */
export class ReconnectMonitor {
  /** `settled`: the dial's outcome as callers get it (never rejects), shared by a second caller. */
  private readonly inflight = new Map<string, PendingDial & { address: string; settled: Promise<DialResult | null> }>()
  private readonly clock: Clock
  private timer: TimerHandle | null = null
  private passRunning: Promise<void> | null = null
  private state: MonitorState = 'stopped'
  private closed = false
  /** When each worker's latest dial started: /healthz checks inactive workers are dialled often enough. */
  private readonly lastDial = new Map<string, number>()
  private passes = 0
  private last: PassReport | null = null
  private readonly onUnregistered = (w: WorkerRecord): void => {
    this.lastDial.delete(w.id)
    this.cancel(w.id)
  }

  constructor(
    private readonly registry: Registry,
    private readonly dialer: Dialer,
    private readonly opts: ReconnectOptions,
  ) {
    this.clock = opts.clock ?? systemClock
  }

  get status(): MonitorState {
    return this.state
  }

  get inflightCount(): number {
    return this.inflight.size
  }

  /** Passes that dialled at least one worker. */
  get passCount(): number {
    return this.passes
  }

  get lastPass(): PassReport | null {
    return this.last
  }

  isDialing(id: string): boolean {
    return this.inflight.has(id)
  }

  lastDialStartedAt(id: string): number | null {
    return this.lastDial.get(id) ?? null
  }

  start(): void {
    if (this.closed || this.state !== 'stopped') return
    this.registry.on('worker-unregistered', this.onUnregistered)
    if (this.opts.intervalMs === 0) {
      this.state = 'disabled'
      this.opts.log.warn('Worker reconnection monitor disabled (--reconnect-interval 0): inactive workers will only come back by joining on their own')
      return
    }
    this.state = 'running'
    this.schedule(this.opts.intervalMs)
    this.opts.log.info({ intervalMs: this.opts.intervalMs, dialTimeoutMs: this.opts.dialTimeoutMs, dialer: this.dialer.kind }, 'Worker reconnection monitor started')
  }

  private schedule(delayMs: number): void {
    if (this.closed || this.state !== 'running') return
    this.timer = this.clock.setTimeout(() => {
      this.timer = null
      const started = this.clock.now()
      this.runPass()
        .catch((err: unknown) => this.opts.log.error({ err }, 'Reconnection pass failed; the next one runs on the interval'))
        .finally(() => this.schedule(Math.max(0, this.opts.intervalMs - (this.clock.now() - started))))
    }, delayMs)
  }

  /**
   * One pass over the inactive workers. Returns once every dial it started has settled. A pass
   * asked for while one is running joins that one instead of starting another.
   */
  runPass(): Promise<void> {
    if (this.passRunning) return this.passRunning
    this.passRunning = this.pass().finally(() => {
      this.passRunning = null
    })
    return this.passRunning
  }

  private async pass(): Promise<void> {
    if (this.closed) return
    const targets = this.registry.inactive().filter((w) => !this.inflight.has(w.id))
    if (targets.length === 0) return
    this.opts.log.info({ count: targets.length }, `Attempting to reconnect to ${targets.length} inactive worker(s)...`)
    // 1 ms resolution: a pass lasts about one dial timeout, and a 20 ms stall must show.
    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    const startedAt = this.clock.now()
    const dials: Promise<unknown>[] = []
    try {
      // Handing thousands of dials to the pool at once is itself a stall of the main thread (each
      // is a message to a thread): hand them over a chunk per event-loop turn.
      for (let i = 0; i < targets.length && !this.closed; i += DISPATCH_CHUNK) {
        if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve))
        for (const w of targets.slice(i, i + DISPATCH_CHUNK)) {
          // It may have come back, or been unregistered, since the pass began.
          if (this.registry.get(w.id) === w && !w.isActive) dials.push(this.dialWorker(w))
        }
      }
      await Promise.all(dials)
    } finally {
      delay.disable()
    }
    const durationMs = this.clock.now() - startedAt
    this.passes++
    // A pass shorter than the resolution has no sample (and an empty histogram's p99 is not 0).
    const sampled = delay.count > 0
    this.last = { startedAt, durationMs, dials: dials.length, loopDelayP99Ms: sampled ? delay.percentile(99) / 1e6 : 0, loopDelayMaxMs: sampled ? delay.max / 1e6 : 0 }
    this.opts.log.debug({ ...this.last }, `Reconnection pass over ${targets.length} worker(s) took ${durationMs} ms`)
  }

  /**
   * Dials one worker now (after an operator registers it, or at start-up), unless a dial to it is
   * already in flight, in which case that dial's result is returned.
   */
  dialNow(id: string): Promise<DialResult | null> {
    const w = this.registry.get(id)
    if (!w || w.isActive || this.closed) return Promise.resolve(null)
    return this.dialWorker(w)
  }

  private dialWorker(w: WorkerRecord): Promise<DialResult | null> {
    const existing = this.inflight.get(w.id)
    if (existing) return existing.settled
    const pending = this.dialer.dial(masterRegisterTarget(w, this.opts, this.clock.now()))
    // Its handlers run once the dial settles, after `entry` below is in place.
    const settled = pending.promise.then(
      (result) => {
        if (this.inflight.get(w.id) === entry) this.inflight.delete(w.id)
        this.report(w.id, w.address, result)
        return result
      },
      (err: unknown) => {
        if (this.inflight.get(w.id) === entry) this.inflight.delete(w.id)
        // The pool itself failed (destroyed at shutdown, thread crash): not the worker's fault.
        if (!this.closed) this.opts.log.error({ workerId: w.id, err: (err as Error).message }, 'reconnection dial could not run')
        return null
      },
    )
    const entry = { ...pending, address: w.address, settled }
    this.inflight.set(w.id, entry)
    this.lastDial.set(w.id, this.clock.now())
    return settled
  }

  private report(id: string, address: string, result: DialResult): void {
    if (result.outcome === 'success' && this.registry.get(id)) {
      this.opts.log.info({ workerId: id, address, elapsedMs: result.elapsedMs }, `Successfully reconnected to worker ${id} (${address})`)
    } else {
      this.opts.log.debug({ workerId: id, address, outcome: result.outcome, reason: result.message, elapsedMs: result.elapsedMs }, 'reconnection dial failed')
    }
  }

  /** Cancels the in-flight dial to one worker (it was unregistered). */
  cancel(id: string): void {
    const entry = this.inflight.get(id)
    if (!entry) return
    this.inflight.delete(id)
    entry.cancel()
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.registry.off('worker-unregistered', this.onUnregistered)
    if (this.timer) this.clock.clearTimeout(this.timer)
    this.timer = null
    const pending = [...this.inflight.values()]
    for (const entry of pending) entry.cancel()
    await Promise.allSettled(pending.map((e) => e.promise))
    this.inflight.clear()
    const wasRunning = this.state === 'running'
    this.state = 'stopped'
    if (wasRunning) this.opts.log.info('Worker reconnection monitor stopped')
  }
}
