import { RefusalThrottle } from '../shared/cluster-auth.js'
import { CloudaiError, type ErrorCode } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { isLoopback, MASTER_PROOF_METADATA, peerIp, verifyMasterProof, type CallSource, type MasterMethod } from '../shared/worker-credential.js'

// The worker's side of "who may drive this worker": MasterRegister, AssignTask and CancelTask are
// served only to its master. With a token, the master proves itself on every call with a MAC made
// with that token (only the master, which derives it from its key, and this worker hold it): a
// stranger, another worker (its token is another), or a reader of the master's store (it holds a
// hash and a nonce, not the token) cannot make one. Without a token there is nothing to check a
// proof with, so only callers on this machine are served: the quick start works, and nothing from
// outside gets in. `--master-auth none` serves anyone, for a CloudAI master (it sends no proof).

export type MasterAuthMode = 'proof' | 'none'

export interface MasterCheckOptions {
  workerId: string
  token: string | null
  mode: MasterAuthMode
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
      log.info({ masterAuth: 'loopback' }, 'No worker token: calls from a master are served only from this machine (start the worker with --token, --token-file or CLOUDAI_WORKER_TOKEN to serve a master elsewhere)')
    } else {
      log.info({ masterAuth: 'proof' }, 'Worker token set: calls from a master are served only with its proof')
    }
  }

  close(): void {
    if (this.warnTimer) clearInterval(this.warnTimer)
    this.warnTimer = null
  }

  /**
   * Passes when the call may drive this worker; `subject` is what the proof is bound to (the
   * master's address, `task_id/attempt`, the task id).
   * @throws CloudaiError CLOUDAI_MASTER_PROOF_REQUIRED (UNAUTHENTICATED), logged at most once a minute per address
   */
  check(method: MasterMethod, subject: string, call: CallSource): void {
    const { mode, token, workerId } = this.opts
    if (mode === 'none') return
    if (token !== null) {
      if (verifyMasterProof(token, workerId, method, subject, call.metadata.get(MASTER_PROOF_METADATA), this.now())) return
      throw this.refuse(method, call, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${method} carries no valid proof that it comes from worker ${workerId}'s master: only a master that registered this worker and issued the token it runs with can make one (after \`cloudai token rotate\`, restart the worker with the new token), and its clock must be within 5 minutes of this worker's`)
    }
    const ip = peerIp(call.getPeer())
    if (isLoopback(ip)) return
    throw this.refuse(method, call, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${method} from ${ip ?? call.getPeer()}: worker ${workerId} has no token, so it serves a master's calls only from its own machine: start it with its token (--token, --token-file or CLOUDAI_WORKER_TOKEN; \`cloudai register\` printed it), or with --master-auth none to serve a master that sends no proof (CloudAI's)`)
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
