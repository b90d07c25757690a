import { lookup } from 'node:dns/promises'
import { createServer as createNetServer, isIP, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket, type TlsOptions } from 'node:tls'
import type { Duplex } from 'node:stream'
import { bindAddress } from './advertise.js'
import { RefusalThrottle } from './cluster-auth.js'
import { CloudaiError } from './errors.js'
import type { Logger } from './log.js'

// A gRPC port (the master's, and each worker's), in front of grpc-js. grpc-js has no bound on how many connections it
// accepts and none on how long a connection may take to speak HTTP/2 (a socket that never sends
// the preface stays open for good), so the listening sockets are ours: each accepted connection
// is counted and refused past the maximum, must deliver the HTTP/2 client preface (after its TLS
// handshake, with TLS) within the preface timeout, and only then is handed to grpc-js through
// Server.createConnectionInjector (grpc-js >= 1.11), which serves it like one it accepted itself.
//
// With TLS the handshake is ours too, on a tls.Server that never listens (Node's own
// verification: a CA means client certificates are required and checked), so that the preface can
// be read in the clear and the one bound covers handshake and preface together. The TLSSocket then
// goes to an injector with insecure credentials: grpc-js sees an encrypted socket all the same
// (session.encrypted, the peer certificate of call.getAuthContext()).

/** The client's HTTP/2 connection preface (RFC 9113 §3.4): 24 bytes every HTTP/2 client sends first. */
const H2_CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

export type ConnectionRefusal = 'max_connections' | 'max_per_peer' | 'preface_timeout' | 'bad_preface' | 'tls_handshake'

/** Why a port could not be bound, in words, with the flag that picks another. */
function bindFailure(err: NodeJS.ErrnoException, port: number, flag: string | undefined): string {
  const other = flag ? ` (choose another with ${flag}, or stop what holds it)` : ''
  if (err.code === 'EADDRINUSE') return `port ${port} is in use${other}`
  if (err.code === 'EADDRNOTAVAIL') return 'the host is not an address of this machine'
  if (err.code === 'EACCES') return `port ${port} needs privileges${flag ? ` (choose one above 1023 with ${flag})` : ''}`
  return err.message
}

/** The default preface timeout: a peer that has not spoken HTTP/2 by then is not a gRPC client. */
export const PREFACE_TIMEOUT_MS = 10_000

export interface GrpcListenerOptions {
  /** Bind host, bare (IPv6 literals without brackets); a name binds every address it resolves to. */
  host: string
  port: number
  /** Connections open at once, in every phase; one more is closed as soon as it is accepted. */
  maxConnections: number
  /** What the limit is called in the refusal's log line (the flag that sets it). */
  limitName?: string
  /**
   * Connections open at once from one address off this machine (loopback is exempt: every local
   * process shares it). Unset: no such bound (the master: many workers may sit behind one NAT).
   */
  maxPerPeer?: number
  prefaceTimeoutMs?: number
  /** TLS of the port (the handshake is done here); null: plaintext. */
  tls: TlsOptions | null
  /** Where a connection goes once its preface is in (buffered bytes unshifted): grpc-js's injector. */
  inject: (socket: Duplex) => void
  /** The flag that sets the port, named when it is in use (`--grpc-port`, `--port`). */
  portFlag?: string
  /** Told of each connection taken or refused (the master counts them; the worker does not). */
  onConnection?: (outcome: 'accepted' | ConnectionRefusal) => void
  log: Logger
  now?: () => number
}

/** A TLS connection between accept and its TLS socket's first bytes: found again by its TCP 4-tuple. */
interface AwaitingTls {
  raw: Socket
  timer: NodeJS.Timeout
}

export class GrpcListener {
  private readonly servers: NetServer[] = []
  private readonly sockets = new Set<Socket>()
  /** Open connections per remote address, with maxPerPeer only. */
  private readonly perPeer = new Map<string, number>()
  private readonly awaitingTls = new Map<string, AwaitingTls>()
  private readonly tlsServer: TlsServer | null
  private readonly prefaceTimeoutMs: number
  private readonly now: () => number
  private readonly limitLog = new RefusalThrottle()
  private closing = false
  private closed: Promise<void> = Promise.resolve()

  constructor(private readonly opts: GrpcListenerOptions) {
    this.prefaceTimeoutMs = opts.prefaceTimeoutMs ?? PREFACE_TIMEOUT_MS
    this.now = opts.now ?? Date.now
    if (opts.tls) {
      // The handshake timeout is Node's default (120 s): the preface timer below fires first.
      const server = createTlsServer({ ...opts.tls, ALPNProtocols: ['h2'] })
      server.on('secureConnection', (socket: TLSSocket) => this.secured(socket))
      // A failed handshake (no certificate, one from another CA, plaintext): Node destroys it.
      server.on('tlsClientError', (err: Error) => {
        this.refused('tls_handshake')
        opts.log.debug({ err: err.message }, 'gRPC TLS handshake failed')
      })
      this.tlsServer = server
    } else {
      this.tlsServer = null
    }
  }

  /** Connections open now, in every phase (awaiting the preface or served by grpc-js). */
  get open(): number {
    return this.sockets.size
  }

  /**
   * Listens on every address of the host, all on one port (the first one bound picks it for port 0).
   * @throws CloudaiError CLOUDAI_BAD_CONFIG when no address can be bound
   */
  async start(): Promise<number> {
    const { host } = this.opts
    const wanted = bindAddress(host, this.opts.port)
    let addresses: string[]
    try {
      addresses = isIP(host) !== 0 ? [host] : [...new Set((await lookup(host, { all: true, verbatim: true })).map((a) => a.address))]
    } catch (err) {
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot listen for gRPC on ${wanted}: ${(err as Error).message}`)
    }
    let port = this.opts.port
    const errors: string[] = []
    const reasons: string[] = []
    for (const address of addresses) {
      try {
        port = await this.listen(address, port)
      } catch (err) {
        const reason = bindFailure(err as NodeJS.ErrnoException, port, this.opts.portFlag)
        reasons.push(reason)
        errors.push(`${bindAddress(address, port)}: ${reason}`)
      }
    }
    if (this.servers.length === 0) {
      // One address: its reason alone (the address is in the message already).
      throw new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot listen for gRPC on ${wanted}: ${addresses.length === 1 ? reasons[0] : errors.join('; ')}`)
    }
    if (errors.length > 0) this.opts.log.warn({ errors }, `gRPC listens on ${this.servers.length} of the ${addresses.length} addresses of ${host}; not on ${errors.join('; ')}`)
    return port
  }

  private listen(address: string, port: number): Promise<number> {
    const server = createNetServer({ noDelay: true }, (socket) => this.accepted(socket))
    return new Promise<number>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: address, port }, () => {
        server.off('error', reject)
        // accept() can fail later (EMFILE when something else used up the descriptors): logged,
        // never a crash; libuv keeps accepting once descriptors are free again.
        server.on('error', (err: NodeJS.ErrnoException) => this.opts.log.error({ err: err.message, code: err.code }, `gRPC listener error: ${err.message}`))
        this.servers.push(server)
        const a = server.address()
        resolve(typeof a === 'object' && a ? a.port : port)
      })
    })
  }

  private accepted(raw: Socket): void {
    if (this.closing) {
      raw.destroy()
      return
    }
    if (this.sockets.size >= this.opts.maxConnections) {
      // Closed before a byte is read: the peer sees its connection closed, and grpc-js clients
      // retry with their reconnection backoff.
      raw.destroy()
      this.refused('max_connections')
      const admitted = this.limitLog.admit('limit', this.now())
      if (admitted) {
        const held = admitted.suppressed > 0 ? ` (${admitted.suppressed} more refused since the last line)` : ''
        this.opts.log.warn(
          { open: this.sockets.size, max: this.opts.maxConnections, suppressed: admitted.suppressed },
          `Refused a gRPC connection: ${this.sockets.size} are open, the ${this.opts.limitName ?? '--grpc-max-connections'} limit${held}; logged at most once a minute`,
        )
      }
      return
    }
    const peer = raw.remoteAddress ?? ''
    const perPeer = this.opts.maxPerPeer !== undefined && !isLoopbackAddress(peer)
    if (perPeer) {
      const n = this.perPeer.get(peer) ?? 0
      if (n >= this.opts.maxPerPeer!) {
        // One address cannot take every slot and lock the real callers out.
        raw.destroy()
        this.refused('max_per_peer')
        const admitted = this.limitLog.admit(`peer ${peer}`, this.now())
        if (admitted) this.opts.log.warn({ peer, open: n, max: this.opts.maxPerPeer }, `Refused a gRPC connection from ${peer}: it has ${n} open, the most one address may have; logged at most once a minute per address`)
        return
      }
      this.perPeer.set(peer, n + 1)
      raw.once('close', () => {
        const left = (this.perPeer.get(peer) ?? 1) - 1
        if (left <= 0) this.perPeer.delete(peer)
        else this.perPeer.set(peer, left)
      })
    }
    this.sockets.add(raw)
    this.opts.onConnection?.('accepted')
    // Resets by peers are the normal end of many connections; grpc-js's session handles its own.
    raw.on('error', noop)
    const timer = setTimeout(() => {
      this.refused('preface_timeout')
      this.opts.log.debug({ peer: raw.remoteAddress, timeoutMs: this.prefaceTimeoutMs }, 'Closed a gRPC connection that sent no HTTP/2 preface in time')
      raw.destroy()
    }, this.prefaceTimeoutMs)
    timer.unref()
    raw.once('close', () => {
      clearTimeout(timer)
      this.sockets.delete(raw)
    })
    if (!this.tlsServer) {
      this.awaitPreface(raw, timer)
      return
    }
    const key = tupleOf(raw)
    this.awaitingTls.set(key, { raw, timer })
    raw.once('close', () => {
      if (this.awaitingTls.get(key)?.raw === raw) this.awaitingTls.delete(key)
    })
    this.tlsServer.emit('connection', raw)
  }

  /** The TLS handshake is done (and the client certificate checked): now the preface, in the clear. */
  private secured(socket: TLSSocket): void {
    const key = tupleOf(socket)
    const awaiting = this.awaitingTls.get(key)
    this.awaitingTls.delete(key)
    if (!awaiting || socket.alpnProtocol !== 'h2') {
      // Not a connection of ours (cannot happen), or a client that did not offer HTTP/2 by ALPN.
      if (awaiting) this.refused('bad_preface')
      socket.destroy()
      return
    }
    socket.on('error', noop)
    this.awaitPreface(socket, awaiting.timer)
  }

  /**
   * Reads until the 24 bytes of the preface are in; a byte that differs closes the connection at
   * once. The bytes read go back into the socket (Node's http2 reads what a socket already buffered
   * before it reads on), and the socket goes to grpc-js.
   */
  private awaitPreface(socket: Socket, timer: NodeJS.Timeout): void {
    const chunks: Buffer[] = []
    let received = 0
    const onData = (chunk: Buffer): void => {
      const from = received
      received += chunk.length
      chunks.push(chunk)
      const compared = Math.min(chunk.length, H2_CLIENT_PREFACE.length - from)
      if (compared > 0 && !chunk.subarray(0, compared).equals(H2_CLIENT_PREFACE.subarray(from, from + compared))) {
        socket.off('data', onData)
        this.refused('bad_preface')
        this.opts.log.debug({ peer: socket.remoteAddress }, 'Closed a gRPC connection that did not start with the HTTP/2 preface')
        socket.destroy()
        return
      }
      if (received < H2_CLIENT_PREFACE.length) return
      socket.off('data', onData)
      socket.pause()
      socket.unshift(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
      clearTimeout(timer)
      if (this.closing) {
        socket.destroy()
        return
      }
      this.opts.inject(socket)
    }
    socket.on('data', onData)
  }

  private refused(reason: ConnectionRefusal): void {
    this.opts.onConnection?.(reason)
  }

  /** Stops accepting connections; the open ones stay (grpc-js drains them). Idempotent. */
  stopAccepting(): void {
    if (this.closing) return
    this.closing = true
    // A net.Server's close callback runs once it stops listening and its last connection is gone.
    this.closed = Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))).then(() => {})
  }

  /**
   * Stops accepting and destroys every connection still open (those grpc-js has not closed by the
   * end of its grace, and those still awaiting their preface), then waits until the listening
   * sockets are closed. Idempotent.
   */
  async close(): Promise<void> {
    this.stopAccepting()
    for (const socket of this.sockets) socket.destroy()
    await this.closed
  }

  /**
   * Stops accepting, gives the peers `ms` to close their connections (after a GOAWAY, one that is
   * there does within a round trip), then closes the rest as close() does.
   */
  async closeWithin(ms: number): Promise<void> {
    this.stopAccepting()
    if (this.sockets.size > 0) {
      let timer: NodeJS.Timeout | undefined
      const allClosed = Promise.all([...this.sockets].map((socket) => new Promise((resolve) => socket.once('close', resolve))))
      await Promise.race([allClosed, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))])
      clearTimeout(timer)
    }
    await this.close()
  }
}

function noop(): void {}

/** A TCP connection's 4-tuple: unique among open connections, and the same on its TLS socket. */
function tupleOf(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms, as net.Socket#remoteAddress writes them. */
function isLoopbackAddress(ip: string): boolean {
  const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip
  return v4.startsWith('127.') || ip === '::1'
}
