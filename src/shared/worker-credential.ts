import { chmodSync, closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { createHash, createHmac, randomBytes, randomFillSync, timingSafeEqual } from 'node:crypto'
import { isIP } from 'node:net'
import { inspect } from 'node:util'
import type * as grpc from '@grpc/grpc-js'
import { CloudaiError } from './errors.js'
import { READ_ONLY_CODES } from './data-dir-lock.js'

// One credential per worker, and the master's proof of itself, in one place for the master, its
// dial threads and the worker.
//
// The master holds a secret key (never in the store). A worker's token is derived from it:
// HMAC(key, worker id, nonce), where the nonce is random and new at each issue. The store keeps
// the nonce and the token's SHA-256 only, so nobody who reads the store, its backups or the logs
// can present a token, and the master can recompute every token it issued without keeping one.
//
// Worker to master: `authorization: Bearer <token>` on every call. The master looks the token up
// by its hash, which binds the call to one worker id; message fields never choose the identity.
// Master to worker: `cloudai-master-proof: v2.<ms>.<nonce>.<mac>` where mac = HMAC(token, worker id,
// method, subject, ms, nonce), and the worker takes each nonce once. Only a holder of the token can
// make one, and only the master and that worker hold it: another worker, a stranger or a reader of
// the store cannot drive a worker, and a proof seen on the way cannot be used again.

export const AUTHORIZATION_METADATA = 'authorization'
export const MASTER_PROOF_METADATA = 'cloudai-master-proof'

/** `cwt1_` and 43 base64url characters (256 bits). */
const TOKEN_PATTERN = /^cwt1_[A-Za-z0-9_-]{43}$/
const NONCE_BYTES = 16
const KEY_BYTES = 32
/** How far a worker's clock may be from its master's for a proof to count (Kerberos' default). */
export const PROOF_MAX_SKEW_MS = 5 * 60_000

export type MasterMethod = 'MasterRegister' | 'AssignTask' | 'CancelTask' | 'StreamTaskLogs'

/** What a worker record keeps of its credential: nothing that lets anyone present it. */
export interface StoredCredential {
  nonce: string
  /** SHA-256 of the token, hex. */
  hash: string
  issuedAt: number
  /** When the worker first presented this token; null until it has. */
  presentedAt: number | null
  /**
   * True once the worker has presented any of its tokens, or its client certificate (mTLS), kept
   * through rotations: from then on every call for its id must carry a token or that certificate,
   * from loopback too. A rotation must not reopen the
   * tokenless way in that the quick start on one machine uses.
   */
  enforced: boolean
  /** The token this one replaced, accepted until the worker presents the new one or until expiresAt. */
  previous: { nonce: string; hash: string; expiresAt: number } | null
}

/**
 * A StoredCredential read back from a store (SQLite's JSON column), checked field by field: a
 * damaged one is null, which costs the worker its credential (an operator rotates a new one), not
 * the worker. `enforced` is absent from nothing we wrote; for safety it is read as "presented".
 */
export function readStoredCredential(v: unknown): StoredCredential | null {
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  const time = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x)
  if (typeof o.nonce !== 'string' || typeof o.hash !== 'string' || !/^[0-9a-f]{64}$/.test(o.hash) || !time(o.issuedAt)) return null
  const presentedAt = time(o.presentedAt) ? o.presentedAt : null
  let previous: StoredCredential['previous'] = null
  const p = o.previous as Record<string, unknown> | null | undefined
  if (p && typeof p === 'object' && typeof p.nonce === 'string' && typeof p.hash === 'string' && time(p.expiresAt)) previous = { nonce: p.nonce, hash: p.hash, expiresAt: p.expiresAt }
  return { nonce: o.nonce, hash: o.hash, issuedAt: o.issuedAt, presentedAt, enforced: typeof o.enforced === 'boolean' ? o.enforced : presentedAt !== null, previous }
}

export function validateToken(value: unknown, field = 'token'): string {
  if (typeof value !== 'string' || !TOKEN_PATTERN.test(value)) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} is not a worker token: it is the cwt1_… value that \`cloudai register\` printed (48 characters)`)
  }
  return value
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

/** The master's secret. Tokens of workers are derived from it; losing it means issuing new ones. */
export class MasterKey {
  private constructor(private readonly secret: Buffer) {}

  /** From raw bytes (tests, and the dial threads, which get the key once through workerData). */
  static fromBytes(bytes: Uint8Array): MasterKey {
    if (bytes.length !== KEY_BYTES) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `a master key is ${KEY_BYTES} bytes, got ${bytes.length}`)
    return new MasterKey(Buffer.from(bytes))
  }

  static generate(): MasterKey {
    return new MasterKey(randomBytes(KEY_BYTES))
  }

  /**
   * Reads the key file, or creates it (mode 0600, fsynced) when there is none.
   *
   * Created whole or not at all: written to a temporary file beside it, fsynced, then linked into
   * place. link(2) fails when the name exists, so of two masters creating it at once exactly one
   * key wins and the other reads that one, never a half-written file; and a crash while writing
   * leaves a stray temporary file, never a key file that no longer holds a key.
   * @throws CLOUDAI_DATA_DIR_READONLY when it must be created and its directory cannot be written
   *   (a read-only mount, its permissions); CLOUDAI_BAD_CONFIG when it cannot be read or created
   *   otherwise, or does not hold a key
   */
  static loadOrCreate(path: string): { key: MasterKey; created: boolean } {
    const existing = readKeyFile(path)
    if (existing) return { key: existing, created: false }
    const key = MasterKey.generate()
    const dir = dirname(path)
    const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
    try {
      mkdirSync(dir, { recursive: true })
      const fd = openSync(temp, 'wx', 0o600)
      try {
        writeSync(fd, `${key.secret.toString('hex')}\n`)
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      // Whatever the umask made of the mode.
      chmodSync(temp, 0o600)
      linkSync(temp, path)
    } catch (err) {
      rmSync(temp, { force: true })
      const code = (err as NodeJS.ErrnoException).code ?? ''
      // Another master created it first: theirs is the key.
      if (code === 'EEXIST') return { key: readKeyFile(path) ?? MasterKey.loadOrCreate(path).key, created: false }
      if (READ_ONLY_CODES.has(code)) {
        throw new CloudaiError(
          'CLOUDAI_DATA_DIR_READONLY',
          `the directory ${dir} cannot be written (${code}: ${(err as Error).message}): the master creates its key ${path} there on its first start; make it writable (a read-only mount, its permissions) and start again`,
          { dataDir: dir, errno: code },
        )
      }
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot create the master key ${path}: ${(err as Error).message}`)
    }
    rmSync(temp, { force: true })
    syncDir(dir)
    return { key, created: true }
  }

  // Never the secret in a log line or a JSON dump, whatever object it ends up in.
  [inspect.custom](): string {
    return 'MasterKey { <secret> }'
  }

  toJSON(): string {
    return '<master key>'
  }

  /** The bytes, to hand the key to a dial thread. */
  bytes(): Uint8Array {
    return new Uint8Array(this.secret)
  }

  /** A new credential for `workerId`: the token (shown once) and what the store keeps of it. */
  issue(workerId: string, now: number): { token: string; stored: StoredCredential } {
    const nonce = randomBytes(NONCE_BYTES).toString('base64url')
    const token = this.tokenFor(workerId, nonce)
    return { token, stored: { nonce, hash: tokenHash(token), issuedAt: now, presentedAt: null, enforced: false, previous: null } }
  }

  tokenFor(workerId: string, nonce: string): string {
    return `cwt1_${createHmac('sha256', this.secret).update(`cloudai-worker-token\0${workerId}\0${nonce}`).digest('base64url')}`
  }

  /**
   * A credential read from the store with its hashes recomputed from this key: the store is not
   * trusted to say which token is a worker's (whoever can write it could put the hash of a token
   * of their own there). `changed` when a stored hash was not the key's: the store was written by
   * someone else, or the key is not the one the tokens were issued with.
   */
  rehash(workerId: string, cred: StoredCredential): { credential: StoredCredential; changed: boolean } {
    const hash = tokenHash(this.tokenFor(workerId, cred.nonce))
    const previous = cred.previous ? { ...cred.previous, hash: tokenHash(this.tokenFor(workerId, cred.previous.nonce)) } : null
    const changed = hash !== cred.hash || (previous !== null && previous.hash !== cred.previous!.hash)
    return { credential: { ...cred, hash, previous }, changed }
  }

  /** The tokens a worker may hold now: its current one and, during a rotation, the one before. */
  liveTokens(workerId: string, cred: StoredCredential, now: number): string[] {
    return liveNonces(cred, now).map((nonce) => this.tokenFor(workerId, nonce))
  }

  /** Proofs for a call to a worker, one per token it may hold (it accepts any that matches). */
  proofs(workerId: string, cred: StoredCredential, method: MasterMethod, subject: string, now: number): string[] {
    return this.proofsFor(workerId, liveNonces(cred, now), method, subject, now)
  }

  /** The same from the nonces alone: what a dial thread gets in its request (no record crosses threads). */
  proofsFor(workerId: string, nonces: readonly string[], method: MasterMethod, subject: string, now: number): string[] {
    return nonces.map((nonce) => masterProof(this.tokenFor(workerId, nonce), workerId, method, subject, now))
  }
}

/**
 * The key in the file at `path`, or null when there is no file.
 * @throws CLOUDAI_BAD_CONFIG when it cannot be read or does not hold a key
 */
function readKeyFile(path: string): MasterKey | null {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot read the master key ${path}: ${(err as Error).message}`)
  }
  const hex = text.trim()
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `the master key ${path} is not 64 hex characters; restore it from a backup, or remove it to issue every worker a new token`)
  return MasterKey.fromBytes(Buffer.from(hex, 'hex'))
}

/** The new name survives a power cut; a file system that cannot fsync a directory is left be. */
function syncDir(dir: string): void {
  let fd: number | null = null
  try {
    fd = openSync(dir, 'r')
    fsyncSync(fd)
  } catch {
    // Not every platform opens or syncs a directory; the key file itself is synced.
  } finally {
    if (fd !== null) closeSync(fd)
  }
}

/** The nonces of the tokens a worker may hold at `now`: its current one, and the one before while in its grace. */
export function liveNonces(cred: StoredCredential, now: number): string[] {
  return cred.previous && cred.previous.expiresAt > now ? [cred.nonce, cred.previous.nonce] : [cred.nonce]
}

/**
 * The metadata of a call to a worker: one proof per live token, none for a worker without a
 * credential. The caller brings the Metadata: this module is also loaded by the SQLite thread,
 * which must not load grpc-js for it (about 60 ms of CPU at every start).
 */
export function proofMetadata(proofs: readonly string[], metadata: grpc.Metadata): grpc.Metadata {
  for (const p of proofs) metadata.add(MASTER_PROOF_METADATA, p)
  return metadata
}

// Every call to a worker carries a proof with a fresh nonce. A randomBytes() call each costs 2.3 µs
// in a tight loop and was 16 ms of main-thread samples over ~1,000 AssignTask calls in a profile of
// time-to-assign (the call into the CSPRNG, not the 12 bytes). The bytes come from the same CSPRNG,
// drawn NONCE_POOL_BYTES at a time (0.12 µs a nonce), as crypto.randomUUID() pools its own; each
// byte is handed out once.
const PROOF_NONCE_BYTES = 12
const NONCE_POOL_BYTES = PROOF_NONCE_BYTES * 256
const noncePool = Buffer.allocUnsafeSlow(NONCE_POOL_BYTES)
let noncePoolAt = NONCE_POOL_BYTES

/** 12 random bytes as base64url (16 characters), for one proof. */
function proofNonce(): string {
  if (noncePoolAt >= NONCE_POOL_BYTES) {
    randomFillSync(noncePool)
    noncePoolAt = 0
  }
  const nonce = noncePool.toString('base64url', noncePoolAt, noncePoolAt + PROOF_NONCE_BYTES)
  noncePoolAt += PROOF_NONCE_BYTES
  return nonce
}

function proofMac(token: string, workerId: string, method: MasterMethod, subject: string, at: number, nonce: string): Buffer {
  return createHmac('sha256', token).update(`cloudai-master-proof\0${workerId}\0${method}\0${subject}\0${at}\0${nonce}`).digest()
}

/**
 * `v2.<ms>.<nonce>.<mac>`: the master's proof, bound to the worker, the method, what the call is
 * about and the time, and made once: its random nonce lets the worker refuse a second use (see
 * ProofReplayGuard), so whoever sees a proof (a listener at the worker's registered address, say)
 * cannot send it again, with the same call or another.
 */
export function masterProof(token: string, workerId: string, method: MasterMethod, subject: string, at: number, nonce = proofNonce()): string {
  return `v2.${at}.${nonce}.${proofMac(token, workerId, method, subject, at, nonce).toString('base64url')}`
}

/**
 * The proof among `values` made with `token` for this call within the clock skew, as
 * `{nonce, at}`, or null. During a rotation the master sends two; HTTP/2 (Node's) joins repeated
 * headers with ", ", so a value may hold several.
 */
export function matchMasterProof(token: string, workerId: string, method: MasterMethod, subject: string, values: readonly unknown[], now: number): { nonce: string; at: number } | null {
  const proofs = values.flatMap((v) => (typeof v === 'string' ? v.split(',').map((p) => p.trim()) : [v]))
  for (const value of proofs.slice(0, 4)) {
    if (typeof value !== 'string') continue
    const m = /^v2\.(\d{1,16})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/.exec(value)
    if (!m) continue
    const at = Number(m[1])
    if (Math.abs(now - at) > PROOF_MAX_SKEW_MS) continue
    const given = Buffer.from(m[3]!, 'base64url')
    if (given.length === 32 && timingSafeEqual(given, proofMac(token, workerId, method, subject, at, m[2]!))) return { nonce: m[2]!, at }
  }
  return null
}

/** True when one of `values` is a proof made with `token` for this call (replays not counted). */
export function verifyMasterProof(token: string, workerId: string, method: MasterMethod, subject: string, values: readonly unknown[], now: number): boolean {
  return matchMasterProof(token, workerId, method, subject, values, now) !== null
}

/**
 * The nonces of proofs a worker took, until they are too old to be taken anyway: each proof
 * counts once. Bounded: a master sends a handful of calls a second at most; past `max` nonces
 * still within the skew, new proofs are refused (never a live nonce forgotten).
 */
export class ProofReplayGuard {
  private readonly seen = new Map<string, number>()

  constructor(private readonly max = 100_000) {}

  /** False when this nonce was taken before (a replay); else records it. */
  take(nonce: string, at: number, now: number): boolean {
    this.prune(now)
    if (this.seen.has(nonce)) return false
    // Full of nonces still within the skew: refused rather than forgetting one that could come back.
    if (this.seen.size >= this.max) return false
    this.seen.set(nonce, at + PROOF_MAX_SKEW_MS)
    return true
  }

  private prune(now: number): void {
    for (const [nonce, until] of this.seen) {
      if (until >= now) break
      this.seen.delete(nonce)
    }
  }
}

/**
 * What an AssignTask proof is bound to: the task, its attempt, and a digest of everything that
 * decides what runs (image, command, environment, timeout, resources), so that a proof for one
 * task cannot carry another command. Master and worker compute it from the message each has.
 */
export function assignSubject(msg: {
  task_id?: unknown; attempt?: unknown; docker_image?: unknown; command?: unknown; env?: unknown; timeout_ms?: unknown
  req_cpu?: unknown; req_memory?: unknown; req_storage?: unknown; req_gpu?: unknown
}): string {
  const env = msg.env !== null && typeof msg.env === 'object' ? Object.entries(msg.env as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : []
  const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0))
  const what = JSON.stringify([String(msg.docker_image ?? ''), String(msg.command ?? ''), env, num(msg.timeout_ms), num(msg.req_cpu), num(msg.req_memory), num(msg.req_storage), num(msg.req_gpu)])
  return `${String(msg.task_id ?? '')}/${num(msg.attempt)}/${createHash('sha256').update(what).digest('base64url')}`
}

/** What a credential check needs of a received call: its metadata and its peer (`call.getPeer()`). */
export interface CallSource {
  metadata: grpc.Metadata
  getPeer(): string
}

/** What a call's `authorization` metadata says: no token, a bearer token, or something else. */
export function bearerOf(metadata: grpc.Metadata): { kind: 'none' } | { kind: 'token'; token: string } | { kind: 'malformed' } {
  const values = metadata.get(AUTHORIZATION_METADATA)
  if (values.length === 0) return { kind: 'none' }
  if (values.length > 1 || typeof values[0] !== 'string') return { kind: 'malformed' }
  const m = /^Bearer (\S{1,1024})$/.exec(values[0])
  return m ? { kind: 'token', token: m[1]! } : { kind: 'malformed' }
}

/** The peer's IP from grpc-js' `getPeer()` ("127.0.0.1:5000", "[::1]:5000", "ipv4:…"); null when it names none. */
export function peerIp(peer: string): string | null {
  const bare = peer.replace(/^ipv[46]:/, '')
  const bracketed = /^\[([^\]]+)\]:\d+$/.exec(bare)
  if (bracketed) return isIP(bracketed[1]!) ? bracketed[1]! : null
  // grpc-js writes IPv6 peers without brackets ("::1:47320"), always with the port after the last
  // colon; "::1:5000" alone would also read as an address, so the port is taken off first.
  const colon = bare.lastIndexOf(':')
  const ip = colon > 0 && /^\d{1,5}$/.test(bare.slice(colon + 1)) ? bare.slice(0, colon) : ''
  if (isIP(ip)) return ip
  return isIP(bare) ? bare : null
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms: callers on this machine. */
export function isLoopback(ip: string | null): boolean {
  if (ip === null) return false
  const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip
  if (isIP(v4) === 4) return v4.startsWith('127.')
  return ip === '::1'
}
