import type * as grpc from '@grpc/grpc-js'

// HTTP/2 keepalive pings on every gRPC connection between master and workers, in both directions,
// so that a peer that stopped answering (SIGSTOP, a cut link, a NAT that forgot the mapping) is
// noticed within KEEPALIVE.timeMs + KEEPALIVE.timeoutMs (20 s) instead of when TCP gives up
// (~15 min of retransmissions). A connection that is not acknowledged in time is closed: its calls
// fail with UNAVAILABLE and the caller's usual path takes over (a worker registers again; the
// master's heartbeat stream counts as broken and liveness decides as always).
//
// The two ends must agree on the ping rate, since a server may punish pings that come too often:
// - Our servers are grpc-js: grpc-js 1.14 enforces no ping policy at all (server.js reads no
//   min_ping_interval option and never sends GOAWAY too_many_pings), and Node's http2 has none.
// - CloudAI's peers are grpc-go, whose default EnforcementPolicy is {MinTime: 5 min,
//   PermitWithoutStream: false}: a ping within MinTime of the previous one, or any ping while no
//   stream is open, is a strike unless the server wrote headers or data since the previous ping
//   (resetPingStrikes); after 2 strikes the third earns GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
//   Our clients therefore ping only while a call is open (keepalive_permit_without_calls 0; grpc-js
//   then holds a due ping back until the next call starts), and every call we make to a CloudAI
//   peer is a unary call that the peer answers (SendHeartbeat every heartbeat interval, AssignTask,
//   CancelTask): an answer lies between any two of our pings, so no strike is ever counted. Should a
//   peer still send too_many_pings, grpc-js doubles its ping interval for that channel by itself.
// - Servers ping their clients whatever the calls: grpc-js servers have no permit_without_calls,
//   and clients (ours and grpc-go's) never police pings from a server.

export interface Keepalive {
  /** Time after the last ping's answer (or the connection's start) before the next ping. */
  timeMs: number
  /** Time a ping may go unanswered before the connection is closed. */
  timeoutMs: number
}

/** The default on every connection: a dead peer is noticed within 20 s. */
export const KEEPALIVE: Keepalive = Object.freeze({ timeMs: 10_000, timeoutMs: 10_000 })

/** The longest a dead peer goes unnoticed: the last answer, one interval, then the ping's timeout. */
export function keepaliveBoundMs(k: Keepalive = KEEPALIVE): number {
  return k.timeMs + k.timeoutMs
}

/** A server pings each connection every `timeMs`, with or without calls (grpc-js servers always do). */
export function serverKeepaliveOptions(k: Keepalive = KEEPALIVE): grpc.ServerOptions {
  return { 'grpc.keepalive_time_ms': k.timeMs, 'grpc.keepalive_timeout_ms': k.timeoutMs }
}

/** A client pings only while one of its calls is open (see the grpc-go policy above). */
export function clientKeepaliveOptions(k: Keepalive = KEEPALIVE): grpc.ChannelOptions {
  return { 'grpc.keepalive_time_ms': k.timeMs, 'grpc.keepalive_timeout_ms': k.timeoutMs, 'grpc.keepalive_permit_without_calls': 0 }
}
