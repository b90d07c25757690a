import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import type * as Grpc from '@grpc/grpc-js'
import type { MasterWorkerClient } from '../../src/shared/proto.js'

// The other half of nsFetch and nsGrpcCall (test/support/netns.ts): run with `ip netns exec`
// inside a test's network namespace, one per namespace for as long as it lives. It reads requests
// as JSON lines on stdin, each with an id, makes each from there (several at once), and prints
// one JSON line per request with its id: the answer, or { ok: false, error } when the call got no
// answer at all. netns.ts has checked the target; nothing here picks an address of its own.
//
// `npm test` runs every .js file under dist/test/ as a test file, this one too: without the flag
// netns.ts passes, it does nothing (a file with no tests), rather than wait for requests.

/** What netns.ts passes (its NS_CLIENT_FLAG); without it this file was not started as the helper. */
const HELPER_FLAG = '--ns-client-requests-on-stdin'

type Request =
  | { kind: 'fetch'; url: string; method: string; headers: Record<string, string>; body?: string; timeoutMs: number }
  | { kind: 'grpc'; target: string; method: string; request: object; metadata: Record<string, string>; timeoutMs: number; tls: { ca: string; cert?: string; key?: string; serverName?: string } | null }

async function doFetch(req: Extract<Request, { kind: 'fetch' }>): Promise<object> {
  try {
    const res = await fetch(req.url, { method: req.method, headers: req.headers, ...(req.body !== undefined ? { body: req.body } : {}), signal: AbortSignal.timeout(req.timeoutMs) })
    return { ok: true, status: res.status, headers: Object.fromEntries(res.headers), text: await res.text() }
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    return { ok: false, error: cause ? `${cause.code ?? ''} ${cause.message ?? ''}`.trim() : String(err) }
  }
}

type GrpcModules = { grpc: typeof Grpc; proto: typeof import('../../src/shared/proto.js'); Client: ReturnType<typeof import('../../src/shared/proto.js')['loadProto']>['Client'] }
let grpcModules: Promise<GrpcModules> | null = null

/** Loaded at the first gRPC call, not at the top: a helper that only fetches does not need them, and they are most of its start-up. */
function loadGrpc(): Promise<GrpcModules> {
  if (grpcModules) return grpcModules
  const loading = (async () => {
    const grpc: typeof Grpc = await import('@grpc/grpc-js')
    const proto = await import('../../src/shared/proto.js')
    return { grpc, proto, Client: proto.loadProto().Client }
  })()
  // A load that failed is tried again by the next call, not answered with the same failure for good.
  loading.catch(() => {
    if (grpcModules === loading) grpcModules = null
  })
  return (grpcModules = loading)
}

async function doGrpc(req: Extract<Request, { kind: 'grpc' }>): Promise<object> {
  const { grpc, proto: { callUnary, DIAL_CHANNEL_OPTIONS }, Client } = await loadGrpc()
  const credentials = req.tls
    ? grpc.credentials.createSsl(readFileSync(req.tls.ca), req.tls.key ? readFileSync(req.tls.key) : null, req.tls.cert ? readFileSync(req.tls.cert) : null)
    : grpc.credentials.createInsecure()
  const options = { ...DIAL_CHANNEL_OPTIONS, ...(req.tls?.serverName ? { 'grpc.ssl_target_name_override': req.tls.serverName } : {}) }
  const client = new Client(req.target, credentials, options)
  const method = req.method as keyof Omit<MasterWorkerClient, keyof Grpc.Client>
  if (typeof client[method] !== 'function' || method === 'StreamHeartbeats' || method === 'StreamTaskLogs') {
    client.close()
    return { ok: false, error: `${req.method} is not a unary method of MasterWorker` }
  }
  const metadata = new grpc.Metadata()
  for (const [k, v] of Object.entries(req.metadata)) metadata.set(k, v)
  try {
    const response = await callUnary<object, object>(client, method, req.request, req.timeoutMs, metadata).promise
    return { ok: true, code: grpc.status.OK, details: '', response, metadata: {} }
  } catch (err) {
    const e = err as Partial<Grpc.ServiceError>
    const trailers: Record<string, string> = {}
    for (const [k, v] of Object.entries(e.metadata?.getMap() ?? {})) if (typeof v === 'string') trailers[k] = v
    return { ok: true, code: e.code ?? grpc.status.UNKNOWN, details: e.details ?? String(err), response: null, metadata: trailers }
  } finally {
    client.close()
  }
}

async function answer(req: Request): Promise<object> {
  try {
    return req.kind === 'fetch' ? await doFetch(req) : await doGrpc(req)
  } catch (err) {
    return { ok: false, error: `the helper failed: ${(err as Error).stack ?? String(err)}` }
  }
}

if (process.argv[2] === HELPER_FLAG) {
  // A gRPC client per call (its own connection: DIAL_CHANNEL_OPTIONS has a local subchannel pool),
  // as when each call was a process of its own; only the modules are shared. fetch keeps its
  // connections alive between calls (undici's global pool), which no caller here tells apart. The
  // helper ends with the namespace (netns.ts kills everything in it), or when its stdin closes
  // with the test process.
  createInterface({ input: process.stdin }).on('line', (line) => {
    const { id, request } = JSON.parse(line) as { id: number; request: Request }
    answer(request).then(
      (a) => process.stdout.write(`${JSON.stringify({ id, answer: a })}\n`),
      (err: unknown) => process.stderr.write(`request ${id}: ${String(err)}\n`),
    )
  })
}
