import type { ClusterStatus, WorkerView } from './views.js'

/**
 * What an operator can do to a running master. The HTTP API and the interactive prompt are two
 * front ends of this one interface; the Master implements it. Every method validates its input
 * and throws CloudaiError with a stable code on bad input.
 */
export interface MasterControl {
  listWorkers(): WorkerView[]
  /** @throws CLOUDAI_BAD_WORKER_ID, CLOUDAI_UNKNOWN_WORKER */
  getWorker(id: string): WorkerView
  /**
   * Registers a worker from an operator body `{worker_id, worker_ip}` (`address` is an alias of
   * worker_ip). Works while the worker is offline: it is stored inactive and dialled at once and
   * then by the reconnection monitor. Registering the same id and address again is a no-op
   * (created=false); the same id with another address is CLOUDAI_WORKER_EXISTS.
   * `persisted` says whether the store has it already (false while the store is failing: the
   * registration still holds in memory and is written when the store answers).
   */
  registerWorker(body: unknown): Promise<{ worker: WorkerView; created: boolean; persisted: boolean }>
  /** Removes the worker from memory and the store and cancels every dial to it. */
  unregisterWorker(id: string): Promise<{ worker_id: string; persisted: boolean }>
  status(): ClusterStatus
}
