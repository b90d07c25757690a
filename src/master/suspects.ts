import type { Logger } from '../shared/log.js'
import { Backoff } from '../shared/backoff.js'
import { systemClock, type Clock, type TimerHandle } from '../shared/clock.js'
import type { WorkerRecord, WorkerSuspicion } from '../shared/types.js'
import { masterRegisterTarget, type Dialer, type PendingDial } from './reconnect/dialer.js'
import type { Registry } from './registry.js'

// Probes of suspect workers. A worker is suspect when an AssignTask to it got no answer (the queue
// asks the registry, which owns the state and emits `worker-suspect`); the queue places nothing on
// it meanwhile. Here each suspect worker is dialled with MasterRegister on the reconnection dialer
// (the same dial, the same thread pool, the same proof), with capped exponential backoff: a worker
// that answers is cleared (registry.clearSuspect, `worker-cleared`) and the queue places on it
// again; one that does not is dialled less and less often until the heartbeat timeout makes it
// inactive (liveness), where the reconnection monitor takes over. An AssignTask it answers clears it
// too (the queue); its heartbeats and RegisterWorker calls do not: they prove only that it reaches
// us, and a worker we cannot reach (a wrong advertised address, a one-way partition) that heartbeats
// must not get a placement per heartbeat. MasterRegister is what proves the worker is there and
// still ours: a worker that follows us answers it at once ("already connected"), and one that
// restarted on the same address registers again because of it.

export interface SuspectProbeOptions {
  masterId: string
  /** Called at dial time: the gRPC port is only known once the server is bound. */
  masterAddress: () => string
  dialTimeoutMs: number
  /** The master's epoch (issue 19), read at each probe and sent with MasterRegister; default NO_EPOCH. */
  epoch?: () => number
  log: Logger
  /** First probe after about this long, then doubling (full jitter) up to maxDelayMs. */
  baseDelayMs?: number
  maxDelayMs?: number
  clock?: Clock
  /** The backoff's jitter (tests pin it). */
  random?: () => number
}

export const SUSPECT_PROBE_DEFAULTS = { baseDelayMs: 200, maxDelayMs: 5_000 } as const

/**
 * A worker suspect again within this long of being cleared goes on with the backoff it had, so
 * that one which answers MasterRegister and still fails every AssignTask is probed less and less
 * often, not every baseDelayMs forever.
 */
const BACKOFF_MEMORY_MS = 60_000

interface Probe {
  worker: WorkerRecord
  backoff: Backoff
  timer: TimerHandle | null
  dial: PendingDial | null
}

export class SuspectProbes {
  private readonly probes = new Map<string, Probe>()
  /** The backoff of each worker's last suspicion, and when that suspicion ended. */
  private readonly recent = new Map<string, { backoff: Backoff; endedAt: number }>()
  private readonly pending = new Set<Promise<void>>()
  private readonly clock: Clock
  private readonly baseDelayMs: number
  private readonly maxDelayMs: number
  private running = false

  private readonly onSuspect = (w: WorkerRecord, s: WorkerSuspicion): void => {
    this.opts.log.warn(
      { workerId: w.id, address: w.address, reason: s.reason },
      `Worker ${w.id} is suspect: ${s.reason}; no tasks are placed on it until it answers a probe (or becomes inactive at the heartbeat timeout)`,
    )
    this.begin(w)
  }
  private readonly onCleared = (w: WorkerRecord, meta: { by: string }): void => {
    const p = this.probes.get(w.id)
    this.end(w.id)
    this.opts.log.info({ workerId: w.id, by: meta.by, probing: p !== undefined }, `Worker ${w.id} answers again (${meta.by}): no longer suspect, tasks are placed on it`)
  }
  private readonly onGone = (w: WorkerRecord): void => this.end(w.id)
  private readonly onUnregistered = (w: WorkerRecord): void => {
    this.end(w.id)
    this.recent.delete(w.id)
  }

  constructor(
    private readonly registry: Registry,
    private readonly dialer: Dialer,
    private readonly opts: SuspectProbeOptions,
  ) {
    this.clock = opts.clock ?? systemClock
    this.baseDelayMs = opts.baseDelayMs ?? SUSPECT_PROBE_DEFAULTS.baseDelayMs
    this.maxDelayMs = opts.maxDelayMs ?? SUSPECT_PROBE_DEFAULTS.maxDelayMs
  }

  /** Suspect workers being probed now. */
  get size(): number {
    return this.probes.size
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.registry.on('worker-suspect', this.onSuspect)
    this.registry.on('worker-cleared', this.onCleared)
    this.registry.on('worker-inactive', this.onGone)
    this.registry.on('worker-unregistered', this.onUnregistered)
  }

  private begin(w: WorkerRecord): void {
    if (!this.running || this.probes.has(w.id)) return
    const last = this.recent.get(w.id)
    const backoff = last && this.clock.now() - last.endedAt < BACKOFF_MEMORY_MS ? last.backoff : new Backoff(this.baseDelayMs, this.maxDelayMs, this.opts.random)
    const probe: Probe = { worker: w, backoff, timer: null, dial: null }
    this.probes.set(w.id, probe)
    this.schedule(probe)
  }

  private schedule(probe: Probe): void {
    probe.timer = this.clock.setTimeout(() => {
      probe.timer = null
      this.dial(probe)
    }, probe.backoff.next())
  }

  private dial(probe: Probe): void {
    const w = probe.worker
    if (this.probes.get(w.id) !== probe) return
    const pending = this.dialer.dial(masterRegisterTarget(w, this.opts, this.clock.now()))
    probe.dial = pending
    const settled = pending.promise.then(
      (result) => {
        probe.dial = null
        // Cleared, gone or inactive meanwhile: this probe is over.
        if (this.probes.get(w.id) !== probe) return
        if (result.outcome === 'success') {
          this.registry.clearSuspect(w.id, 'probe')
          return
        }
        this.opts.log.debug({ workerId: w.id, outcome: result.outcome, reason: result.message }, `Probe of suspect worker ${w.id} failed (${result.outcome})`)
        this.schedule(probe)
      },
      (err: unknown) => {
        probe.dial = null
        // The pool itself failed (shutdown, a thread crash): not the worker's answer; tried again later.
        if (this.probes.get(w.id) !== probe) return
        this.opts.log.error({ workerId: w.id, err: (err as Error).message }, `Probe of suspect worker ${w.id} could not run`)
        this.schedule(probe)
      },
    )
    this.pending.add(settled)
    settled.then(
      () => this.pending.delete(settled),
      (err: unknown) => {
        this.pending.delete(settled)
        this.opts.log.error({ workerId: w.id, err }, `Probe of suspect worker ${w.id} ended in an error`)
      },
    )
  }

  private end(id: string): void {
    const probe = this.probes.get(id)
    if (!probe) return
    this.probes.delete(id)
    this.recent.set(id, { backoff: probe.backoff, endedAt: this.clock.now() })
    if (probe.timer) this.clock.clearTimeout(probe.timer)
    probe.timer = null
    probe.dial?.cancel()
  }

  async close(): Promise<void> {
    if (!this.running) return
    this.running = false
    this.registry.off('worker-suspect', this.onSuspect)
    this.registry.off('worker-cleared', this.onCleared)
    this.registry.off('worker-inactive', this.onGone)
    this.registry.off('worker-unregistered', this.onUnregistered)
    for (const id of [...this.probes.keys()]) this.end(id)
    this.recent.clear()
    await Promise.allSettled([...this.pending])
  }
}
