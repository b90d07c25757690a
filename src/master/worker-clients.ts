import * as grpc from '@grpc/grpc-js'
import { DIAL_CHANNEL_OPTIONS, loadProto, type MasterWorkerClient } from '../shared/proto.js'

/**
 * One long-lived gRPC client per worker for AssignTask and CancelTask, on the main thread (a few
 * calls per task, unlike the reconnection dials). Replaced when a worker's address changes and
 * closed when it is unregistered.
 */
export class WorkerClients {
  private readonly clients = new Map<string, { address: string; client: MasterWorkerClient }>()

  get(workerId: string, address: string): MasterWorkerClient {
    const cur = this.clients.get(workerId)
    if (cur && cur.address === address) return cur.client
    cur?.client.close()
    const client = new (loadProto().Client)(address, grpc.credentials.createInsecure(), DIAL_CHANNEL_OPTIONS)
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
