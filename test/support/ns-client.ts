import { readFileSync } from 'node:fs'
import type * as Grpc from '@grpc/grpc-js'
import type { MasterWorkerClient } from '../../src/shared/proto.js'

// The other half of nsFetch and nsGrpcCall (test/support/netns.ts): run with `ip netns exec`
// inside a test's network namespace, it reads one request as JSON on stdin, makes it from there,
// and prints one JSON line: the answer, or { ok: false, error } when the call got no answer at all.
// netns.ts has checked the target; nothing here picks an address of its own.
//
// `npm test` runs every .js file under dist/test/ as a test file, this one too: without the flag
// netns.ts passes, it does nothing (a file with no tests), rather than wait for a request.

/** What netns.ts passes (its NS_CLIENT_FLAG); without it this file was not started as the helper. */
const HELPER_FLAG = '--ns-client-request-on-stdin'

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

async function doGrpc(req: Extract<Request, { kind: 'grpc' }>): Promise<object> {
  // Loaded here, not at the top: a fetch does not need them, and they are most of a helper's start-up.
  const grpc: typeof Grpc = await import('@grpc/grpc-js')
  const { callUnary, DIAL_CHANNEL_OPTIONS, loadProto } = await import('../../src/shared/proto.js')
  const { Client } = loadProto()
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

if (process.argv[2] === HELPER_FLAG) {
  const req = JSON.parse(readFileSync(0, 'utf8')) as Request
  const answer = req.kind === 'fetch' ? await doFetch(req) : await doGrpc(req)
  process.stdout.write(`${JSON.stringify(answer)}\n`)
}
