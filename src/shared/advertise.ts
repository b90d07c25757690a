import { networkInterfaces } from 'node:os'

/**
 * The host a peer can reach us on. A specific bind address is its own answer; for a wildcard bind
 * we pick the first non-internal IPv4, falling back to loopback on a machine with no network.
 */
export function advertiseHost(bindHost: string): string {
  if (bindHost !== '0.0.0.0' && bindHost !== '::' && bindHost !== '') return bindHost.includes(':') ? `[${bindHost}]` : bindHost
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  }
  return '127.0.0.1'
}

/** host:port for a bind call; IPv6 literals need brackets. */
export function bindAddress(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}
