// The dial pool's side of the reconnection seam (workers/dial.ts is its Piscina entry file): one
// task is a batch of dials (DialBatch), run at once on this thread, their results posted back on
// the thread's parentPort a turn's worth at a time. One message each way per batch and turn, not
// per dial: taking thousands of per-dial messages stalled both this thread's loop and the master's.
import { getPriority, setPriority } from 'node:os'
import { isMainThread, parentPort, threadId, workerData } from 'node:worker_threads'
import { ClusterAuth, NO_CLUSTER_AUTH } from '../../shared/cluster-auth.js'
import { dialMasterRegister } from './dial.js'
import { DIAL_RESULTS, DIAL_THREAD_NICE, type DialBatch, type DialBatchDone, type DialBatchResults, type DialResult, type DialResultsMessage, type DialThreadData } from './protocol.js'
import { MasterKey } from '../../shared/worker-credential.js'
import { compactingCollector, IdleHeap } from './idle-heap.js'

// Built once per thread from what the pool was given at start (Piscina passes its workerData
// through as the thread's): the TLS context is parsed here once and shared by every dial, and so
// is the master key.
const data = workerData as Partial<DialThreadData> | null | undefined
const auth = data?.cluster && (data.cluster.token !== null || data.cluster.tls !== null) ? new ClusterAuth(data.cluster) : NO_CLUSTER_AUTH
const key = data?.masterKey ? MasterKey.fromBytes(data.masterKey) : null
// One object for the thread's life: the one CancelWatch (and waiter) on it is found by identity.
const cancelFlags = data?.cancelFlags ?? null
// Errors here are outcomes, never logged with a stack (results carry their message only): a refused
// dial's ECONNREFUSED, grpc-js's errors. Capturing a stack for each was a share of a dead dial's CPU.
Error.stackTraceLimit = 0
// Compacts the heap once the thread is idle after a burst grew it (idle-heap.ts). Without the
// dialer's lock (a thread not started by it: tests) it never does.
const heapLock = data?.heapLock ?? null
const heap = heapLock ? new IdleHeap(compactingCollector(heapLock)) : null

// Below the main thread's priority (Linux keeps a nice value per thread, and setpriority of "0"
// sets the calling thread's only). On two cores a storm of dials at the same priority takes the
// core from the main thread: a GET /api/workers list built in 3 ms of CPU took 150 ms of wall time
// in a 5,000-worker pass. Dials wait on sockets and their deadlines are seconds; the API and the
// heartbeats are what must not wait. Elsewhere (macOS: the whole process) it is left alone.
if (process.platform === 'linux' && !isMainThread) {
  try {
    // Never above what it was (a master started with nice 15 keeps its dials at 15).
    setPriority(0, Math.max(getPriority(0), DIAL_THREAD_NICE))
  } catch {
    // A sandbox that forbids it: the thread runs at the master's priority, as before.
  }
}

/**
 * Collects a batch's results and posts them once per turn of this thread's loop; those of the last
 * turn go back with the task's answer. Off a worker thread (no parentPort) they all do.
 */
class ResultPoster {
  private pending: DialBatchResults = []
  private scheduled = false
  private posted = 0
  private done = false

  constructor(private readonly batch: number) {}

  push(index: number, result: DialResult): void {
    this.pending.push({ index, result })
    if (this.scheduled || !parentPort) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  private flush(): void {
    this.scheduled = false
    if (this.done || this.pending.length === 0) return
    const results = this.pending
    this.pending = []
    this.posted += results.length
    parentPort!.postMessage({ kind: DIAL_RESULTS, batch: this.batch, results } satisfies DialResultsMessage)
  }

  /** The batch is over: what is still pending goes with the answer. */
  close(): DialBatchDone {
    this.done = true
    const results = this.pending
    this.pending = []
    return { posted: this.posted, results }
  }
}

export default async function dialBatch(batch: DialBatch): Promise<DialBatchDone> {
  const { dials, counters } = batch
  const out = new ResultPoster(batch.id)
  heap?.begin()
  try {
    await Promise.all(dials.map((d, index) =>
      dialMasterRegister({ ...d, cancelFlags, counters }, auth, key).then(
        (result) => out.push(index, result),
        // dialMasterRegister turns every failure of the dial into an outcome; a throw is a bug here.
        (err: unknown) => out.push(index, { workerId: d.workerId, outcome: 'error', message: `the dial failed: ${err instanceof Error ? err.message : String(err)}`, elapsedMs: 0, thread: threadId }),
      )))
  } finally {
    heap?.end()
  }
  return out.close()
}
