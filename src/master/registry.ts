import { EventEmitter } from 'node:events'
import { CloudaiError } from '../shared/errors.js'
import type { InactiveReason, RegistryEvents, RunningTaskInfo, SuspicionCleared, WorkerRecord, WorkerSpecs, WorkerUsage } from '../shared/types.js'
import type { StoredCredential } from '../shared/worker-credential.js'
import type { WorkerScheduling } from '../shared/worker-scheduling.js'

/** The worker a token hash belongs to, and which of its tokens it is. */
export interface TokenOwner {
  worker: WorkerRecord
  /** `previous`: the token a rotation replaced, accepted until `expiresAt` or until the new one is presented. */
  which: 'current' | 'previous'
  expiresAt: number | null
}

/**
 * The worker registry: the master's single owner of worker state. Registration is
 * authorization-based: only ids an operator registered may connect. Every state change is
 * emitted as an event; the store journal, liveness, the monitor and the API react to them
 * instead of reaching into this map.
 *
 * Heartbeats are the hot path, so they emit nothing: they update the record in place and mark it
 * for the store's next batch (drainHeartbeats).
 *
 * It also keeps the index from token hashes to workers that the master's call check looks tokens
 * up in (worker-auth.ts): every change of a credential goes through here, so the index can never
 * lag a rotation or an unregistration (which revokes at once). A credential is replaced, never
 * edited in place, like `usage` and `specs`.
 */
export class Registry extends EventEmitter<RegistryEvents> {
  private readonly workers = new Map<string, WorkerRecord>()
  /**
   * The active ones, kept beside the map: the liveness sweep walks these every second, and a
   * registry of thousands of dead workers must not cost it a walk over them all.
   */
  private readonly activeWorkers = new Set<WorkerRecord>()
  private readonly heartbeatDirty = new Set<string>()
  /** SHA-256 of each live token (current, and previous during a rotation) -> worker id. */
  private readonly tokens = new Map<string, string>()

  /**
   * Loads persisted workers. All start inactive: none has proven it is alive to us yet. An id memory
   * already holds keeps memory's state (it registered while the store was down). Returns the ids added.
   */
  load(records: Iterable<WorkerRecord>): string[] {
    const added: string[] = []
    for (const r of records) {
      if (this.workers.has(r.id)) continue
      const worker = { ...r, isActive: false, runningTasks: r.runningTasks ?? [], credential: r.credential ?? null, suspect: null }
      this.workers.set(r.id, worker)
      this.indexCredential(worker)
      added.push(r.id)
    }
    return added
  }

  get size(): number {
    return this.workers.size
  }

  get(id: string): WorkerRecord | undefined {
    return this.workers.get(id)
  }

  /** @throws CLOUDAI_UNKNOWN_WORKER */
  require(id: string): WorkerRecord {
    const w = this.workers.get(id)
    if (!w) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    return w
  }

  list(): WorkerRecord[] {
    return [...this.workers.values()]
  }

  values(): IterableIterator<WorkerRecord> {
    return this.workers.values()
  }

  /** The active workers, in the order they became active. */
  active(): IterableIterator<WorkerRecord> {
    return this.activeWorkers.values()
  }

  inactive(): WorkerRecord[] {
    const out: WorkerRecord[] = []
    for (const w of this.workers.values()) if (!w.isActive) out.push(w)
    return out
  }

  /**
   * `suspect` counts among `active` too: suspect workers are active ones that take no placements.
   * `inactive` leaves out drained workers that are inactive (stopped after a drain: no outage),
   * which `stopped` counts; `cordoned`, `draining`, `drained` count by scheduling state, active or not.
   */
  counts(): { total: number; active: number; inactive: number; stopped: number; suspect: number; cordoned: number; draining: number; drained: number } {
    let active = 0
    let suspect = 0
    let stopped = 0
    const by = { cordoned: 0, draining: 0, drained: 0 }
    for (const w of this.workers.values()) {
      if (w.isActive) active++
      if (w.suspect) suspect++
      const s = w.scheduling
      if (!s) continue
      const state = s.drain === null ? 'cordoned' : s.drain.drainedAt === null ? 'draining' : 'drained'
      by[state]++
      if (state === 'drained' && !w.isActive) stopped++
    }
    return { total: this.workers.size, active, inactive: this.workers.size - active - stopped, stopped, suspect, ...by }
  }

  /**
   * Operator registration (ids and addresses already validated by the caller). The same id with
   * the same address again is a no-op; with another address it is refused, so a typo can't
   * silently repoint a worker. `issue` is called only when the worker is new: its credential.
   */
  register(id: string, address: string, now: number, issue?: () => StoredCredential): { worker: WorkerRecord; created: boolean } {
    const existing = this.workers.get(id)
    if (existing) {
      if (existing.address === address) return { worker: existing, created: false }
      throw new CloudaiError(
        'CLOUDAI_WORKER_EXISTS',
        `worker ${id} is already registered at ${existing.address}; unregister it first to move it to ${address}`,
      )
    }
    const worker: WorkerRecord = {
      id,
      address,
      isActive: false,
      specs: null,
      usage: null,
      runningTasks: [],
      reportedAddress: null,
      registeredAt: now,
      connectedAt: null,
      lastHeartbeat: null,
      disconnectedAt: null,
      reconnects: 0,
      credential: issue?.() ?? null,
      suspect: null,
    }
    this.workers.set(id, worker)
    this.indexCredential(worker)
    this.emit('worker-registered', worker)
    return { worker, created: true }
  }

  /** @throws CLOUDAI_UNKNOWN_WORKER */
  unregister(id: string): WorkerRecord {
    const worker = this.require(id)
    this.workers.delete(id)
    this.heartbeatDirty.delete(id)
    // Revoked at once: the next call with its token finds nobody.
    this.unindexCredential(worker.credential)
    const wasActive = worker.isActive
    worker.isActive = false
    this.activeWorkers.delete(worker)
    worker.suspect = null
    this.emit('worker-unregistered', worker, { wasActive })
    return worker
  }

  /**
   * A registered worker called RegisterWorker: it becomes active with the specs it sent.
   * @throws CLOUDAI_WORKER_NOT_REGISTERED for an id no operator registered
   */
  connect(id: string, info: { specs: WorkerSpecs; reportedAddress: string | null }, now: number): WorkerRecord {
    const worker = this.workers.get(id)
    if (!worker) {
      throw new CloudaiError(
        'CLOUDAI_WORKER_NOT_REGISTERED',
        `worker ${id} is not registered with this master; an operator must run \`cloudai register ${id} <host:port>\` first`,
      )
    }
    const wasActive = worker.isActive
    const everConnected = worker.connectedAt !== null
    worker.specs = info.specs
    worker.reportedAddress = info.reportedAddress
    worker.lastHeartbeat = now
    // A suspect worker stays suspect: its call proves it reaches us, not that we reach it (a wrong
    // advertised address, a one-way partition). A probe or an answered AssignTask clears it.
    if (wasActive) {
      // A worker that restarted faster than the heartbeat timeout: same session as far as
      // anyone watching is concerned, but its specs may have changed.
      this.emit('worker-changed', worker)
      return worker
    }
    worker.isActive = true
    this.activeWorkers.add(worker)
    worker.connectedAt = now
    worker.runningTasks = []
    if (everConnected) worker.reconnects++
    this.emit('worker-active', worker, { reconnect: everConnected })
    return worker
  }

  /**
   * @throws CLOUDAI_UNKNOWN_WORKER for an unregistered id,
   *         CLOUDAI_WORKER_INACTIVE for a worker that must RegisterWorker again first
   */
  heartbeat(id: string, usage: WorkerUsage, runningTasks: RunningTaskInfo[], now: number): void {
    const worker = this.workers.get(id)
    if (!worker) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `heartbeat from ${id}, which is not registered with this master`)
    if (!worker.isActive) {
      throw new CloudaiError('CLOUDAI_WORKER_INACTIVE', `worker ${id} is not connected to this master; call RegisterWorker before sending heartbeats`)
    }
    worker.usage = usage
    worker.runningTasks = runningTasks
    worker.lastHeartbeat = now
    this.heartbeatDirty.add(id)
    // A suspect worker stays suspect (see connect): a heartbeat says nothing of the master's way to it.
  }

  /**
   * An active worker did not answer a call (AssignTask refused, unreachable, timed out): suspect
   * until it answers again (clearSuspect) or the heartbeat timeout makes it inactive. Emitted once
   * per suspicion; false when it was already suspect, or is not active.
   */
  markSuspect(id: string, reason: string, now: number): boolean {
    const worker = this.workers.get(id)
    if (!worker || !worker.isActive || worker.suspect) return false
    const suspicion = { since: now, reason }
    worker.suspect = suspicion
    this.emit('worker-suspect', worker, suspicion)
    return true
  }

  /** A suspect worker answered a call of the master's (a probe, an AssignTask): placements resume. False when it was not suspect. */
  clearSuspect(id: string, by: SuspicionCleared): boolean {
    const worker = this.workers.get(id)
    if (!worker?.suspect) return false
    worker.suspect = null
    this.emit('worker-cleared', worker, { by })
    return true
  }

  markInactive(id: string, reason: InactiveReason, now: number): boolean {
    const worker = this.workers.get(id)
    if (!worker || !worker.isActive) return false
    worker.isActive = false
    this.activeWorkers.delete(worker)
    // Inactive says more than suspect: the reconnection monitor dials it from now on.
    worker.suspect = null
    worker.disconnectedAt = now
    this.emit('worker-inactive', worker, { reason })
    return true
  }

  /**
   * An operator cordoned, uncordoned or drained the worker (see drains.ts): its scheduling state
   * is replaced, and persisted through the event. @throws CLOUDAI_UNKNOWN_WORKER
   */
  setScheduling(id: string, scheduling: WorkerScheduling | null): WorkerRecord {
    const worker = this.require(id)
    worker.scheduling = scheduling
    this.emit('worker-scheduling', worker)
    return worker
  }

  /** The worker a token hash belongs to (current or previous token), if any. */
  tokenOwner(hash: string): TokenOwner | undefined {
    const id = this.tokens.get(hash)
    const worker = id === undefined ? undefined : this.workers.get(id)
    const c = worker?.credential
    if (!worker || !c) return undefined
    if (c.hash === hash) return { worker, which: 'current', expiresAt: null }
    if (c.previous?.hash === hash) return { worker, which: 'previous', expiresAt: c.previous.expiresAt }
    return undefined
  }

  /**
   * A new token for a worker (`next`, from the master key). The one it replaces stays valid for
   * `graceMs` (until the worker presents the new one, if sooner); a token before that one, still in
   * its grace from an earlier rotation, stops at once. Returns when the old one stops at the latest
   * (null: at once).
   * @throws CLOUDAI_UNKNOWN_WORKER
   */
  rotateCredential(id: string, next: StoredCredential, graceMs: number, now: number): { worker: WorkerRecord; previousValidUntil: number | null } {
    const worker = this.require(id)
    const old = worker.credential
    const previous = old && graceMs > 0 ? { nonce: old.nonce, hash: old.hash, expiresAt: now + graceMs } : null
    this.unindexCredential(old)
    worker.credential = { ...next, enforced: old?.enforced === true || next.enforced, previous }
    this.indexCredential(worker)
    this.emit('worker-credential', worker, { change: 'rotated' })
    return { worker, previousValidUntil: previous?.expiresAt ?? null }
  }

  /**
   * The worker presented its current token for the first time: noted (and persisted through the
   * event), the token before it stops working, and from now on its id needs a token on every call.
   */
  credentialPresented(id: string, now: number): void {
    const worker = this.workers.get(id)
    const c = worker?.credential
    if (!worker || !c || c.presentedAt !== null) return
    if (c.previous) this.tokens.delete(c.previous.hash)
    worker.credential = { ...c, presentedAt: now, enforced: true, previous: null }
    this.emit('worker-credential', worker, { change: 'presented' })
  }

  /**
   * The worker proved itself by its client certificate (mTLS): from now on its id needs a token or
   * that certificate on every call, as once it has presented a token. Its token, presented or not,
   * keeps its state (the certificate ends no grace). A worker without a credential (from a store of
   * an earlier release) has no place to keep this: it stays as it is until a token is rotated.
   */
  certificatePresented(id: string): void {
    const worker = this.workers.get(id)
    const c = worker?.credential
    if (!worker || !c || c.enforced) return
    worker.credential = { ...c, enforced: true }
    this.emit('worker-credential', worker, { change: 'certificate' })
  }

  private indexCredential(worker: WorkerRecord): void {
    const c = worker.credential
    if (!c) return
    this.tokens.set(c.hash, worker.id)
    if (c.previous) this.tokens.set(c.previous.hash, worker.id)
  }

  private unindexCredential(c: StoredCredential | null): void {
    if (!c) return
    this.tokens.delete(c.hash)
    if (c.previous) this.tokens.delete(c.previous.hash)
  }

  /** Ids whose heartbeat fields changed since the last call; the store journal batches them. */
  drainHeartbeats(): string[] {
    if (this.heartbeatDirty.size === 0) return []
    const ids = [...this.heartbeatDirty]
    this.heartbeatDirty.clear()
    return ids
  }
}
