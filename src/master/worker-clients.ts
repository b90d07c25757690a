import { DIAL_CHANNEL_OPTIONS, loadProto, type MasterWorkerClient } from '../shared/proto.js'
import { NO_CLUSTER_AUTH, type ClusterAuth } from '../shared/cluster-auth.js'
import { clientKeepaliveOptions } from '../shared/keepalive.js'

// Long-lived: without pings, a worker that vanished without a FIN (power cut, partition) would
// keep a READY channel whose every call times out until TCP gives up (~15 min). With them it is
// closed within 20 s of the silence and the next call connects afresh.
const CHANNEL_OPTIONS = { ...DIAL_CHANNEL_OPTIONS, ...clientKeepaliveOptions() }

/**
 * One long-lived gRPC client per worker for AssignTask and CancelTask, on the main thread (a few
 * calls per task, unlike the reconnection dials). Replaced when a worker's address changes and
 * closed when it is unregistered. Every client uses the master's TLS credentials and carries its
 * cluster token, so a worker that requires the token takes tasks only from a master that has it.
 */
export class WorkerClients {
  private readonly clients = new Map<string, { address: string; client: MasterWorkerClient }>()

  constructor(private readonly auth: ClusterAuth = NO_CLUSTER_AUTH) {}

  get(workerId: string, address: string): MasterWorkerClient {
    const cur = this.clients.get(workerId)
    if (cur && cur.address === address) return cur.client
    cur?.client.close()
    const client = new (loadProto().Client)(address, this.auth.channelCredentials(), this.auth.clientOptions(CHANNEL_OPTIONS))
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
