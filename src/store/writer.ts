import type { Logger } from '../shared/log.js'
import { Backoff } from '../shared/backoff.js'
import { systemClock, type Clock, type TimerHandle } from '../shared/clock.js'
import type { WorkerRecord } from '../shared/types.js'
import type { Store, WorkerChanges } from './store.js'

/** The registry as the writer sees it: current state by id, events, and the heartbeat batch. */
export interface WriterSource {
  get(id: string): WorkerRecord | undefined
  drainHeartbeats(): string[]
  on(event: 'worker-registered' | 'worker-unregistered' | 'worker-active' | 'worker-inactive' | 'worker-changed', listener: (w: WorkerRecord) => void): unknown
  off(event: 'worker-registered' | 'worker-unregistered' | 'worker-active' | 'worker-inactive' | 'worker-changed', listener: (w: WorkerRecord) => void): unknown
}

export interface WriterStatus {
  healthy: boolean
  pending: number
  lastError: string | null
  failingSince: number | null
}

/**
 * Keeps the store in step with the registry without ever making the registry wait for it.
 *
 * Changes are tracked as a set of dirty worker ids, not as a log: at flush time each id is
 * written as the registry holds it now (or deleted if it is gone), so any number of changes to one
 * worker coalesce into one write and the latest state always wins. Status changes flush at once
 * (next tick); heartbeat fields ride along every `heartbeatFlushMs`, one batch for the whole
 * fleet. A failing store is logged once, retried with backoff, and everything that changed
 * meanwhile is written when it answers again.
 */
export class StoreWriter {
  private readonly dirty = new Set<string>()
  private readonly clock: Clock
  private readonly backoff: Backoff
  private heartbeatTimer: TimerHandle | null = null
  private urgent: NodeJS.Immediate | null = null
  private retryTimer: TimerHandle | null = null
  private flushing: Promise<boolean> | null = null
  private failingSince: number | null = null
  private lastError: string | null = null
  private closed = false
  private readonly onChange = (w: WorkerRecord): void => this.markDirty(w.id)

  constructor(
    private readonly store: Store,
    private readonly source: WriterSource,
    private readonly opts: { log: Logger; heartbeatFlushMs?: number; retryBaseMs?: number; retryCapMs?: number; clock?: Clock },
  ) {
    this.clock = opts.clock ?? systemClock
    this.backoff = new Backoff(opts.retryBaseMs ?? 250, opts.retryCapMs ?? 5000)
  }

  start(): void {
    for (const ev of ['worker-registered', 'worker-unregistered', 'worker-active', 'worker-inactive', 'worker-changed'] as const) {
      this.source.on(ev, this.onChange)
    }
    this.heartbeatTimer = this.clock.setInterval(() => {
      for (const id of this.source.drainHeartbeats()) this.dirty.add(id)
      if (this.dirty.size > 0 && this.failingSince === null) void this.flush()
    }, this.opts.heartbeatFlushMs ?? 1000)
  }

  status(): WriterStatus {
    return { healthy: this.failingSince === null, pending: this.dirty.size, lastError: this.lastError, failingSince: this.failingSince }
  }

  markDirty(id: string): void {
    this.dirty.add(id)
    this.scheduleFlush()
  }

  private scheduleFlush(): void {
    if (this.closed || this.urgent || this.failingSince !== null) return
    this.urgent = setImmediate(() => {
      this.urgent = null
      void this.flush()
    })
  }

  /**
   * Writes everything dirty now. Resolves true when the store holds the state as of the call,
   * false when the store failed (the changes stay queued for the retry).
   */
  async flush(): Promise<boolean> {
    // A flush already running may have started before the caller's change: wait, then write again.
    while (this.flushing) await this.flushing
    if (this.dirty.size === 0) return this.failingSince === null
    this.flushing = this.writeBatch()
    try {
      return await this.flushing
    } finally {
      this.flushing = null
    }
  }

  private async writeBatch(): Promise<boolean> {
    const ids = [...this.dirty]
    this.dirty.clear()
    const changes: WorkerChanges = { upserts: [], deletes: [] }
    for (const id of ids) {
      const w = this.source.get(id)
      if (w) changes.upserts.push(w)
      else changes.deletes.push(id)
    }
    try {
      await this.store.writeWorkers(changes)
    } catch (err) {
      for (const id of ids) this.dirty.add(id)
      this.onFailure(err)
      return false
    }
    if (this.failingSince !== null) {
      const outageMs = this.clock.now() - this.failingSince
      this.opts.log.info({ store: this.store.kind, outageMs, written: ids.length }, `Store ${this.store.kind} is answering again; wrote ${ids.length} pending change(s)`)
      this.failingSince = null
      this.lastError = null
      this.backoff.reset()
      if (this.dirty.size > 0) this.scheduleFlush()
    }
    return true
  }

  private onFailure(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err)
    this.lastError = message
    if (this.failingSince === null) {
      this.failingSince = this.clock.now()
      this.opts.log.error({ store: this.store.kind, err: message, pending: this.dirty.size }, `Store ${this.store.kind} write failed; running from memory and retrying until it answers`)
    } else {
      this.opts.log.debug({ store: this.store.kind, err: message }, 'store write failed again')
    }
    if (this.closed || this.retryTimer) return
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null
      for (const id of this.source.drainHeartbeats()) this.dirty.add(id)
      void this.flush()
    }, this.backoff.next())
  }

  /** Stops listening and timers, then makes one last attempt to write what is pending. */
  async close(): Promise<WriterStatus> {
    if (this.closed) return this.status()
    this.closed = true
    for (const ev of ['worker-registered', 'worker-unregistered', 'worker-active', 'worker-inactive', 'worker-changed'] as const) {
      this.source.off(ev, this.onChange)
    }
    if (this.heartbeatTimer) this.clock.clearInterval(this.heartbeatTimer)
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer)
    if (this.urgent) clearImmediate(this.urgent)
    this.heartbeatTimer = this.retryTimer = this.urgent = null
    for (const id of this.source.drainHeartbeats()) this.dirty.add(id)
    await this.flush()
    return this.status()
  }
}
