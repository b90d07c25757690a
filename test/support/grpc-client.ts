import { readFileSync } from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import type { TestContext } from 'node:test'
import { CLUSTER_TOKEN_METADATA } from '../../src/shared/cluster-auth.js'
import { callUnary, loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import { AUTHORIZATION_METADATA, MASTER_PROOF_METADATA } from '../../src/shared/worker-credential.js'
import type { HeartbeatMsg } from '../../src/shared/wire.js'

// A raw grpc-js client with the project's proto, for calls no cloudai process would make: an
// attacker's, or a worker's made by hand. Credentials are whatever the test puts on each call.

export type Method = 'RegisterWorker' | 'SendHeartbeat' | 'ReportTaskCompletion' | 'MasterRegister' | 'AssignTask' | 'CancelTask'

export interface CallCredentials {
  /** Sent as `authorization: Bearer <token>`. */
  token?: string
  /** Sent as `cloudai-master-proof` values. */
  proofs?: string[]
  clusterToken?: string
}

export function metadataOf(c: CallCredentials = {}): grpc.Metadata {
  const md = new grpc.Metadata()
  if (c.token !== undefined) md.set(AUTHORIZATION_METADATA, `Bearer ${c.token}`)
  for (const p of c.proofs ?? []) md.add(MASTER_PROOF_METADATA, p)
  if (c.clusterToken !== undefined) md.set(CLUSTER_TOKEN_METADATA, c.clusterToken)
  return md
}

export class RawClient {
  readonly client: MasterWorkerClient

  /** `tls`: speak TLS, trusting `caPath` and presenting `certPath`/`keyPath` (PEM files, as test/support/ca.ts makes them). */
  constructor(t: TestContext, address: string, tls?: { caPath: string; certPath: string; keyPath: string }) {
    const creds = tls
      ? grpc.credentials.createSsl(readFileSync(tls.caPath), readFileSync(tls.keyPath), readFileSync(tls.certPath))
      : grpc.credentials.createInsecure()
    this.client = new (loadProto().Client)(address, creds, { 'grpc.enable_retries': 0 })
    t.after(() => this.client.close())
  }

  call<Res = { success: boolean; message?: string }>(method: Method, request: object, creds: CallCredentials = {}): Promise<Res> {
    return callUnary<object, Res>(this.client, method, request, 5000, metadataOf(creds)).promise
  }

  /** The call's refusal: its gRPC status and cloudai code. Throws if the call succeeded. */
  async refusal(method: Method, request: object, creds: CallCredentials = {}): Promise<{ code: grpc.status; cloudai: string; details: string }> {
    try {
      const res = await this.call(method, request, creds)
      throw new Error(`${method} was accepted: ${JSON.stringify(res)}`)
    } catch (err) {
      const e = err as grpc.ServiceError
      if (typeof e.code !== 'number') throw err
      return { code: e.code, cloudai: String(e.metadata?.get('cloudai-error-code')[0] ?? ''), details: e.details }
    }
  }

  /** Opens StreamHeartbeats, writes `beats`, and resolves with the status the master ends it with. */
  stream(beats: object[], creds: CallCredentials = {}): Promise<grpc.StatusObject> {
    const call = this.client.StreamHeartbeats(metadataOf(creds))
    return new Promise((resolve) => {
      call.on('error', () => {})
      call.on('data', () => {})
      call.on('status', resolve)
      for (const b of beats) call.write(b as HeartbeatMsg)
      call.end()
    })
  }
}
