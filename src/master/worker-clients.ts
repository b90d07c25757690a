import * as grpc from '@grpc/grpc-js'
import { NO_EPOCH } from '../shared/leadership.js'
import { DIAL_CHANNEL_OPTIONS, loadProto, type MasterWorkerClient } from '../shared/proto.js'
import { NO_CLUSTER_AUTH, type ClusterAuth } from '../shared/cluster-auth.js'
import type { WorkerRecord } from '../shared/types.js'
import { proofMetadata, type MasterKey, type MasterMethod } from '../shared/worker-credential.js'
import { clientKeepaliveOptions } from '../shared/keepalive.js'

// Long-lived: without pings, a worker that vanished without a FIN (power cut, partition) would
// keep a READY channel whose every call times out until TCP gives up (~15 min). With them it is
// closed within 20 s of the silence and the next call connects afresh.
const CHANNEL_OPTIONS = { ...DIAL_CHANNEL_OPTIONS, ...clientKeepaliveOptions() }

/** The calls that carry the master's epoch (issue 19); StreamTaskLogs, also on these clients, does not. */
const EPOCH_PATHS: ReadonlySet<string> = new Set(['/cluster.MasterWorker/AssignTask', '/cluster.MasterWorker/CancelTask'])

/**
 * One long-lived gRPC client per worker for AssignTask and CancelTask, on the main thread (a few
 * calls per task, unlike the reconnection dials). Replaced when a worker's address changes and
 * closed when it is unregistered. Every client uses the master's TLS credentials and carries its
 * cluster token, so a worker that requires the token takes tasks only from a master that has it.
 * Each call also carries the master's proof for that worker (proof()), made with the master key.
 *
 * AssignTask and CancelTask carry the master's epoch (master_epoch, issue 19), stamped here as each
 * message goes out, read from `epoch` at that moment: whoever builds the message (the queue, the
 * cancels) need not know about it, and a message built before a takeover cannot carry an old one.
 */
export class WorkerClients {
  private readonly clients = new Map<string, { address: string; client: MasterWorkerClient }>()

  private readonly options: grpc.ClientOptions

  /** @param epoch the master's epoch from its lease (default: NO_EPOCH, a master without one) */
  constructor(private readonly auth: ClusterAuth = NO_CLUSTER_AUTH, private readonly key: MasterKey | null = null, epoch: () => number = () => NO_EPOCH) {
    const stamp: grpc.Interceptor = (options, nextCall) => {
      if (!EPOCH_PATHS.has(options.method_definition.path)) return new grpc.InterceptingCall(nextCall(options))
      return new grpc.InterceptingCall(nextCall(options), {
        sendMessage: (message: object, next: (message: object) => void) => next({ ...message, master_epoch: epoch() }),
      })
    }
    this.options = auth.clientOptions({ ...CHANNEL_OPTIONS, interceptors: [stamp] })
  }

  /**
   * The metadata of one call to `worker`: a proof per token it may hold (during a rotation, the old
   * one too), bound to the method and `subject`. Empty for a worker without a credential, or when
   * this master has no key (tests): such a worker serves the call only if it needs no proof.
   */
  proof(worker: WorkerRecord, method: MasterMethod, subject: string, now = Date.now()): grpc.Metadata {
    return proofMetadata(this.key && worker.credential ? this.key.proofs(worker.id, worker.credential, method, subject, now) : [], new grpc.Metadata())
  }

  get(workerId: string, address: string): MasterWorkerClient {
    const cur = this.clients.get(workerId)
    if (cur && cur.address === address) return cur.client
    cur?.client.close()
    const client = new (loadProto().Client)(address, this.auth.channelCredentials(), this.options)
    this.clients.set(workerId, { address, client })
    return client
  }

  drop(workerId: string): void {
    this.clients.get(workerId)?.client.close()
    this.clients.delete(workerId)
  }

  close(): void {
    for (const { client } of this.clients.values()) client.close()
    this.clients.clear()
  }
}
