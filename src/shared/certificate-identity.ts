import { X509Certificate } from 'node:crypto'
import { checkServerIdentity, type PeerCertificate } from 'node:tls'
import { WORKER_ID_PATTERN } from './validation.js'

// Who a TLS peer is, from its certificate (mTLS, the second way beside tokens). With --tls-ca the
// handshake already checked that the CA signed the peer's certificate; what that certificate names
// is a SPIFFE ID in a URI subjectAltName, in the trust domain `cloudai`:
//
//   spiffe://cloudai/worker/<id>   worker <id> (an id as validateWorkerId takes it)
//   spiffe://cloudai/master        the master
//
// A certificate names someone only when it carries exactly one URI in that trust domain, and that
// URI is one of the two forms above: none, two (two workers, or a worker and the master), or one
// we cannot read (`spiffe://cloudai/worker/a/b`, an id with characters ids cannot have) name nobody.
// URIs of other schemes and trust domains are left to whoever issued them, and so are DNS and IP
// names (the handshake's hostname check reads those).
//
// The master reads the worker's identity here (src/master/worker-auth.ts), the worker the master's
// (src/worker/master-auth.ts), and a worker that uses its own SPIFFE ID checks that the master it
// dials is the master (ClusterAuth.channelCredentials('master')).

const TRUST_DOMAIN = 'spiffe://cloudai/'
export const MASTER_SPIFFE_ID = 'spiffe://cloudai/master'
const WORKER_PREFIX = 'spiffe://cloudai/worker/'

/** The SPIFFE ID of worker `id`: what its certificate's URI SAN must be. */
export function workerSpiffeId(id: string): string {
  return `${WORKER_PREFIX}${id}`
}

/** Whom a certificate names; null: nobody. */
export type CertificateIdentity = { role: 'master' } | { role: 'worker'; workerId: string } | null

/**
 * The entries of a subjectAltName as node:crypto's X509Certificate prints it
 * ("URI:spiffe://cloudai/worker/w1, DNS:localhost, IP Address:127.0.0.1"). A value Node had to
 * escape (a comma, a quote, a control character in it) is printed as a JSON string literal
 * (CVE-2021-44532), and is read back as one here, so that a URI holding ", URI:spiffe://…" is one
 * entry, never two. Null when the text is not in that form.
 */
export function subjectAltNames(text: string): { type: string; value: string }[] | null {
  const out: { type: string; value: string }[] = []
  let i = 0
  while (i < text.length) {
    const colon = text.indexOf(':', i)
    if (colon < 0) return null
    const type = text.slice(i, colon)
    let j = colon + 1
    let value: string
    if (text[j] === '"') {
      let k = j + 1
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1
      if (k >= text.length) return null
      try {
        value = JSON.parse(text.slice(j, k + 1)) as string
      } catch {
        return null
      }
      j = k + 1
    } else {
      const end = text.indexOf(', ', j)
      j = end < 0 ? text.length : end
      value = text.slice(colon + 1, j)
    }
    out.push({ type, value })
    if (j === text.length) break
    if (!text.startsWith(', ', j)) return null
    i = j + 2
  }
  return out
}

/** Whom a subjectAltName (X509Certificate.subjectAltName; undefined: the certificate has none) names. */
export function identityOfSubjectAltName(text: string | undefined): CertificateIdentity {
  if (text === undefined) return null
  const names = subjectAltNames(text)
  if (!names) return null
  // Ours in any case, so that SPIFFE://CloudAI/… cannot slip past as "someone else's" URI.
  const ours = names.filter((n) => n.type === 'URI' && n.value.toLowerCase().startsWith(TRUST_DOMAIN))
  if (ours.length !== 1) return null
  const uri = ours[0]!.value
  if (uri === MASTER_SPIFFE_ID) return { role: 'master' }
  if (uri.startsWith(WORKER_PREFIX)) {
    const id = uri.slice(WORKER_PREFIX.length)
    if (WORKER_ID_PATTERN.test(id)) return { role: 'worker', workerId: id }
  }
  return null
}

/**
 * Parsed certificates by their DER. X509Certificate takes about 0.1 ms to build, and a unary
 * heartbeat would pay it on every call; a cluster has few certificates. Bounded: cleared when full.
 */
const byDer = new Map<string, CertificateIdentity>()
const CACHE_MAX = 1024

/** Whom the certificate (DER or PEM) names; a certificate that cannot be parsed names nobody. */
export function certificateIdentity(certificate: Buffer | string): CertificateIdentity {
  const key = typeof certificate === 'string' ? certificate : certificate.toString('latin1')
  const cached = byDer.get(key)
  if (cached !== undefined) return cached
  let identity: CertificateIdentity
  try {
    identity = identityOfSubjectAltName(new X509Certificate(certificate).subjectAltName)
  } catch {
    identity = null
  }
  if (byDer.size >= CACHE_MAX) byDer.clear()
  byDer.set(key, identity)
  return identity
}

/** What the identity checks need of a received call: grpc-js calls' `getAuthContext()` (server-interceptors.js). */
export interface AuthContextSource {
  /** Absent: not a gRPC call (unit tests' plain objects), which has no certificate. */
  getAuthContext?(): { transportSecurityType?: string; sslPeerCertificate?: { raw?: Buffer } } | null
}

/**
 * Whom the call's client certificate names. grpc-js (1.14, BaseServerInterceptingCall.getAuthContext)
 * gives the peer certificate only when the session's socket is a TLSSocket whose peer was verified
 * (`socket.authorized`): against our CA, since a server with --tls-ca trusts that CA alone.
 */
export function callCertificateIdentity(call: AuthContextSource): CertificateIdentity {
  const context = call.getAuthContext?.()
  if (context?.transportSecurityType !== 'ssl') return null
  const raw = context.sslPeerCertificate?.raw
  return Buffer.isBuffer(raw) ? certificateIdentity(raw) : null
}

/** How a certificate's identity reads in a message. */
export function describeIdentity(identity: CertificateIdentity): string {
  if (identity === null) return 'no cloudai SPIFFE ID'
  return identity.role === 'master' ? MASTER_SPIFFE_ID : workerSpiffeId(identity.workerId)
}

/**
 * Node's hostname check, then: the server's certificate must name the master. For the channel a
 * worker that uses its own SPIFFE ID opens to its master: the CA signing a certificate for the
 * master's address is not enough, it must be the master's.
 */
export function checkMasterServerIdentity(host: string, cert: PeerCertificate): Error | undefined {
  const hostError = checkServerIdentity(host, cert)
  if (hostError) return hostError
  const identity = Buffer.isBuffer(cert.raw) ? certificateIdentity(cert.raw) : null
  if (identity?.role === 'master') return undefined
  return new Error(`the certificate of ${host} names ${describeIdentity(identity)}, not ${MASTER_SPIFFE_ID}: a worker whose certificate carries its SPIFFE ID calls only a master whose certificate carries ${MASTER_SPIFFE_ID} (give the master one whose URI SAN is that)`)
}
