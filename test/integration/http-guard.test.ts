import assert from 'node:assert/strict'
import { test } from 'node:test'
import WebSocket from 'ws'
import { startMaster, tempDir } from '../support/cluster.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'
import { RawHttp } from '../support/raw-http.js'

// A real master started by the CLI: --api-allow-origin from a flag, --api-allow-host from the
// environment (one variable, a comma list), what another site's page can no longer do, and the
// refusals counted in /metrics.

const TASK = JSON.stringify({ command: 'echo hi' })

test('a master refuses other sites\' pages and unknown Hosts, serves its own page, the CLI and the allowed names, and counts each refusal', async (t) => {
  const master = await startMaster(t, {
    dataDir: tempDir(t),
    args: ['--reconnect-interval', '0', '--api-allow-origin', 'https://ops.example.com'],
    env: { CLOUDAI_API_ALLOW_HOST: 'cloudai.example.com,10.9.9.9' },
  })
  const { api: base, httpPort: port } = master
  const started = master.proc.lines.find((l) => l.step === 7)!
  assert.deepEqual(started.allowedHosts, ['10.9.9.9', '127.0.0.1', '::1', 'cloudai.example.com', 'localhost'])
  assert.deepEqual(started.allowedOrigins, ['https://ops.example.com'])

  const submit = (headers: Record<string, string>, body: string | Blob = TASK) => fetch(`${base}/api/tasks`, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) })
  // Another site's page: a simple request (no content-type), then one with its Origin.
  assert.equal((await submit({}, new Blob([TASK]))).status, 415)
  assert.equal((await submit({ 'content-type': 'application/json', origin: 'http://evil.example' })).status, 403)
  // The dashboard (its own origin), an allowed origin, and the CLI (no Origin).
  assert.equal((await submit({ 'content-type': 'application/json', origin: base })).status, 201)
  assert.equal((await submit({ 'content-type': 'application/json', origin: 'https://ops.example.com' })).status, 201)
  assert.equal((await submit({ 'content-type': 'application/json' })).status, 201)
  const listed = (await (await fetch(`${base}/api/tasks`)).json()) as { total: number }
  assert.equal(listed.total, 3, 'only the three allowed submissions were queued')

  // Host: a name from CLOUDAI_API_ALLOW_HOST is served; a rebinding page's name is not.
  for (const [host, status] of [[`cloudai.example.com:${port}`, 200], [`evil.example:${port}`, 421]] as const) {
    const client = await RawHttp.open(t, port)
    await client.send(`GET /api/status HTTP/1.1\r\nhost: ${host}\r\n\r\n`)
    assert.equal((await client.response()).status, status, host)
  }

  // The WebSocket: refused from another site's page, opened from the master's own.
  const opened = (origin: string) =>
    new Promise<number | string>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { origin })
      t.after(() => ws.terminate())
      ws.once('message', (data) => resolve(JSON.parse(String(data)).type as string))
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      ws.once('error', reject)
    })
  assert.equal(await opened('http://evil.example'), 403)
  assert.equal(await opened(base), 'snapshot')

  const metrics = parsePrometheus(await (await fetch(`${base}/metrics`)).text())
  const refused = (reason: string) => promValue(metrics, 'cloudai_http_refused_total', { reason })
  assert.equal(refused('media_type'), 1)
  assert.equal(refused('origin'), 2)
  assert.equal(refused('host'), 1)
  assert.equal(refused('framing'), 0)
})
