import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { Logger } from '../../shared/log.js'
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.js'
import type { WorkerRecord } from '../../shared/types.js'
import { masterRegisterTarget, type Dialer, type PendingDial } from './dialer.js'
import type { DialResult } from './protocol.js'
import type { Registry } from '../registry.js'
import { C, type Counters } from '../counters.js'
import { BUDGET_DEFAULTS, DialBudget } from './budget.js'
import { REDIAL_DEFAULTS, RedialSchedule } from './schedule.js'

export interface ReconnectOptions {
  intervalMs: number
  dialTimeoutMs: number
  masterId: string
  /** Called at dial time: the gRPC port is only known once the server is bound. */
  masterAddress: () => string
  /** The master's epoch (issue 19), read at each dial and sent with MasterRegister; default NO_EPOCH. */
  epoch?: () => number
  log: Logger
  clock?: Clock
  /** The master's shared counters: a dial whose worker turned active meanwhile counts as a success there. */
  counters?: Counters
  /** How long after going inactive a worker is re-dialled often (schedule.ts); 0: only the pass dials. */
  fastWindowMs?: number
  /** The global budget (budget.ts): dials started per second and dials in flight. */
  ratePerSec?: number
  maxInflight?: number
  /** The schedule's first re-dial and cap (tests shorten them), and its jitter (tests pin it). */
  firstDelayMs?: number
  fastCapMs?: number
  random?: () => number
}

export type MonitorState = 'running' | 'disabled' | 'stopped'

/** Dials handed to the dialer per event-loop turn: thousands at once is itself a stall of the main thread. */
const DISPATCH_CHUNK = 64
/**
 * Dials start on a 250 ms tick. At a few dozen dials a second, one dial per wake-up makes a dial
 * thread wake per dial: measured with 5,000 dead workers at 40 dials/s, 1.34 ms of CPU per dial
 * without the tick, 0.78 ms with it (1.0 s: 0.73 ms). It adds 125 ms to the average re-dial.
 */
const PUMP_TICK_MS = 250
/** In flight beyond this, a pass is a storm and its event-loop delay is sampled (watchLoad). */
const HEAVY_INFLIGHT = 256

/** The latest pass that dialled anything: how long it took and what it cost the main thread. */
export interface PassReport {
  /** Epoch ms. */
  startedAt: number
  durationMs: number
  dials: number
  /**
   * The main thread's event-loop delay while the pass ran heavy (more than 256 dials in flight),
   * p99 and max in ms: the API and the heartbeats wait this long behind the dials. Keeping it low
   * is what the dial pool is for. Null for a pass that was never sampled (it never ran heavy, or
   * was shorter than the sampling resolution): no delay measured, which is not a delay of 0.
   */
  loopDelayP99Ms: number | null
  loopDelayMaxMs: number | null
}

/** What the monitor counts beside the dials' own outcomes (/metrics). */
export interface ReconnectStats {
  /** Dials cancelled because their worker turned active while they were in flight: successes. */
  activeDuringDial: number
  /** Inactive workers inside their fast re-dial window. */
  fastWorkers: number
  /** Dials of the current pass not started yet (waiting for the budget). */
  passBacklog: number
  /** The budget cannot dial every inactive worker once per interval. */
  budgetShort: boolean
}

interface InflightDial extends PendingDial {
  address: string
  startedAt: number
  /** The dial's outcome as callers get it (never rejects), shared by a second caller. */
  settled: Promise<DialResult | null>
  /** The worker turned active while this dial was in flight: cancelled, and counted a success. */
  foundActive: boolean
}

interface Pass {
  startedAt: number
  queue: WorkerRecord[]
  next: number
  dials: Promise<unknown>[]
  delay: IntervalHistogram
  /** The delay histogram is on (see watchLoad). */
  sampling: boolean
  /** When the last queued dial started (the budget spreads them out). */
  lastStartAt: number
  draining: boolean
  done: Promise<void>
  resolve: () => void
}

/**
 * The worker reconnection monitor. Two things dial inactive workers, both through one global
 * budget (dials per second, dials in flight) and one dial per worker at a time:
 *
 *  - the pass, CloudAI's: every interval it logs "Attempting to reconnect to N inactive worker(s)..."
 *    and makes every inactive worker due that was not dialled within the fast cap (or half the
 *    interval when that is shorter), most overdue
 *    first (never dialled, then the oldest dial). It is the unit of the PassReport: from its start
 *    to the last of its dials settling. It guarantees one dial per worker per interval while the
 *    budget allows; when it does not, the monitor warns and says so on /metrics.
 *  - the schedule (schedule.ts): a worker that went inactive within the fast window is dialled in
 *    between, every few hundred ms at first, then at most the fast cap apart, with jitter; the
 *    budget serves these first (three in four dials when the pass has a backlog, so it never starves).
 *
 * Dials start on a 250 ms tick (PUMP_TICK_MS), at most 64 per event-loop turn.
 *
 * A worker that answers calls RegisterWorker back and turns active through the registry; a dial
 * still in flight then is cancelled and counted a success. Failures are silent (debug).
 *
 * Invariants: at most one dial in flight per worker (single flight); passes never overlap (the next
 * is scheduled when the previous one ends); unregistering a worker cancels its dial; close()
 * cancels every dial and waits for them.
 */
export class ReconnectMonitor {
  private readonly inflight = new Map<string, InflightDial>()
  private readonly clock: Clock
  private readonly schedule: RedialSchedule
  private readonly budget: DialBudget
  private timer: TimerHandle | null = null
  private wakeTimer: TimerHandle | null = null
  private wakeAt = Infinity
  private immediate = false
  private current: Pass | null = null
  private state: MonitorState = 'stopped'
  private closed = false
  /** When each worker's latest dial started: /healthz checks inactive workers are dialled often enough. */
  private readonly lastDial = new Map<string, number>()
  private passes = 0
  private last: PassReport | null = null
  /** Fast re-dials started in a row while the pass had a backlog. */
  private fastStreak = 0
  private activeDuringDial = 0
  private budgetShort = false
  /** Operators' dials (dialNow) waiting for an in-flight place, in the order asked. */
  private readonly asked = new Map<string, { promise: Promise<DialResult | null>; resolve: (r: DialResult | null) => void }>()
  private readonly onUnregistered = (w: WorkerRecord): void => {
    this.lastDial.delete(w.id)
    this.asked.get(w.id)?.resolve(null)
    this.asked.delete(w.id)
    this.schedule.forget(w.id)
    this.cancel(w.id)
  }
  private readonly onInactive = (w: WorkerRecord): void => {
    this.schedule.lost(w.id, this.clock.now())
    this.pump()
  }
  private readonly onActive = (w: WorkerRecord): void => {
    this.schedule.forget(w.id)
    // An operator's dial still waiting for a place is not needed any more: it joined.
    this.asked.get(w.id)?.resolve(null)
    this.asked.delete(w.id)
    const entry = this.inflight.get(w.id)
    if (!entry) return
    // Found, by this dial (the worker calls RegisterWorker before it answers MasterRegister) or by
    // joining on its own: either way it is back, and waiting for the dial's answer would only hold
    // a place in the budget.
    // It stays in flight until its thread says it stopped: a worker that flaps back to inactive
    // meanwhile must not get a second dial beside it (one in flight per worker).
    entry.foundActive = true
    this.opts.log.info({ workerId: w.id, address: entry.address, elapsedMs: this.clock.now() - entry.startedAt }, `Successfully reconnected to worker ${w.id} (${entry.address})`)
    entry.cancel()
  }

  constructor(
    private readonly registry: Registry,
    private readonly dialer: Dialer,
    private readonly opts: ReconnectOptions,
  ) {
    this.clock = opts.clock ?? systemClock
    this.schedule = new RedialSchedule({
      fastWindowMs: opts.intervalMs === 0 ? 0 : (opts.fastWindowMs ?? REDIAL_DEFAULTS.fastWindowMs),
      ...(opts.firstDelayMs !== undefined ? { firstDelayMs: opts.firstDelayMs } : {}),
      ...(opts.fastCapMs !== undefined ? { fastCapMs: opts.fastCapMs } : {}),
      ...(opts.random ? { random: opts.random } : {}),
    })
    this.budget = new DialBudget({ ratePerSec: opts.ratePerSec ?? BUDGET_DEFAULTS.ratePerSec, maxInflight: opts.maxInflight ?? BUDGET_DEFAULTS.maxInflight }, this.clock.now())
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

  get stats(): ReconnectStats {
    const pass = this.current
    return {
      activeDuringDial: this.activeDuringDial,
      fastWorkers: this.schedule.size,
      passBacklog: pass ? pass.queue.length - pass.next : 0,
      budgetShort: this.budgetShort,
    }
  }

  isDialing(id: string): boolean {
    return this.inflight.has(id)
  }

  lastDialStartedAt(id: string): number | null {
    return this.lastDial.get(id) ?? null
  }

  /**
   * How long /healthz lets an inactive worker go undialled: for one inside its fast window, two
   * fast caps and a dial (the schedule promises one cap); null for the others (the operator's
   * --health-reconnect-within, against the interval).
   */
  dialWithinMs(id: string): number | null {
    if (this.state !== 'running' || !this.schedule.has(id)) return null
    return 2 * this.schedule.fastCapMs + this.opts.dialTimeoutMs
  }

  start(): void {
    if (this.closed || this.state !== 'stopped') return
    this.registry.on('worker-unregistered', this.onUnregistered)
    this.registry.on('worker-active', this.onActive)
    if (this.opts.intervalMs === 0) {
      this.state = 'disabled'
      this.opts.log.warn('Worker reconnection monitor disabled (--reconnect-interval 0): inactive workers will only come back by joining on their own')
      return
    }
    this.registry.on('worker-inactive', this.onInactive)
    this.state = 'running'
    this.schedulePass(this.opts.intervalMs)
    this.opts.log.info(
      { intervalMs: this.opts.intervalMs, dialTimeoutMs: this.opts.dialTimeoutMs, dialer: this.dialer.kind, fastWindowMs: this.schedule.fastWindowMs, fastCapMs: this.schedule.fastCapMs, ratePerSec: this.budget.ratePerSec, maxInflight: this.budget.maxInflight },
      'Worker reconnection monitor started',
    )
  }

  private schedulePass(delayMs: number): void {
    if (this.closed || this.state !== 'running') return
    this.timer = this.clock.setTimeout(() => {
      this.timer = null
      const started = this.clock.now()
      this.runPass()
        .catch((err: unknown) => this.opts.log.error({ err }, 'Reconnection pass failed; the next one runs on the interval'))
        .finally(() => this.schedulePass(Math.max(0, this.opts.intervalMs - (this.clock.now() - started))))
    }, delayMs)
  }

  /**
   * One pass over the inactive workers. Returns once every dial it started has settled. A pass
   * asked for while one is running joins that one instead of starting another.
   */
  runPass(): Promise<void> {
    if (this.current) return this.current.done
    if (this.closed) return Promise.resolve()
    const inactive = this.registry.inactive()
    if (inactive.length === 0) return Promise.resolve()
    const now = this.clock.now()
    // Not those dialled within the fast cap (or half an interval shorter than it): the schedule
    // has them, and another dial now would find what the last one found.
    const recent = now - Math.min(this.schedule.fastCapMs, this.opts.intervalMs / 2)
    const queue = inactive.filter((w) => !this.inflight.has(w.id) && !((this.lastDial.get(w.id) ?? -Infinity) > recent))
    this.opts.log.info({ count: inactive.length, due: queue.length, fast: this.schedule.size }, `Attempting to reconnect to ${inactive.length} inactive worker(s)...`)
    if (queue.length === 0) return Promise.resolve()
    // Most overdue first: never dialled, then the oldest dial.
    queue.sort((a, b) => (this.lastDial.get(a.id) ?? -Infinity) - (this.lastDial.get(b.id) ?? -Infinity))
    this.checkBudget((queue.length / this.budget.ratePerSec) * 1000, queue.length)
    // 1 ms resolution, so that a 20 ms stall shows; switched on only while the pass is heavy
    // (watchLoad): sampling at 1 ms costs ~1.8 % of a core by itself, and a pass the budget spreads
    // over the interval would pay that for the whole interval to measure a trickle that stalls
    // nothing.
    const delay = monitorEventLoopDelay({ resolution: 1 })
    let resolve!: () => void
    const done = new Promise<void>((r) => (resolve = r))
    const pass: Pass = { startedAt: now, queue, next: 0, dials: [], delay, sampling: false, lastStartAt: now, draining: false, done, resolve }
    this.current = pass
    this.pump()
    return done
  }

  /** Warns once when the budget cannot dial every inactive worker within the interval, and once when it can again. */
  private checkBudget(dispatchMs: number, dials: number): void {
    if (this.state !== 'running') return
    const short = dispatchMs > this.opts.intervalMs
    if (short === this.budgetShort) return
    this.budgetShort = short
    if (short) {
      this.opts.log.warn(
        { dials, ratePerSec: this.budget.ratePerSec, intervalMs: this.opts.intervalMs, dispatchMs: Math.round(dispatchMs) },
        `Reconnection budget short: ${dials} dial(s) a pass at --reconnect-rate ${this.budget.ratePerSec}/s take ${Math.round(dispatchMs / 1000)} s, more than the interval: inactive workers are dialled less often than once per interval (raise --reconnect-rate or --reconnect-interval, or unregister workers that are gone)`,
      )
    } else {
      this.opts.log.info({ ratePerSec: this.budget.ratePerSec, intervalMs: this.opts.intervalMs }, 'Reconnection budget sufficient again: every inactive worker is dialled once per interval')
    }
  }

  /**
   * Starts every dial that is due and that the budget allows, a chunk per event-loop turn, then
   * sets one timer for the next due re-dial or the next token. Runs again when a dial settles.
   */
  private pump(): void {
    if (this.closed) return
    if (this.asked.size > 0) this.serveAsked()
    const now = this.clock.now()
    let started = 0
    let blocked = false
    for (;;) {
      const pass = this.passHead()
      const fastDue = (this.schedule.nextDueAt() ?? Infinity) <= now
      if (!pass && !fastDue) break
      if (started >= DISPATCH_CHUNK) {
        this.soon()
        return
      }
      if (!this.budget.tryTake(now)) {
        blocked = true
        break
      }
      // Recently lost first, but one dial in four to the pass's backlog: nothing starves.
      if (fastDue && (!pass || this.fastStreak < 3)) {
        const id = this.schedule.takeDue(now)
        const w = id === null ? undefined : this.registry.get(id)
        if (!w || w.isActive || this.inflight.has(w.id)) {
          if (id !== null && (!w || w.isActive)) this.schedule.forget(id)
          this.budget.untake()
          continue
        }
        if (pass) this.fastStreak++
        // Its outcome is handled inside (never rejects); nobody waits for a re-dial.
        this.dialWorker(w, true).catch((err: unknown) => this.opts.log.error({ err, workerId: w.id }, 'reconnection re-dial failed unexpectedly'))
      } else {
        this.fastStreak = 0
        const current = this.current!
        current.next++
        current.lastStartAt = now
        current.dials.push(this.dialWorker(pass!, true))
      }
      started++
    }
    const pass = this.current
    if (pass && !pass.draining && pass.next >= pass.queue.length) this.drain(pass)
    this.watchLoad()
    // Blocked on the in-flight cap, the next dial to settle pumps; on the rate, the next token
    // does (something is due already); otherwise the next re-dial due.
    const wakeAt = !blocked ? (this.schedule.nextDueAt() ?? Infinity) : this.budget.inflight < this.budget.maxInflight ? now + Math.max(1, this.budget.waitMs(now)) : Infinity
    if (wakeAt !== Infinity) this.wake(wakeAt)
  }

  /**
   * The pass's event-loop delay is sampled while more than HEAVY_INFLIGHT dials are in flight (a
   * storm: many dials handed over and answered at once, which is what can stall the main thread),
   * and not below half of it. A pass that never got there reports no delay (null).
   */
  private watchLoad(): void {
    const pass = this.current
    if (!pass) return
    const n = this.inflight.size
    if (!pass.sampling && n > HEAVY_INFLIGHT) {
      pass.sampling = true
      pass.delay.enable()
    } else if (pass.sampling && n < HEAVY_INFLIGHT / 2) {
      pass.sampling = false
      pass.delay.disable()
    }
  }

  /** The next worker of the current pass still to dial, skipping those that no longer need it. */
  private passHead(): WorkerRecord | null {
    const pass = this.current
    if (!pass) return null
    while (pass.next < pass.queue.length) {
      const w = pass.queue[pass.next]!
      const dialled = this.lastDial.get(w.id) ?? -Infinity
      // It came back, was unregistered, is being dialled, or was dialled since the pass began.
      if (this.registry.get(w.id) === w && !w.isActive && !this.inflight.has(w.id) && dialled < pass.startedAt) return w
      pass.next++
    }
    return null
  }

  private soon(): void {
    if (this.immediate) return
    this.immediate = true
    setImmediate(() => {
      this.immediate = false
      this.pump()
    })
  }

  private wake(due: number): void {
    // On the tick: the dials due within one tick start together, so that a dial thread wakes once
    // for them, not once per dial.
    const at = Math.ceil(due / PUMP_TICK_MS) * PUMP_TICK_MS
    if (this.wakeTimer !== null) {
      if (this.wakeAt <= at) return
      this.clock.clearTimeout(this.wakeTimer)
    }
    this.wakeAt = at
    this.wakeTimer = this.clock.setTimeout(() => {
      this.wakeTimer = null
      this.wakeAt = Infinity
      this.pump()
    }, Math.max(0, at - this.clock.now()))
  }

  /** Every dial of the pass started: it ends when they have all settled. */
  private drain(pass: Pass): void {
    pass.draining = true
    Promise.all(pass.dials).then(() => {
      pass.sampling = false
      pass.delay.disable()
      if (this.current === pass) this.current = null
      // Everyone it queued was found or dialled by others meanwhile: not a pass.
      if (pass.dials.length === 0) return pass.resolve()
      const durationMs = this.clock.now() - pass.startedAt
      this.passes++
      // A pass shorter than the resolution has no sample (and an empty histogram's p99 is not 0).
      const sampled = pass.delay.count > 0
      this.last = { startedAt: pass.startedAt, durationMs, dials: pass.dials.length, loopDelayP99Ms: sampled ? pass.delay.percentile(99) / 1e6 : null, loopDelayMaxMs: sampled ? pass.delay.max / 1e6 : null }
      this.opts.log.debug({ ...this.last }, `Reconnection pass over ${pass.queue.length} worker(s) took ${durationMs} ms`)
      if (!this.closed) this.checkBudget(pass.lastStartAt - pass.startedAt, pass.dials.length)
      pass.resolve()
    }).catch((err: unknown) => {
      this.opts.log.error({ err }, 'Reconnection pass could not end cleanly; the next one runs on the interval')
      if (this.current === pass) this.current = null
      pass.resolve()
    })
  }

  /**
   * Dials one worker now (after an operator registers it, or at start-up), unless a dial to it is
   * already in flight, in which case that dial's result is returned. Outside the rate (an
   * operator's action, not to be made to wait a second behind a pass), inside the in-flight cap:
   * the cap bounds the sockets and memory dials hold, and an operator registering thousands at
   * once must not get past it. With the cap reached, the dial waits for the next place to free,
   * ahead of the schedule and the pass (the promise resolves with its result then).
   */
  dialNow(id: string): Promise<DialResult | null> {
    const w = this.registry.get(id)
    if (!w || w.isActive || this.closed) return Promise.resolve(null)
    const existing = this.inflight.get(id)
    if (existing) return existing.settled
    const waiting = this.asked.get(id)
    if (waiting) return waiting.promise
    if (this.budget.inflight < this.budget.maxInflight) return this.dialWorker(w, false)
    let resolve!: (r: DialResult | null) => void
    const promise = new Promise<DialResult | null>((r) => (resolve = r))
    this.asked.set(id, { promise, resolve })
    return promise
  }

  /**
   * Workers a load from the store heard of a moment ago (a takeover, a restart): each is dialled
   * now as dialNow dials (outside the rate, inside the in-flight cap), and joins the fast re-dial
   * schedule as lost now, so that one whose dial fails (hundreds registering at once can time a
   * dial out) is dialled again within the fast cap, not at the next pass 30 s on.
   */
  dialLoaded(ids: readonly string[]): void {
    if (this.closed) return
    const now = this.clock.now()
    for (const id of ids) {
      const w = this.registry.get(id)
      if (!w || w.isActive) continue
      this.schedule.lost(id, now)
      this.dialNow(id).catch((err: unknown) => this.opts.log.error({ err, workerId: id }, 'reconnection dial after a load failed unexpectedly'))
    }
  }

  /** Starts the operators' dials waiting for an in-flight place (dialNow), first come first served. */
  private serveAsked(): void {
    for (const [id, a] of this.asked) {
      if (this.budget.inflight >= this.budget.maxInflight) return
      this.asked.delete(id)
      const w = this.registry.get(id)
      if (!w || w.isActive) {
        a.resolve(null)
        continue
      }
      // dialWorker never rejects (its failures are outcomes or null); a dial begun meanwhile is shared.
      this.dialWorker(w, false).then(a.resolve, () => a.resolve(null))
    }
  }

  /** @param metered the budget's share was taken (by pump); otherwise the dial is counted in flight here */
  private dialWorker(w: WorkerRecord, metered: boolean): Promise<DialResult | null> {
    const existing = this.inflight.get(w.id)
    if (existing) {
      if (metered) this.budget.untake()
      return existing.settled
    }
    if (!metered) this.budget.takeUnmetered()
    const startedAt = this.clock.now()
    const pending = this.dialer.dial(masterRegisterTarget(w, this.opts, startedAt))
    const done = (): void => {
      if (this.inflight.get(w.id) === entry) this.inflight.delete(w.id)
      this.budget.release()
      if (this.registry.get(w.id) === w && !w.isActive) this.schedule.dialSettled(w.id, this.clock.now())
      this.pump()
    }
    // Its handlers run once the dial settles, after `entry` below is in place.
    const settled = pending.promise.then(
      (result) => {
        done()
        // Cancelled because its worker came back: the dial's thread counted it cancelled; it is
        // also a success. Only a dial the cancel really stopped: one whose answer came first (success, or a refusal
        // the worker's own RegisterWorker overtook) was counted by its thread as what it was.
        if (entry.foundActive && result.outcome === 'cancelled') {
          this.activeDuringDial++
          this.opts.counters?.add(C.DIAL_SUCCESS)
        }
        this.report(w.id, entry, result)
        return result
      },
      (err: unknown) => {
        done()
        // The pool itself failed (destroyed at shutdown, thread crash): not the worker's fault.
        if (!this.closed) this.opts.log.error({ workerId: w.id, err: (err as Error).message }, 'reconnection dial could not run')
        return null
      },
    )
    const entry: InflightDial = { ...pending, address: w.address, startedAt, settled, foundActive: false }
    this.inflight.set(w.id, entry)
    this.lastDial.set(w.id, startedAt)
    this.schedule.dialStarted(w.id)
    return settled
  }

  private report(id: string, entry: InflightDial, result: DialResult): void {
    if (entry.foundActive) return
    if (result.outcome === 'success' && this.registry.get(id)) {
      this.opts.log.info({ workerId: id, address: entry.address, elapsedMs: result.elapsedMs }, `Successfully reconnected to worker ${id} (${entry.address})`)
    } else {
      this.opts.log.debug({ workerId: id, address: entry.address, outcome: result.outcome, reason: result.message, elapsedMs: result.elapsedMs }, 'reconnection dial failed')
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
    this.registry.off('worker-active', this.onActive)
    this.registry.off('worker-inactive', this.onInactive)
    if (this.timer) this.clock.clearTimeout(this.timer)
    this.timer = null
    if (this.wakeTimer) this.clock.clearTimeout(this.wakeTimer)
    this.wakeTimer = null
    for (const a of this.asked.values()) a.resolve(null)
    this.asked.clear()
    const pending = [...this.inflight.values()]
    for (const entry of pending) entry.cancel()
    await Promise.allSettled(pending.map((e) => e.promise))
    this.inflight.clear()
    // The rest of a pass's backlog is dropped; the pass ends with the dials it started.
    const pass = this.current
    if (pass) {
      if (!pass.draining) this.drain(pass)
      await pass.done
    }
    const wasRunning = this.state === 'running'
    this.state = 'stopped'
    if (wasRunning) this.opts.log.info('Worker reconnection monitor stopped')
  }
}
