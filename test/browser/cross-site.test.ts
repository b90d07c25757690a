import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { chromium } from 'playwright-core'
import { chromiumPath } from '../support/chromium.js'
import { startMaster, tempDir } from '../support/cluster.js'

// What a page of another site, open in the operator's browser, can do to a master on 127.0.0.1
// with no token: in a real Chromium, so that the browser decides what it sends (simple requests
// without a preflight, the Origin header, WebSockets, which CORS does not cover).

test('a page of another site in the operator\'s browser can neither queue a task nor read /ws', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--reconnect-interval', '0'] })
  // Another site: a page on another port of the same machine (any local web app, or a page that
  // got there through a redirect).
  const site = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>elsewhere</title>'))
  await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve))
  t.after(() => site.close())
  const browser = await chromium.launch({ executablePath: await chromiumPath(), args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], timeout: 30_000 })
  t.after(() => browser.close())
  const page = await browser.newPage()
  await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`)

  const outcome = await page.evaluate(async (base) => {
    const task = JSON.stringify({ command: 'echo from-another-site' })
    // Simple requests: no preflight, the page cannot read the answers (opaque), but they are sent.
    await fetch(`${base}/api/tasks`, { method: 'POST', mode: 'no-cors', body: new Blob([task]) }).catch(() => undefined)
    await fetch(`${base}/api/tasks`, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: task }).catch(() => undefined)
    const ws = await new Promise<string>((resolve) => {
      const socket = new WebSocket(`${base.replace('http:', 'ws:')}/ws`)
      socket.onmessage = (e) => resolve(`read: ${String(e.data).slice(0, 40)}`)
      socket.onerror = () => resolve('refused')
    })
    return { ws }
  }, master.api)

  assert.equal(outcome.ws, 'refused', 'the upgrade was refused: no snapshot reached the page')
  const tasks = (await (await fetch(`${master.api}/api/tasks`)).json()) as { total: number }
  assert.equal(tasks.total, 0, 'nothing was queued')
  const metrics = await (await fetch(`${master.api}/metrics`)).text()
  assert.match(metrics, /cloudai_http_refused_total\{reason="origin"\} [1-9]/, 'the browser sent its Origin, and was refused for it')
})
