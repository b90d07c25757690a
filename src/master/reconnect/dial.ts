import { connect, type Socket } from 'node:net'
import { threadId } from 'node:worker_threads'
import * as grpc from '@grpc/grpc-js'
import { C, Counters, DIAL_OUTCOME_COUNTER } from '../counters.js'
import { DIAL_CHANNEL_OPTIONS, loadProto } from '../../shared/proto.js'
import { NO_CLUSTER_AUTH, type ClusterAuth } from '../../shared/cluster-auth.js'
import type { RegisterAckMsg } from '../../shared/wire.js'
import { parseAddress } from '../../shared/validation.js'
import { proofMetadata, type MasterKey } from '../../shared/worker-credential.js'
import type { DialOutcome, DialRequest, DialResult } from './protocol.js'
import { watchFor } from './cancel-watch.js'
import { NO_EPOCH } from '../../shared/leadership.js'
import { atDeadline } from './deadlines.js'

// One reconnection dial: MasterRegister on a worker, bounded by a deadline, on a client that lives
// only for this call. It runs on a Piscina thread (workers/dial.ts) in the master, and inline in
// the bench baseline, so it must not touch the master's state: it returns a plain result. The
// cluster's credentials and token, and the master key, come from the caller (built once per
// thread), never per dial. The request carries only the nonces of the worker's live tokens: the
// thread derives the tokens and the master's proof itself, at the moment it dials, so the main
// thread spends nothing on it and time queued does not age the proof.
//
// A probe goes first, on a plain socket. Most of a large inactive registry is machines that are
// down, ports nobody listens on, or hosts that accept and never answer: grpc-js spends ~1.7 ms of
// CPU to learn any of that (channel, resolver, subchannel, an error with its stack), a socket
// ~0.2 ms. Without TLS the probe also sends the HTTP/2 connection preface and waits for the
// server's first frame, which every HTTP/2 server must send: a host that accepted the connection
// but does not answer then times out on the probe, not on a gRPC channel. A live worker pays one
// extra connection and round trip; the probe's socket is closed as soon as it has its answer.

// One view per buffer and thread: a dial thread serves one master, so this holds one entry.
const views = new WeakMap<SharedArrayBuffer, Counters>()

function countersOf(buffer: SharedArrayBuffer | null): Counters | null {
  if (!buffer) return null
  let c = views.get(buffer)
  if (!c) views.set(buffer, (c = new Counters(buffer)))
  return c
}

/**
 * @param auth TLS credentials and the cluster token of the master (default: insecure, no token).
 *   A worker that refuses our token or our proof answers UNAUTHENTICATED (or PERMISSION_DENIED:
 *   it follows another master): that is the outcome 'rejected' with its reason, not 'refused'
 *   (which means nothing listens there).
 * @param key the master key, to prove to the worker that the call is its master's (null: no proof)
 */
export async function dialMasterRegister(req: DialRequest, auth: ClusterAuth = NO_CLUSTER_AUTH, key: MasterKey | null = null): Promise<DialResult> {
  const started = Date.now()
  const counters = countersOf(req.counters)
  const result = (outcome: DialOutcome, message: string): DialResult => {
    const elapsedMs = Date.now() - started
    if (counters) {
      counters.add(DIAL_OUTCOME_COUNTER[outcome])
      if (outcome !== 'cancelled') counters.observe('dialMs', elapsedMs)
    }
    return { workerId: req.workerId, outcome, message, elapsedMs, thread: threadId }
  }
  if (isCancelled(req)) return result('cancelled', 'cancelled before the dial started')
  if (Date.now() >= req.deadline) return result('timeout', 'the dial deadline passed while it waited for a thread')

  counters?.add(C.DIAL_ATTEMPTS)
  // Registrations are validated, but a store may hold addresses written by others (CloudAI's own
  // MongoDB documents): one that is not host:port is this dial's error, not a thrown dial.
  let host: string
  let port: number
  try {
    ;({ host, port } = parseAddress(req.address, `address of worker ${req.workerId}`))
  } catch (err) {
    return result('error', (err as Error).message)
  }
  // Cancellation crosses the thread boundary through shared memory (cancel-watch.ts): the main
  // thread sets the slot's flag and wakes this thread's one waiter, which aborts whatever step the
  // dial is in. No message and no waiter per dial.
  let cancelled = false
  let abort: (() => void) | null = null
  const unwatch = req.cancelFlags && req.cancelSlot >= 0
    ? watchFor(req.cancelFlags).watch(req.cancelSlot, () => {
        cancelled = true
        abort?.()
      })
    : null
  if (cancelled) return result('cancelled', 'cancelled before the dial started')
  // An abort handed over after the cancel arrived runs at once: the cancel may land between steps.
  const onAbort = (a: () => void): void => {
    if (cancelled) a()
    else abort = a
  }
  try {
    const probe = await probeAddress(host.startsWith('[') ? host.slice(1, -1) : host, port, req.deadline, !auth.usesTls, onAbort)
    if (cancelled) return result('cancelled', 'cancelled')
    if (probe === 'timeout') return result('timeout', `no answer within ${req.timeoutMs}ms`)
    if (probe !== 'open') return result('refused', probe)
    return await masterRegister(req, auth, key, result, onAbort)
  } finally {
    unwatch?.()
  }
}

async function masterRegister(
  req: DialRequest,
  auth: ClusterAuth,
  key: MasterKey | null,
  result: (outcome: DialOutcome, message: string) => DialResult,
  onAbort: (abort: () => void) => void,
): Promise<DialResult> {
  const { Client } = loadProto()
  const client = new Client(req.address, auth.channelCredentials(), auth.clientOptions(DIAL_CHANNEL_OPTIONS))
  const nonces = req.proofNonces ?? []
  const metadata = key && nonces.length > 0 ? proofMetadata(key.proofsFor(req.workerId, nonces, 'MasterRegister', req.masterAddress, Date.now()), new grpc.Metadata()) : new grpc.Metadata()
  try {
    const ack = await new Promise<RegisterAckMsg>((resolve, reject) => {
      const call = client.MasterRegister(
        { master_id: req.masterId, master_address: req.masterAddress, master_epoch: req.masterEpoch ?? NO_EPOCH },
        metadata,
        { deadline: req.deadline },
        (err, res) => (err ? reject(err) : resolve(res as RegisterAckMsg)),
      )
      onAbort(() => call.cancel())
    })
    return ack.success ? result('success', ack.message) : result('rejected', ack.message || 'the worker refused MasterRegister')
  } catch (err) {
    const e = err as grpc.ServiceError
    if (e.code === grpc.status.CANCELLED) return result('cancelled', 'cancelled')
    if (e.code === grpc.status.DEADLINE_EXCEEDED) return result('timeout', `no answer within ${req.timeoutMs}ms`)
    if (e.code === grpc.status.UNAVAILABLE) return result('refused', e.details || e.message)
    // FAILED_PRECONDITION: CLOUDAI_STALE_EPOCH, the worker has seen a newer leader than this master.
    if (e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.PERMISSION_DENIED || e.code === grpc.status.FAILED_PRECONDITION) return result('rejected', e.details || e.message)
    return result('error', `${grpc.status[e.code] ?? e.code}: ${e.details || e.message}`)
  } finally {
    client.close()
  }
}

/** The client's HTTP/2 connection preface (RFC 9113 §3.4) and an empty SETTINGS frame. */
const H2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])])

/**
 * 'open' when something accepts a TCP connection at `host` (unbracketed) and `port` (and, with `h2`, answers the HTTP/2
 * preface) before `deadline`; 'timeout' when nothing did by then (or the probe was aborted);
 * otherwise why the connection failed.
 */
function probeAddress(host: string, port: number, deadline: number, h2: boolean, onAbort: (abort: () => void) => void): Promise<'open' | 'timeout' | string> {
  return new Promise((resolve) => {
    let socket: Socket | null = null
    const done = (outcome: string): void => {
      if (!socket) return
      cancelDeadline()
      socket.destroy()
      socket = null
      resolve(outcome)
    }
    const cancelDeadline = atDeadline(deadline, () => done('timeout'))
    socket = connect({ host, port, noDelay: true })
    socket.once('connect', () => {
      if (!h2) return done('open')
      socket?.once('data', () => done('open'))
      socket?.write(H2_PREFACE)
    })
    socket.once('end', () => done('closed the connection without answering the HTTP/2 preface: not a gRPC server'))
    // on, not once: an error after the answer (a reset while closing) must not go unhandled.
    socket.on('error', (err: NodeJS.ErrnoException) => done(`${err.code ?? 'connect failed'}: ${err.message}`))
    onAbort(() => done('timeout'))
  })
}

function isCancelled(req: DialRequest): boolean {
  return req.cancelFlags !== null && req.cancelSlot >= 0 && Atomics.load(req.cancelFlags, req.cancelSlot) !== 0
}
