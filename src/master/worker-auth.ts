import { callCertificateIdentity, workerSpiffeId, type AuthContextSource } from '../shared/certificate-identity.js'
import { RefusalThrottle } from '../shared/cluster-auth.js'
import { CloudaiError, type ErrorCode } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { bearerOf, isLoopback, peerIp, tokenHash, type CallSource } from '../shared/worker-credential.js'
import type { Registry } from './registry.js'

// Who a worker call comes from, decided in one place for RegisterWorker, both heartbeat RPCs and
// ReportTaskCompletion. Message fields never decide it: the caller's credentials do, and the
// message's worker_id must then be the caller's own.
//
//   a worker token (authorization: Bearer)  -> that worker, and only it, wherever the call comes from
//   with --tls-ca, a client certificate     -> the same, for the worker it names
//     naming spiffe://cloudai/worker/<id>      (src/shared/certificate-identity.ts)
//   no token, from loopback                 -> any worker that has never presented a token or its
//                                              certificate (the quick start on one machine)
//   no token, --worker-auth none            -> the same, from anywhere (CloudAI workers send none)
//   anything else                           -> UNAUTHENTICATED, naming the ways out
//
// A token that is malformed or unknown is refused in every mode: a wrong credential is never read
// as no credential, and a valid certificate does not make up for it. A token and a certificate
// naming two workers are refused (one call speaks for one worker). A certificate that names
// nobody (the master's, several workers, no SPIFFE ID) is no credential: the rules without a token
// apply. A worker once identified by its certificate counts as presented, as with a token.

export type WorkerAuthMode = 'token' | 'none'

export type CallIdentity =
  /** The call carried this worker's token (current, or the previous one within its grace). */
  | { how: 'token'; workerId: string; tokenHash: string }
  /** No token; the call's verified client certificate names this worker (mTLS, with --tls-ca). */
  | { how: 'certificate'; workerId: string }
  /** No credential, from this machine. */
  | { how: 'loopback'; workerId: null }
  /** No credential, accepted because the master runs with --worker-auth none. */
  | { how: 'open'; workerId: null }

export interface WorkerAuthOptions {
  registry: Registry
  mode: WorkerAuthMode
  /**
   * With --tls-ca: a verified client certificate naming spiffe://cloudai/worker/<id> identifies
   * worker <id>. Off, certificates are not looked at (default).
   */
  certificates?: boolean
  log: Logger
  now?: () => number
  /** How often the --worker-auth none warning is logged again (default a minute). */
  warnEveryMs?: number
}

const WAYS_OUT = 'start the worker with its token (--token, --token-file or CLOUDAI_WORKER_TOKEN; `cloudai register` printed it, `cloudai token rotate <id>` issues a new one), or start the master with --worker-auth none to accept workers without tokens (CloudAI workers send none)'
const WAYS_OUT_WITH_CERTIFICATES = `start the worker with its token (--token, --token-file or CLOUDAI_WORKER_TOKEN; \`cloudai register\` printed it, \`cloudai token rotate <id>\` issues a new one) or with a certificate of the cluster's CA whose URI SAN is ${workerSpiffeId('<id>')}, or start the master with --worker-auth none to accept workers without tokens (CloudAI workers send none)`

/** What identify() and authorize() need of a received call: metadata, peer, and (TLS) its certificate. */
export type WorkerCallSource = CallSource & AuthContextSource

export const WORKER_AUTH_NONE_WARNING =
  '--worker-auth none: worker calls without a token are accepted from any address for every worker that has not presented one: anyone who can reach the gRPC port can register as such a worker, take its tasks and report their results. Use it only for CloudAI workers (they send no token), on a network you trust'

export class WorkerAuth {
  readonly mode: WorkerAuthMode
  private readonly now: () => number
  private readonly throttle = new RefusalThrottle()
  private warnTimer: NodeJS.Timeout | null = null

  constructor(private readonly opts: WorkerAuthOptions) {
    this.mode = opts.mode
    this.now = opts.now ?? Date.now
  }

  /** With --worker-auth none: warns now, and again every minute until close(). */
  start(): void {
    if (this.mode !== 'none' || this.warnTimer) return
    this.opts.log.warn({ workerAuth: 'none' }, WORKER_AUTH_NONE_WARNING)
    this.warnTimer = setInterval(() => this.opts.log.warn({ workerAuth: 'none' }, WORKER_AUTH_NONE_WARNING), this.opts.warnEveryMs ?? 60_000)
  }

  close(): void {
    if (this.warnTimer) clearInterval(this.warnTimer)
    this.warnTimer = null
  }

  /** What /healthz and `cloudai status` say about this (null: nothing to say). */
  get warning(): string | null {
    return this.mode === 'none' ? WORKER_AUTH_NONE_WARNING : null
  }

  /**
   * The call's identity from its credentials. The first call with a worker's current token marks
   * it presented (the registry persists that, and ends the previous token's grace).
   * @throws CloudaiError UNAUTHENTICATED (CLOUDAI_WORKER_TOKEN_INVALID, CLOUDAI_WORKER_TOKEN_REQUIRED), logged at most once a minute per address
   */
  identify(rpc: string, call: WorkerCallSource): CallIdentity {
    const bearer = bearerOf(call.metadata)
    const certified = this.certifiedWorker(call)
    if (bearer.kind === 'token') {
      const hash = tokenHash(bearer.token)
      const owner = this.opts.registry.tokenOwner(hash)
      const now = this.now()
      if (!owner || (owner.which === 'previous' && owner.expiresAt !== null && owner.expiresAt <= now)) {
        throw this.refuse(rpc, call, 'CLOUDAI_WORKER_TOKEN_INVALID', `the worker token of this call is not one this master holds: it was never issued here, or it was revoked (the worker was unregistered) or replaced (\`cloudai token rotate\`, past its grace); start the worker with its current token (\`cloudai token rotate <id>\` issues a new one)`)
      }
      if (certified !== null && certified !== owner.worker.id) {
        throw this.refuse(rpc, call, 'CLOUDAI_WRONG_WORKER', `this call carries the token of worker ${owner.worker.id} and a certificate of worker ${certified} (${workerSpiffeId(certified)}); one call speaks for one worker`)
      }
      if (owner.which === 'current' && owner.worker.credential?.presentedAt === null) this.opts.registry.credentialPresented(owner.worker.id, now)
      return { how: 'token', workerId: owner.worker.id, tokenHash: hash }
    }
    if (bearer.kind === 'malformed') {
      throw this.refuse(rpc, call, 'CLOUDAI_WORKER_TOKEN_INVALID', 'the authorization metadata of this call is not one "Bearer <worker token>"')
    }
    if (certified !== null) {
      this.opts.registry.certificatePresented(certified)
      return { how: 'certificate', workerId: certified }
    }
    if (this.mode === 'none') return { how: 'open', workerId: null }
    const ip = peerIp(call.getPeer())
    if (isLoopback(ip)) return { how: 'loopback', workerId: null }
    throw this.refuse(rpc, call, 'CLOUDAI_WORKER_TOKEN_REQUIRED', `${rpc} from ${ip ?? call.getPeer()} carries no worker token${this.opts.certificates ? ' and no certificate naming a worker' : ''}, and only callers on the master's machine may call without one: ${this.opts.certificates ? WAYS_OUT_WITH_CERTIFICATES : WAYS_OUT}`)
  }

  /** The worker the call's verified client certificate names (null: certificates off, or it names no worker). */
  private certifiedWorker(call: AuthContextSource): string | null {
    if (this.opts.certificates !== true) return null
    const identity = callCertificateIdentity(call)
    return identity?.role === 'worker' ? identity.workerId : null
  }

  /**
   * May `identity` act as worker `workerId` (the message's worker_id)? A token or a certificate
   * only as its own worker, a token only while it holds (a heartbeat stream is identified once,
   * when it opens); no credential only for a worker that has never presented one (an id the master
   * does not know passes here, for the registry to refuse as unregistered).
   * @throws CloudaiError CLOUDAI_WRONG_WORKER (PERMISSION_DENIED), CLOUDAI_WORKER_TOKEN_REQUIRED (UNAUTHENTICATED)
   */
  authorize(rpc: string, identity: CallIdentity, workerId: string, call: CallSource): void {
    if (identity.how === 'token' || identity.how === 'certificate') {
      if (identity.workerId !== workerId) {
        const what = identity.how === 'token' ? 'the token' : `a certificate (${workerSpiffeId(identity.workerId)})`
        throw this.refuse(rpc, call, 'CLOUDAI_WRONG_WORKER', `this call carries ${what} of worker ${identity.workerId}, which cannot act as worker ${workerId}`)
      }
      if (identity.how === 'token' && !this.stillValid(identity)) {
        throw this.refuse(rpc, call, 'CLOUDAI_WORKER_TOKEN_INVALID', `the token this call was opened with is no longer valid: worker ${workerId} was unregistered, or its token was replaced and is past its grace`)
      }
      return
    }
    if (this.opts.registry.get(workerId)?.credential?.enforced === true) {
      throw this.refuse(rpc, call, 'CLOUDAI_WORKER_TOKEN_REQUIRED', `worker ${workerId} has presented its token${this.opts.certificates ? ' or its certificate' : ''}, so every call for it must carry ${this.opts.certificates ? 'one of them' : 'it'}, from this machine too: start the worker with --token, --token-file or CLOUDAI_WORKER_TOKEN (\`cloudai token rotate ${workerId}\` issues a new one)${this.opts.certificates ? `, or with its certificate (${workerSpiffeId(workerId)})` : ''}`)
    }
  }

  /** Whether a token identity still holds: not revoked, not replaced past its grace. */
  private stillValid(identity: Extract<CallIdentity, { how: 'token' }>): boolean {
    const owner = this.opts.registry.tokenOwner(identity.tokenHash)
    if (!owner || owner.worker.id !== identity.workerId) return false
    return owner.which === 'current' || owner.expiresAt === null || owner.expiresAt > this.now()
  }

  /** The refusal as an error; logged at warn at most once a minute per address, with how many were held back. */
  private refuse(rpc: string, call: CallSource, code: ErrorCode, message: string): CloudaiError {
    const peer = call.getPeer()
    const address = peerIp(peer) ?? peer
    const admitted = this.throttle.admit(address, this.now())
    if (admitted) {
      const held = admitted.suppressed > 0 ? ` (${admitted.suppressed} more refused since the last line)` : ''
      this.opts.log.warn({ rpc, peer, code, suppressed: admitted.suppressed }, `Refused ${rpc} from ${address}: ${message}${held}; logged at most once a minute per address`)
    }
    return new CloudaiError(code, message)
  }
}
