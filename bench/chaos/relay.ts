import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { rmSync } from 'node:fs'

// A byte relay between a TCP address and a Unix socket file, for the partitioned worker. Its
// network namespace (test/support/netns.ts) is joined by a veth to one other namespace only, never
// to this machine's, so the chaos suite bridges through files, which every namespace shares:
//
//   worker (ns b) -> a.ip:port -[relay in ns a]-> unix file -[relay here]-> 127.0.0.1:<master gRPC>
//   master -> 127.0.0.1:<port> -[relay here]-> unix file -[relay in ns a]-> b.ip:<worker port>
//
// Cutting the veth between a and b is then a real partition of that worker: its connections
// stall, new ones fail with ENETUNREACH, and nothing else is touched.

export type Endpoint = { host: string; port: number } | { path: string }

export function parseEndpoint(text: string): Endpoint {
  if (text.startsWith('unix:')) return { path: text.slice(5) }
  const m = /^tcp:(.+):(\d+)$/.exec(text)
  if (!m) throw new Error(`bad endpoint "${text}": tcp:<host>:<port> or unix:<path>`)
  return { host: m[1]!, port: Number(m[2]) }
}

export interface Relay {
  close(): Promise<void>
}

/** Accepts on `listen`; each connection is piped both ways to `target` (a connection refused there closes it). */
export async function startRelay(listen: Endpoint, target: Endpoint | (() => Endpoint)): Promise<Relay> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((inbound) => {
    const to = typeof target === 'function' ? target() : target
    const outbound = 'path' in to ? createConnection(to.path) : createConnection(to.port, to.host)
    for (const s of [inbound, outbound]) {
      sockets.add(s)
      s.once('close', () => sockets.delete(s))
      s.on('error', () => {
        inbound.destroy()
        outbound.destroy()
      })
    }
    inbound.pipe(outbound)
    outbound.pipe(inbound)
  })
  server.on('error', () => {}) // after listen: an accept that failed; the relay goes on
  if ('path' in listen) rmSync(listen.path, { force: true })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    if ('path' in listen) server.listen(listen.path, resolve)
    else server.listen(listen.port, listen.host, resolve)
  })
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
