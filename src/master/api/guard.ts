import { isIP } from 'node:net'
import { hostname as osHostname, networkInterfaces } from 'node:os'
import type { HttpRequest } from 'uWebSockets.js'
import { C, type Counters } from '../counters.js'
import { CloudaiError, type ErrorCode } from '../../shared/errors.js'

// What every HTTP request and WebSocket upgrade must pass before a route sees it:
// - framing that every hop reads the same way: one Content-Length, or Transfer-Encoding: chunked,
//   never both. A proxy that takes the other Content-Length than we do, or the Transfer-Encoding
//   where we take the Content-Length, sees the rest of the body as a second request (smuggling);
// - a request line and headers of a sane size (414, 431), as nginx and Node's http server limit them;
// - a Host this master answers to: a page on a DNS name its attacker re-points at 127.0.0.1 (DNS
//   rebinding) is same-origin to the browser, and only its Host header gives it away;
// - an Origin, when a browser sent one, of the master itself or of --api-allow-origin: a page on
//   any other site may send simple requests (POST without a preflight) and open WebSockets to us.
// Clients without a browser (the CLI, curl, Prometheus) send no Origin and are not affected.

/** The request line (method, target, version), as nginx's default buffer holds it. */
export const MAX_REQUEST_LINE_BYTES = 8 * 1024
/** Header fields, all together, as Node's http server limits them. */
export const MAX_HEADER_BYTES = 16 * 1024

/** Names every master answers to: loopback, whatever the interface it is bound to. */
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1']
const WILDCARD_BINDS = new Set(['0.0.0.0', '::', ''])
// Host names: dot-separated labels of letters, digits and hyphens (RFC 1123), and underscores, which
// Docker and Compose service names have.
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/

/** The machine's own names, read once when the API is created (used when it is bound to a wildcard address). */
export interface MachineNames {
  hostname: string
  addresses: readonly string[]
}

export function machineNames(): MachineNames {
  const addresses: string[] = []
  for (const list of Object.values(networkInterfaces())) for (const nic of list ?? []) addresses.push(nic.address)
  return { hostname: osHostname(), addresses }
}

/** A name as Host headers are compared: lower case, no brackets around IPv6, no trailing dot. */
function normalName(name: string): string {
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name
  return bare.toLowerCase().replace(/\.$/, '')
}

/**
 * One `--api-allow-host` value: a host name or an IP address (IPv6 bare or in brackets), without a
 * port. Throws CLOUDAI_BAD_CONFIG saying what is accepted.
 */
export function parseAllowedHost(value: string, field = '--api-allow-host'): string {
  const name = normalName(value.trim())
  if (name === '*') throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} does not take *: any Host would let a DNS-rebinding page in; list the names the master is reached by`)
  if (isIP(name) !== 0 || HOST_NAME.test(name)) return name
  const hint = /:\d+$/.test(value) ? ' (without a port: the port is not checked, since port forwarding changes it)' : ''
  throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(value.slice(0, 80))} is not a host name or an IP address${hint}, for example cloudai.example.com or 10.0.0.5`)
}

/**
 * One `--api-allow-origin` value: `http://` or `https://`, a host and an optional port, nothing
 * after it (a trailing `/` is dropped). Returned as browsers send it in Origin (URL.origin).
 */
export function parseAllowedOrigin(value: string, field = '--api-allow-origin'): string {
  const text = value.trim()
  if (text === '*' || text === 'null') {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} does not take ${text}: it would let any page drive the API; list the origins of the pages that may, for example https://ops.example.com`)
  }
  const url = URL.canParse(text) ? new URL(text) : null
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || /[?#]/.test(text)) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${JSON.stringify(text.slice(0, 80))} is not an origin: use http:// or https://, a host and an optional port, nothing after it (for example https://ops.example.com:8443)`)
  }
  return url.origin
}

/**
 * The names a master bound to `bindHost` answers to by default: loopback, the bound address or name,
 * and for a wildcard bind (0.0.0.0, ::) the machine's host name and every address of its interfaces.
 */
export function defaultAllowedHosts(bindHost: string, machine: MachineNames): Set<string> {
  const names = new Set(LOOPBACK_NAMES)
  const bound = normalName(bindHost)
  if (bound !== '') names.add(bound)
  if (WILDCARD_BINDS.has(bound)) {
    if (machine.hostname !== '') names.add(normalName(machine.hostname))
    for (const address of machine.addresses) names.add(normalName(address))
  }
  return names
}

/** `name[:port]` of a Host header (IPv6 in brackets), or null when it is not one. */
function parseHostHeader(value: string): { name: string; port: number | null } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(value)
  if (!m) return null
  const port = m[2] === undefined ? null : Number(m[2])
  if (port !== null && port > 65535) return null
  return { name: normalName(m[1]!), port }
}

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443 }

export interface RequestGuardOptions {
  /** The interface the API is bound to (config.httpHost). */
  bindHost: string
  /** The port the API is bound to; read per request, since it is known only once it listens. */
  port: () => number
  /** Host names and addresses requests may name besides the defaults (--api-allow-host). */
  allowHosts?: readonly string[]
  /** Origins of pages, besides the master's own, whose requests are served (--api-allow-origin). */
  allowOrigins?: readonly string[]
  /** The machine's names; defaults to os.hostname() and os.networkInterfaces() at construction. */
  machine?: MachineNames
}

/** What one pass over a request's headers found. */
interface HeaderScan {
  bytes: number
  contentLengths: string[]
  transferEncodings: string[]
  hosts: string[]
  origin: string | null
}

/**
 * Checks each request's framing, size, Host and Origin (see the top of this file). Holds only the
 * allow-lists: it runs synchronously inside the uWS handler, before any other work.
 */
export class RequestGuard {
  private readonly hosts: Set<string>
  private readonly origins: Set<string>

  constructor(private readonly opts: RequestGuardOptions) {
    this.hosts = defaultAllowedHosts(opts.bindHost, opts.machine ?? machineNames())
    for (const host of opts.allowHosts ?? []) this.hosts.add(parseAllowedHost(host))
    this.origins = new Set((opts.allowOrigins ?? []).map((o) => parseAllowedOrigin(o)))
  }

  /** The Host names this master answers to, sorted (for the start-up log and tests). */
  get allowedHosts(): string[] {
    return [...this.hosts].sort()
  }

  /** Why the request is refused, or null. Must run inside the uWS handler (`req` dies with it). */
  check(req: HttpRequest): CloudaiError | null {
    const scan = scanHeaders(req)
    const framing = framingError(scan)
    if (framing) return framing
    const query = req.getQuery()
    // "GET " + target + " HTTP/1.1": the target as it came, its query included.
    const lineBytes = req.getCaseSensitiveMethod().length + 1 + req.getUrl().length + (query ? 1 + query.length : 0) + 9
    if (lineBytes > MAX_REQUEST_LINE_BYTES) {
      return new CloudaiError('CLOUDAI_URI_TOO_LONG', `the request line is ${lineBytes} bytes, more than the ${MAX_REQUEST_LINE_BYTES} accepted: send less in the path and query`)
    }
    if (scan.bytes > MAX_HEADER_BYTES) {
      return new CloudaiError('CLOUDAI_HEADERS_TOO_LARGE', `the request headers are ${scan.bytes} bytes, more than the ${MAX_HEADER_BYTES} accepted`)
    }
    const host = this.hostError(scan.hosts)
    if (host) return host
    return scan.origin === null ? null : this.originError(scan.origin, scan.hosts[0]!)
  }

  private hostError(hosts: readonly string[]): CloudaiError | null {
    // uWS refuses a request with no Host or two itself (400) before it gets here; not relied on.
    if (hosts.length !== 1) return new CloudaiError('CLOUDAI_BAD_HOST', `a request needs exactly one Host header, this one has ${hosts.length}`)
    const parsed = parseHostHeader(hosts[0]!)
    if (parsed && this.hosts.has(parsed.name)) return null
    return new CloudaiError(
      'CLOUDAI_BAD_HOST',
      `Host ${JSON.stringify(hosts[0]!.slice(0, 100))} is not a name this master answers to (it answers to ${this.allowedHosts.join(', ')}); add the name the master is reached by with --api-allow-host`,
    )
  }

  /**
   * The master's own origin is one whose host is a name it answers to, on the port the client
   * reached it on (the Host header's: behind `docker -p 9000:8080` or `ssh -L` that is not the bound
   * one) or on the bound port. Any scheme of the two: behind a TLS proxy the page is https.
   */
  private originError(origin: string, host: string): CloudaiError | null {
    const url = origin !== 'null' && URL.canParse(origin) ? new URL(origin) : null
    const defaultPort = url ? DEFAULT_PORTS[url.protocol] : undefined
    if (url && defaultPort !== undefined) {
      if (this.origins.has(url.origin)) return null
      const port = url.port === '' ? defaultPort : Number(url.port)
      const reached = parseHostHeader(host)
      if (this.hosts.has(normalName(url.hostname)) && (port === (reached?.port ?? defaultPort) || port === this.opts.port())) return null
    }
    return new CloudaiError(
      'CLOUDAI_BAD_ORIGIN',
      `requests from pages of ${JSON.stringify(origin.slice(0, 100))} are refused: only the master's own pages and the origins of --api-allow-origin may call the API from a browser`,
    )
  }
}

function scanHeaders(req: HttpRequest): HeaderScan {
  const scan: HeaderScan = { bytes: 0, contentLengths: [], transferEncodings: [], hosts: [], origin: null }
  req.forEach((key, value) => {
    // "key: value\r\n"
    scan.bytes += key.length + value.length + 4
    if (key === 'content-length') scan.contentLengths.push(value)
    else if (key === 'transfer-encoding') scan.transferEncodings.push(value)
    else if (key === 'host') scan.hosts.push(value)
    else if (key === 'origin') scan.origin ??= value
  })
  return scan
}

/**
 * RFC 9112 6.3: a message with both Transfer-Encoding and Content-Length, with a Transfer-Encoding
 * other than chunked, or with an invalid Content-Length (two of them included, even equal) cannot
 * be framed reliably; the server must answer 400 and close the connection.
 */
function framingError(scan: HeaderScan): CloudaiError | null {
  const { contentLengths: cl, transferEncodings: te } = scan
  if (cl.length > 0 && te.length > 0) return badFraming('both Content-Length and Transfer-Encoding')
  if (cl.length > 1) return badFraming(`${cl.length} Content-Length headers`)
  if (cl.length === 1 && !/^\d{1,15}$/.test(cl[0]!)) return badFraming(`Content-Length ${JSON.stringify(cl[0]!.slice(0, 40))}, which is not a number of bytes`)
  if (te.length > 1 || (te.length === 1 && te[0]!.toLowerCase() !== 'chunked')) return badFraming(`Transfer-Encoding ${JSON.stringify(te.join(', ').slice(0, 60))}; only chunked is accepted`)
  return null
}

function badFraming(what: string): CloudaiError {
  return new CloudaiError('CLOUDAI_BAD_FRAMING', `the request has ${what}: its body cannot be told apart from the next request; send one Content-Length, or Transfer-Encoding: chunked`)
}

/** A refusal that leaves the connection unusable: what follows cannot be framed. */
export function closesConnection(err: CloudaiError): boolean {
  return err.code === 'CLOUDAI_BAD_FRAMING'
}

const REFUSAL_COUNTERS: Partial<Record<ErrorCode, number>> = {
  CLOUDAI_BAD_FRAMING: C.HTTP_REFUSED_FRAMING,
  CLOUDAI_URI_TOO_LONG: C.HTTP_REFUSED_URI_TOO_LONG,
  CLOUDAI_HEADERS_TOO_LARGE: C.HTTP_REFUSED_HEADERS_TOO_LARGE,
  CLOUDAI_BAD_HOST: C.HTTP_REFUSED_HOST,
  CLOUDAI_BAD_ORIGIN: C.HTTP_REFUSED_ORIGIN,
  CLOUDAI_UNSUPPORTED_MEDIA_TYPE: C.HTTP_REFUSED_MEDIA_TYPE,
}

/** Counts a refusal under cloudai_http_refused_total{reason}; other errors are not counted here. */
export function countRefusal(counters: Counters | undefined, err: unknown): void {
  const slot = err instanceof CloudaiError ? REFUSAL_COUNTERS[err.code] : undefined
  if (slot !== undefined) counters?.add(slot)
}
