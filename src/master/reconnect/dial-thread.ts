// The dial pool's side of the reconnection seam (workers/dial.ts is its Piscina entry file): one
// dial per task, on the pool's threads, so that hundreds of concurrent channel set-ups never stall
// the master's main thread.
import { workerData } from 'node:worker_threads'
import { ClusterAuth, NO_CLUSTER_AUTH } from '../../shared/cluster-auth.js'
import { dialMasterRegister } from './dial.js'
import type { DialRequest, DialResult, DialThreadData } from './protocol.js'
import { MasterKey } from '../../shared/worker-credential.js'

// Built once per thread from what the pool was given at start (Piscina passes its workerData
// through as the thread's): the TLS context is parsed here once and shared by every dial, and so
// is the master key.
const data = workerData as Partial<DialThreadData> | null | undefined
const auth = data?.cluster && (data.cluster.token !== null || data.cluster.tls !== null) ? new ClusterAuth(data.cluster) : NO_CLUSTER_AUTH
const key = data?.masterKey ? MasterKey.fromBytes(data.masterKey) : null

export default function dial(req: DialRequest): Promise<DialResult> {
  return dialMasterRegister(req, auth, key)
}
