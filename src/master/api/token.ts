import { createHash, timingSafeEqual } from 'node:crypto'

// The API token check. Digests of both sides are compared, so that neither the comparison's time
// nor an early length mismatch tells a caller how much of a guess was right.

export class ApiToken {
  private readonly digest: Buffer

  constructor(token: string) {
    this.digest = sha256(token)
  }

  /** `Authorization: Bearer <token>` (the scheme is case-insensitive, as RFC 7235 says). */
  acceptsHeader(authorization: string): boolean {
    const m = /^bearer +(\S+) *$/i.exec(authorization)
    return m !== null && this.accepts(m[1]!)
  }

  accepts(candidate: string): boolean {
    return timingSafeEqual(this.digest, sha256(candidate))
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}
