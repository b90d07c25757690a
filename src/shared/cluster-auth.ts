import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { TlsOptions } from 'node:tls'
import * as grpc from '@grpc/grpc-js'
import type { ClusterSecurity } from '../config.js'
import { certificateIdentity, checkMasterServerIdentity, type CertificateIdentity } from './certificate-identity.js'
import { CloudaiError } from './errors.js'
import type { Logger } from './log.js'

// What protects the gRPC side of the cluster, in one place for the master, the worker and the
// master's dial threads: the channel and server credentials (TLS, mutual when there is a CA),
// the token every call carries, and the check every received call passes. Each side only asks
// this module for client options, server options and credentials, so a call that forgets the
// token or a server that forgets the check cannot be written by accident.

/** Metadata key of the shared cluster token (gRPC metadata keys are lower case). */
export const CLUSTER_TOKEN_METADATA = 'cloudai-cluster-token'

/** What a refusal says. It never tells a caller whether the token was missing or only wrong. */
export const UNAUTHENTICATED_MESSAGE = 'the cluster token is missing or wrong'

/** A peer refused for its token is logged at most once in this long. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000

/**
 * The token and the PEM files' contents, read once at start. Plain strings, so that the material
 * crosses into the dial threads (Piscina's workerData) as it is, without a file read per dial.
 */
export interface ClusterMaterial {
  token: string | null
  tls: { cert: string; key: string; ca: string | null } | null
}

export const NO_CLUSTER_MATERIAL: ClusterMaterial = Object.freeze({ token: null, tls: null })

/**
 * Reads the PEM files named by the config. The CLI already checked they are readable; a file that
 * vanished or changed into something unreadable since is still a config error, not a crash.
 * @throws CloudaiError CLOUDAI_BAD_CONFIG naming the flag and the file
 */
export function readClusterMaterial(security: Partial<ClusterSecurity>): ClusterMaterial {
  const tls = security.tls ?? null
  return {
    token: security.clusterToken ?? null,
    tls: tls
      ? {
          cert: readPem(tls.certPath, '--tls-cert'),
          key: readPem(tls.keyPath, '--tls-key'),
          ca: tls.caPath !== null ? readPem(tls.caPath, '--tls-ca') : null,
        }
      : null,
  }
}

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot read ${flag} ${path}: ${(err as Error).message}`)
  }
}

/**
 * The constant-time token check. Digests of both sides are compared, so that neither the time the
 * comparison takes nor an early length mismatch tells a caller how much of a guess was right.
 */
export class TokenCheck {
  private readonly digest: Buffer

  constructor(token: string) {
    this.digest = sha256(token)
  }

  accepts(candidate: unknown): boolean {
    if (typeof candidate !== 'string') return false
    return timingSafeEqual(this.digest, sha256(candidate))
  }

  /** Exactly one `cloudai-cluster-token` value, equal to ours. */
  acceptsMetadata(metadata: grpc.Metadata): boolean {
    const values = metadata.get(CLUSTER_TOKEN_METADATA)
    return values.length === 1 && this.accepts(values[0])
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

/** The refusal as a typed error (for callers that want to report it the usual way). */
export function unauthenticatedError(): CloudaiError {
  return new CloudaiError('CLOUDAI_UNAUTHENTICATED', UNAUTHENTICATED_MESSAGE)
}

/** The status a refused call ends with: UNAUTHENTICATED, the reason, and the code as metadata. */
export function unauthenticatedStatus(): Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0] {
  const e = unauthenticatedError()
  const metadata = new grpc.Metadata()
  metadata.set('cloudai-error-code', e.code)
  return { code: e.grpcStatus, details: `${e.message} (${e.code})`, metadata }
}

/**
 * At most one log line per peer per interval, counting what it held back. Keyed by the peer's
 * address without its port: a client that reconnects gets a new port each time and must not get a
 * new log line with it. Bounded: entries past the interval are dropped when the map grows.
 */
export class RefusalThrottle {
  private readonly seen = new Map<string, { loggedAt: number; suppressed: number }>()

  constructor(private readonly intervalMs = REFUSAL_LOG_INTERVAL_MS, private readonly maxPeers = 4096) {}

  /** Null when this refusal is not to be logged; else how many were held back since the last line. */
  admit(peer: string, now: number): { suppressed: number } | null {
    const cur = this.seen.get(peer)
    if (cur && now - cur.loggedAt < this.intervalMs) {
      cur.suppressed++
      return null
    }
    if (!cur && this.seen.size >= this.maxPeers) this.prune(now)
    this.seen.set(peer, { loggedAt: now, suppressed: 0 })
    return { suppressed: cur?.suppressed ?? 0 }
  }

  get size(): number {
    return this.seen.size
  }

  private prune(now: number): void {
    for (const [peer, e] of this.seen) if (now - e.loggedAt >= this.intervalMs) this.seen.delete(peer)
    // Still full: a flood of distinct peers within one interval. Forgetting them costs at most one
    // more line each; keeping them would cost unbounded memory.
    if (this.seen.size >= this.maxPeers) this.seen.clear()
  }
}

export interface ServerAuthOptions {
  log: Logger
  /** Clock of the refusal log's throttle (tests). */
  now?: () => number
}

/**
 * One process's side of cluster security, built once from its material. Channel credentials are
 * built once too: a SecureContext parses the PEMs, and every client (each reconnection dial
 * included) reuses it.
 */
export class ClusterAuth {
  readonly material: ClusterMaterial
  private readonly check: TokenCheck | null
  private readonly channelCreds: grpc.ChannelCredentials
  private masterChannelCreds: grpc.ChannelCredentials | null = null
  private readonly tokenInterceptor: grpc.Interceptor | null

  /** @throws CloudaiError CLOUDAI_BAD_CONFIG when the certificate, key or CA cannot be used */
  constructor(material: ClusterMaterial) {
    this.material = material
    const token = material.token
    this.check = token !== null ? new TokenCheck(token) : null
    this.tokenInterceptor = token !== null
      ? (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
          start: (metadata, listener, next) => {
            metadata.set(CLUSTER_TOKEN_METADATA, token)
            next(metadata, listener)
          },
        })
      : null
    const tls = material.tls
    if (tls) {
      try {
        // Our certificate goes with every connection we open, for servers that require one.
        this.channelCreds = grpc.credentials.createSsl(tls.ca !== null ? Buffer.from(tls.ca) : undefined, Buffer.from(tls.key), Buffer.from(tls.cert))
      } catch (err) {
        throw new CloudaiError('CLOUDAI_BAD_CONFIG', `the TLS certificate, key or CA cannot be used: ${(err as Error).message}`)
      }
    } else {
      this.channelCreds = grpc.credentials.createInsecure()
    }
  }

  /** Whether this process sends a token on every call and requires it on every call it receives. */
  get hasToken(): boolean {
    return this.check !== null
  }

  get usesTls(): boolean {
    return this.material.tls !== null
  }

  /**
   * With a CA, both ends of every connection were verified against it, so the SPIFFE ID a
   * certificate carries names its holder (src/shared/certificate-identity.ts).
   */
  get verifiesPeers(): boolean {
    return this.material.tls !== null && this.material.tls.ca !== null
  }

  /** Whom this process's own certificate names (null: no TLS, or no cloudai SPIFFE ID in it). */
  ownIdentity(): CertificateIdentity {
    return this.material.tls ? certificateIdentity(this.material.tls.cert) : null
  }

  /**
   * Credentials for every client this process opens. `'master'`: the server's certificate must
   * also name the master (spiffe://cloudai/master), for a worker's channel to its master; the
   * same as `'any'` without TLS.
   */
  channelCredentials(server: 'any' | 'master' = 'any'): grpc.ChannelCredentials {
    const tls = this.material.tls
    if (server === 'any' || !tls) return this.channelCreds
    // Built once, on first use: a worker rebuilds its channel at every change of master.
    this.masterChannelCreds ??= grpc.credentials.createSsl(tls.ca !== null ? Buffer.from(tls.ca) : undefined, Buffer.from(tls.key), Buffer.from(tls.cert), { checkServerIdentity: checkMasterServerIdentity })
    return this.masterChannelCreds
  }

  /** `base` plus, with a token, the interceptor that puts it on every call (unary and streams). */
  clientOptions(base: grpc.ClientOptions = {}): grpc.ClientOptions {
    if (!this.tokenInterceptor) return base
    return { ...base, interceptors: [...(base.interceptors ?? []), this.tokenInterceptor] }
  }

  /**
   * Credentials of this process's gRPC server. With a CA, clients must present a certificate it
   * signed (mutual TLS); without one, the server asks for none.
   */
  serverCredentials(): grpc.ServerCredentials {
    const tls = this.material.tls
    if (!tls) return grpc.ServerCredentials.createInsecure()
    return grpc.ServerCredentials.createSsl(tls.ca !== null ? Buffer.from(tls.ca) : null, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }], tls.ca !== null)
  }

  /**
   * The same server TLS as serverCredentials(), as node:tls options, for a server that does its
   * own handshakes (the master's gRPC listener): what grpc-js's createSsl sets up (requestCert with
   * a CA, its GRPC_SSL_CIPHER_SUITES), and tls.Server's rejectUnauthorized, so a client whose
   * certificate the CA did not sign is refused. Null without TLS.
   */
  serverTlsOptions(): TlsOptions | null {
    const tls = this.material.tls
    if (!tls) return null
    return {
      cert: tls.cert,
      key: tls.key,
      ...(tls.ca !== null ? { ca: tls.ca, requestCert: true, rejectUnauthorized: true } : { requestCert: false }),
      ...(process.env.GRPC_SSL_CIPHER_SUITES ? { ciphers: process.env.GRPC_SSL_CIPHER_SUITES } : {}),
    }
  }

  /**
   * `base` plus, with a token, the interceptor that checks it on every call before any handler
   * runs: a refused call never reaches the service, so it changes no state. Without a token every
   * call is accepted, with or without one (a rolling rollout adds the token to masters and workers
   * one by one).
   */
  serverOptions(opts: ServerAuthOptions, base: grpc.ServerOptions = {}): grpc.ServerOptions {
    const check = this.check
    if (!check) return base
    const now = opts.now ?? Date.now
    const throttle = new RefusalThrottle()
    const interceptor: grpc.ServerInterceptor = (method, call) => new grpc.ServerInterceptingCall(call, {
      start: (next) => next({
        onReceiveMetadata: (metadata, accept) => {
          if (check.acceptsMetadata(metadata)) {
            accept(metadata)
            return
          }
          const peer = peerHost(call)
          const admitted = throttle.admit(peer, now())
          if (admitted) {
            const rpc = method.path.slice(method.path.lastIndexOf('/') + 1)
            const held = admitted.suppressed > 0 ? ` (${admitted.suppressed} more refused since the last line)` : ''
            opts.log.warn(
              { rpc, peer: call.getPeer(), code: 'CLOUDAI_UNAUTHENTICATED', suppressed: admitted.suppressed },
              `Refused ${rpc} from ${peer}: ${UNAUTHENTICATED_MESSAGE}${held}; logged at most once a minute per peer`,
            )
          }
          call.sendStatus(unauthenticatedStatus())
        },
      }),
    })
    return { ...base, interceptors: [...(base.interceptors ?? []), interceptor] }
  }
}

/** The peer's address without the port ("unknown" when the transport does not say). */
function peerHost(call: grpc.ServerInterceptingCallInterface): string {
  const remote = call.getConnectionInfo().remoteAddress
  if (remote) return remote
  const peer = call.getPeer()
  const m = /^\[?(.*?)\]?:\d+$/.exec(peer)
  return m?.[1] ?? peer
}

/** No token, no TLS: what every side uses when it is given nothing (and the tests that predate this). */
export const NO_CLUSTER_AUTH = new ClusterAuth(NO_CLUSTER_MATERIAL)

const byConfig = new WeakMap<object, ClusterAuth>()

/**
 * The ClusterAuth of a process's config, built on first use and shared after that: the master
 * hands it to its gRPC server, its dial pool and its task clients, and the PEM files are read once.
 * A config without token and TLS gets NO_CLUSTER_AUTH.
 */
export function clusterAuthOf(security: Partial<ClusterSecurity>): ClusterAuth {
  if ((security.clusterToken ?? null) === null && (security.tls ?? null) === null) return NO_CLUSTER_AUTH
  let auth = byConfig.get(security)
  if (!auth) byConfig.set(security, (auth = new ClusterAuth(readClusterMaterial(security))))
  return auth
}
