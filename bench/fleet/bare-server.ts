// The heartbeat-ingest and scaling baseline: a bare @grpc/grpc-js server of the same service that accepts every
// heartbeat (unary and streamed) and only counts it. Run as a child process, like the master, so
// that both compete with the load generator on the same terms. IPC: it sends {port} once listening
// and answers {type:'count'} with {count}.
import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../../src/shared/proto.js'
import { serverKeepaliveOptions } from '../../src/shared/keepalive.js'
import type { HeartbeatAckMsg, HeartbeatMsg, RegisterAckMsg, WorkerInfoMsg } from '../../src/shared/wire.js'

const proto = loadProto()
let count = 0
// The transport as the master sets it up (src/master/grpc.ts), so that the grpc-js work is the same
// in both: HTTP/2 keepalive pings on every connection every 10 s (the master must notice a silent
// peer, src/shared/keepalive.ts), and channelz off. In an A/B run of this server with and without
// the pings (issue 17), they cost it 15-18 us per heartbeat at 3,000-5,000 streamed workers.
const server = new grpc.Server({ 'grpc.enable_channelz': 0, ...serverKeepaliveOptions() })
const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<unknown>): void => cb({ code: grpc.status.UNIMPLEMENTED, details: 'bare server' } as grpc.ServiceError)
server.addService(proto.service, {
  RegisterWorker: (_call: grpc.ServerUnaryCall<WorkerInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => cb(null, { success: true, message: 'ok' }),
  SendHeartbeat: (_call: grpc.ServerUnaryCall<HeartbeatMsg, HeartbeatAckMsg>, cb: grpc.sendUnaryData<HeartbeatAckMsg>) => {
    count++
    cb(null, { success: true })
  },
  StreamHeartbeats: (call: grpc.ServerDuplexStream<HeartbeatMsg, HeartbeatAckMsg>) => {
    call.on('data', () => count++)
    call.on('end', () => call.end())
    call.on('error', () => {})
  },
  ReportTaskCompletion: unimplemented, MasterRegister: unimplemented, AssignTask: unimplemented, CancelTask: unimplemented,
})
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err
  process.send!({ port })
})
process.on('message', (m: { type: string }) => {
  if (m.type === 'count') process.send!({ count })
  // Forced: heartbeat streams never end by themselves. A clean exit writes a --cpu-prof profile.
  else if (m.type === 'stop') {
    server.forceShutdown()
    process.exit(0)
  }
})
process.on('disconnect', () => process.exit(0))
