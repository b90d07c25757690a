// Piscina task file: one reconnection dial per task, run on the dial pool's threads so that
// hundreds of concurrent channel set-ups never stall the master's main thread.
import { workerData } from 'node:worker_threads'
import { ClusterAuth, NO_CLUSTER_AUTH } from '../src/shared/cluster-auth.js'
import { dialMasterRegister, type DialRequest, type DialResult } from '../src/master/dial.js'
import type { DialThreadData } from '../src/master/dialer.js'
import { MasterKey } from '../src/shared/worker-credential.js'

// Built once per thread from what the pool was given at start (Piscina passes its workerData
// through as the thread's): the TLS context is parsed here once and shared by every dial, and so
// is the master key.
const data = workerData as Partial<DialThreadData> | null | undefined
const auth = data?.cluster && (data.cluster.token !== null || data.cluster.tls !== null) ? new ClusterAuth(data.cluster) : NO_CLUSTER_AUTH
const key = data?.masterKey ? MasterKey.fromBytes(data.masterKey) : null

export default function dial(req: DialRequest): Promise<DialResult> {
  return dialMasterRegister(req, auth, key)
}
