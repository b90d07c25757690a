import { callCertificateIdentity, MASTER_SPIFFE_ID, workerSpiffeId, type AuthContextSource } from '../shared/certificate-identity.js'
import { RefusalThrottle } from '../shared/cluster-auth.js'
import { CloudaiError, type ErrorCode } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { isLoopback, MASTER_PROOF_METADATA, matchMasterProof, peerIp, ProofReplayGuard, type CallSource, type MasterMethod } from '../shared/worker-credential.js'

// The worker's side of "who may drive this worker": MasterRegister, AssignTask and CancelTask are
// served only to its master. With a token, the master proves itself on every call with a MAC made
// with that token (only the master, which derives it from its key, and this worker hold it): a
// stranger, another worker (its token is another), or a reader of the master's store (it holds a
// hash and a nonce, not the token) cannot make one. Without a token there is nothing to check a
// proof with, so only callers on this machine are served: the quick start works, and nothing from
// outside gets in. `--master-auth none` serves anyone, for a CloudAI master (it sends no proof).
//
// With --tls-ca the caller's certificate can say it too (src/shared/certificate-identity.ts): one
// naming spiffe://cloudai/master is the master's, served as a valid proof is, with a token or
// without; one naming a worker is a worker's, not the master's, and is refused unless it carries a
// valid proof, from this machine too (who it is is known, so loopback does not stand in for it).
// A certificate naming nobody changes nothing: the proof rules apply.

export type MasterAuthMode = 'proof' | 'none'

export interface MasterCheckOptions {
  workerId: string
  token: string | null
  mode: MasterAuthMode
  /** With --tls-ca: the verified client certificate of a call may name the master, or a worker. */
  certificates?: boolean
  log: Logger
  now?: () => number
  /** How often the --master-auth none warning is logged again (default a minute). */
  warnEveryMs?: number
}

export const MASTER_AUTH_NONE_WARNING =
  '--master-auth none: MasterRegister, AssignTask and CancelTask are served to any caller that can reach this worker\'s port: anyone can run commands here, cancel its tasks and point it at another master. Use it only under a CloudAI master (it sends no proof), on a network you trust'

export class MasterCheck {
  private readonly now: () => number
  private readonly throttle = new RefusalThrottle()
  private readonly replays = new ProofReplayGuard()
  private warnTimer: NodeJS.Timeout | null = null

  constructor(private readonly opts: MasterCheckOptions) {
    this.now = opts.now ?? Date.now
  }

  /** Says what protects this worker; with --master-auth none, warns now and every minute until close(). */
  start(): void {
    const { log, mode, token } = this.opts
    if (mode === 'none') {
      if (this.warnTimer) return
      log.warn({ masterAuth: 'none' }, MASTER_AUTH_NONE_WARNING)
      this.warnTimer = setInterval(() => log.warn({ masterAuth: 'none' }, MASTER_AUTH_NONE_WARNING), this.opts.warnEveryMs ?? 60_000)
    } else if (token === null) {
      const cert = this.opts.certificates === true ? ` or with a certificate naming ${MASTER_SPIFFE_ID}` : ''
      log.info({ masterAuth: 'loopback' }, `No worker token: calls from a master are served only from this machine${cert} (start the worker with --token, --token-file or CLOUDAI_WORKER_TOKEN to serve a master elsewhere by its proof)`)
    } else {
      const cert = this.opts.certificates === true ? ` or its certificate (${MASTER_SPIFFE_ID})` : ''
      log.info({ masterAuth: 'proof' }, `Worker token set: calls from a master are served only with its proof${cert}`)
    }
  }

  close(): void {
    if (this.warnTimer) clearInterval(this.warnTimer)
    this.warnTimer = null
  }

  /**
   * Passes when the call may drive this worker: its master's proof, taken once (`subject` is what
   * the proof is bound to: the master's address, assignSubject() of the task, the task id), or with certificates the
   * master's certificate, or without a token a caller on this machine that is not a worker.
   * @throws CloudaiError CLOUDAI_MASTER_PROOF_REQUIRED (UNAUTHENTICATED), logged at most once a minute per address
   */
  check(method: MasterMethod, subject: string, call: CallSource & AuthContextSource): void {
    const { mode, token, workerId } = this.opts
    if (mode === 'none') return
    let replayed = false
    if (token !== null) {
      const now = this.now()
      const proof = matchMasterProof(token, workerId, method, subject, call.metadata.get(MASTER_PROOF_METADATA), now)
      if (proof && this.replays.take(proof.nonce, proof.at, now)) return
      replayed = proof !== null
    }
    const certified = this.opts.certificates === true ? callCertificateIdentity(call) : null
    if (certified?.role === 'master') return
    const orCertificate = this.opts.certificates === true ? `, or a certificate of the cluster's CA naming ${MASTER_SPIFFE_ID}` : ''
    if (certified?.role === 'worker') {
      throw this.refuse(method, call, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${method} comes from worker ${certified.workerId} (its certificate names ${workerSpiffeId(certified.workerId)}), not from a master: worker ${workerId} serves it only with its master's proof${orCertificate}, from this machine too`)
    }
    if (replayed) {
      throw this.refuse(method, call, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${method} carries a proof this worker has taken before: each proof of its master counts once, so a proof seen on the way cannot be sent again`)
    }
    if (token !== null) {
      throw this.refuse(method, call, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${method} carries no valid proof that it comes from worker ${workerId}'s master${orCertificate}: only a master that registered this worker and issued the token it runs with can make one (after \`cloudai token rotate\`, restart the worker with the new token), and its clock must be within 5 minutes of this worker's`)
    }
    const ip = peerIp(call.getPeer())
    if (isLoopback(ip)) return
    throw this.refuse(method, call, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${method} from ${ip ?? call.getPeer()}: worker ${workerId} has no token, so it serves a master's calls only from its own machine${orCertificate ? ` or with a certificate naming ${MASTER_SPIFFE_ID}` : ''}: start it with its token (--token, --token-file or CLOUDAI_WORKER_TOKEN; \`cloudai register\` printed it), or with --master-auth none to serve a master that sends no proof (CloudAI's)`)
  }

  /** The refusal as an error; logged at warn at most once a minute per address. */
  refuse(method: string, call: CallSource, code: ErrorCode, message: string): CloudaiError {
    const peer = call.getPeer()
    const address = peerIp(peer) ?? peer
    const admitted = this.throttle.admit(address, this.now())
    if (admitted) {
      const held = admitted.suppressed > 0 ? ` (${admitted.suppressed} more refused since the last line)` : ''
      this.opts.log.warn({ rpc: method, peer, code, suppressed: admitted.suppressed }, `Refused ${method} from ${address}: ${message}${held}; logged at most once a minute per address`)
    }
    return new CloudaiError(code, message)
  }
}
