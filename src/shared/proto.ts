import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import type {
  AckMsg, HeartbeatAckMsg, HeartbeatMsg, LogChunkMsg, MasterInfoMsg, RegisterAckMsg, TaskAckMsg, TaskIdMsg, TaskLogRequestMsg, TaskMsg, TaskResultMsg, WorkerInfoMsg,
} from './wire.js'

/** proto/ sits at the package root; this file runs compiled from dist/src/shared/. */
export const PROTO_PATH = fileURLToPath(new URL('../../../proto/cloudai.proto', import.meta.url))

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  oneofs: true,
}

type Unary<Req, Res> = (req: Req, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall

/** The MasterWorker client, typed with the wire shapes. */
export interface MasterWorkerClient extends grpc.Client {
  StreamHeartbeats: (metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>) => grpc.ClientDuplexStream<HeartbeatMsg, HeartbeatAckMsg>
  RegisterWorker: Unary<WorkerInfoMsg, RegisterAckMsg>
  SendHeartbeat: Unary<HeartbeatMsg, HeartbeatAckMsg>
  ReportTaskCompletion: Unary<TaskResultMsg, AckMsg>
  MasterRegister: Unary<MasterInfoMsg, RegisterAckMsg>
  AssignTask: Unary<TaskMsg, TaskAckMsg>
  CancelTask: Unary<TaskIdMsg, TaskAckMsg>
  StreamTaskLogs: (request: TaskLogRequestMsg, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>) => grpc.ClientReadableStream<LogChunkMsg>
}

export interface MasterWorkerProto {
  service: grpc.ServiceDefinition
  Client: new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => MasterWorkerClient
}

let cached: MasterWorkerProto | undefined

/** Loads the contract once per thread (each worker thread has its own module instance). */
export function loadProto(): MasterWorkerProto {
  if (cached) return cached
  const definition = protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS)
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { cluster: { MasterWorker: grpc.ServiceClientConstructor } }
  const ctor = pkg.cluster.MasterWorker
  cached = { service: ctor.service, Client: ctor as unknown as MasterWorkerProto['Client'] }
  return cached
}

/** Promise form of a unary call with a deadline. */
export function callUnary<Req, Res>(
  client: MasterWorkerClient,
  method: Exclude<keyof Omit<MasterWorkerClient, keyof grpc.Client>, 'StreamTaskLogs' | 'StreamHeartbeats'>,
  request: Req,
  timeoutMs: number,
  metadata: grpc.Metadata = new grpc.Metadata(),
): { promise: Promise<Res>; cancel: () => void } {
  let call: grpc.ClientUnaryCall | undefined
  const promise = new Promise<Res>((resolve, reject) => {
    const fn = client[method] as unknown as Unary<Req, Res>
    call = fn.call(client, request, metadata, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(err)
      else resolve(res as Res)
    })
  })
  return { promise, cancel: () => call?.cancel() }
}

/** Channel options shared by every short-lived client: fail fast instead of waiting for reconnects. */
export const DIAL_CHANNEL_OPTIONS: grpc.ClientOptions = {
  'grpc.enable_retries': 0,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
  'grpc.use_local_subchannel_pool': 1,
  // Nothing reads channelz (no channelz service is served): on, every channel, subchannel and call
  // leaves trace objects behind, most of the garbage a dial thread makes in a burst of dials.
  'grpc.enable_channelz': 0,
}
