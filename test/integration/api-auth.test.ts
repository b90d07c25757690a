import assert from 'node:assert/strict'
import { test } from 'node:test'
import { reservePort, runCli, startMaster, tempDir } from '../support/cluster.js'
import { Watcher } from '../support/watcher.js'

// The API token on a real master: every route but /healthz (and the dashboard page) needs it, and
// so does the WebSocket; the CLI passes it from the same variable.

const TOKEN = 'test-token-0123456789abcdef'

async function call(base: string, method: string, path: string, opts: { token?: string; body?: unknown } = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(base + path, {
    method,
    headers: {
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers }
}

test('with --api-token every route but /healthz refuses without the token and works with it', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), env: { CLOUDAI_API_TOKEN: TOKEN } })
  const base = master.api
  const port = await reservePort()

  assert.equal((await call(base, 'GET', '/healthz')).status, 200, 'the health check stays open')

  const refused = async (method: string, path: string, body?: unknown): Promise<void> => {
    for (const token of [undefined, 'wrong-token-0123456789abcdef', `${TOKEN}x`, TOKEN.slice(0, -1)]) {
      const res = await call(base, method, path, { ...(token ? { token } : {}), ...(body !== undefined ? { body } : {}) })
      assert.equal(res.status, 401, `${method} ${path} with ${token ?? 'no token'}`)
      assert.equal(res.body.error.code, 'CLOUDAI_UNAUTHORIZED')
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="cloudai"')
    }
  }
  // Mutating routes: refused without the token (nothing changes), then done with it.
  await refused('POST', '/api/workers', { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` })
  assert.equal((await call(base, 'GET', '/api/workers', { token: TOKEN })).body.workers.length, 0, 'nothing was registered')
  assert.equal((await call(base, 'POST', '/api/workers', { token: TOKEN, body: { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  await refused('POST', '/api/tasks', { command: 'echo hi' })
  const submitted = await call(base, 'POST', '/api/tasks', { token: TOKEN, body: { command: 'echo hi' } })
  assert.equal(submitted.status, 201)
  const id = submitted.body.task_id as string
  await refused('DELETE', `/api/tasks/${id}`)
  assert.equal((await call(base, 'GET', `/api/tasks/${id}`, { token: TOKEN })).body.status, 'queued', 'not cancelled by the refused call')
  assert.equal((await call(base, 'DELETE', `/api/tasks/${id}`, { token: TOKEN })).status, 200)
  await refused('DELETE', '/api/workers/w1')
  assert.equal((await call(base, 'GET', '/api/workers/w1', { token: TOKEN })).status, 200, 'not unregistered by the refused call')
  // Reads, metrics, and unknown paths too (no probing for routes).
  for (const path of ['/api/workers', '/api/workers/w1', '/api/workers/w1/metrics', '/api/tasks', `/api/tasks/${id}`, '/api/status', '/metrics', '/nope']) await refused('GET', path)
  assert.equal((await call(base, 'GET', '/api/status', { token: TOKEN })).status, 200)
  assert.equal((await fetch(`${base}/metrics`, { headers: { authorization: `bearer ${TOKEN}` } })).status, 200, 'the scheme is case-insensitive')
  assert.equal((await call(base, 'DELETE', '/api/workers/w1', { token: TOKEN })).status, 200)

  // The WebSocket: refused without it; a header or, for browsers, ?token= opens it.
  await assert.rejects(Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws`), (err: { statusCode?: number }) => err.statusCode === 401)
  await assert.rejects(Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws?token=nope-nope-nope-nope`), (err: { statusCode?: number }) => err.statusCode === 401)
  const viaQuery = await Watcher.open(t, `ws://127.0.0.1:${master.httpPort}/ws?token=${encodeURIComponent(TOKEN)}`)
  await viaQuery.next((m) => m.type === 'snapshot', 'snapshot with ?token=')

  // The CLI reads CLOUDAI_API_TOKEN (or --api-token).
  const without = await runCli(['workers', '--api', base])
  assert.equal(without.code, 1)
  assert.match(without.stderr, /requires its API token.*\(CLOUDAI_UNAUTHORIZED\)/)
  const withEnv = await runCli(['status', '--api', base], { CLOUDAI_API_TOKEN: TOKEN })
  assert.equal(withEnv.code, 0, withEnv.stderr)
  const withFlag = await runCli(['workers', '--api', base, '--api-token', TOKEN])
  assert.equal(withFlag.code, 0, withFlag.stderr)
  const watchRefused = await runCli(['watch', '--api', base])
  assert.equal(watchRefused.code, 1)
  assert.match(watchRefused.stderr, /CLOUDAI_UNAUTHORIZED/)
  const short = await runCli(['master', '--api-token', 'short'])
  assert.equal(short.code, 2, 'a token shorter than 16 characters is refused at start')
  assert.match(short.stderr, /--api-token must be 16 to 1024 printable characters/)
})
