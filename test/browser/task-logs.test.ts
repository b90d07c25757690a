import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { chromium, type Browser } from 'playwright-core'
import { chromiumPath } from '../support/chromium.js'
import { api, reservePort, startMaster, startWorker, tempDir, waitUntil, type MasterHandle } from '../support/cluster.js'
import { MAX_LOG_READERS } from '../../src/master/task-log-feeds.js'

// The dashboard's task dialog follows a running task's output live (GET /api/tasks/{id}/logs),
// in a real headless Chromium against a real master and worker. The task prints a line, waits
// for a file the test creates, prints another and waits again: each line must show while the
// task still runs, when nothing else (no status change) would make the dialog fetch the task.

const WAIT_MS = 20_000

/**
 * A master, its worker w1, and a task running there that prints `first-line`, then `second-line`
 * once the file go1 exists, and ends once go2 does.
 */
async function gatedTask(t: TestContext): Promise<{ master: MasterHandle; id: string; go1: string; go2: string }> {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const port = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  await startWorker(t, 'w1', port, { master: `127.0.0.1:${master.grpcPort}` })
  const dir = tempDir(t)
  const [go1, go2] = [join(dir, 'go1'), join(dir, 'go2')]
  const wait = (f: string): string => `while [ ! -e ${f} ]; do sleep 0.05; done`
  const res = await api(master.api, '/api/tasks', { method: 'POST', body: { command: `echo first-line; ${wait(go1)}; echo second-line; ${wait(go2)}` } })
  assert.equal(res.status, 201)
  const id = res.body.task_id as string
  await waitUntil(async () => (await api(master.api, `/api/tasks/${id}`)).body.status === 'running', 'task running')
  return { master, id, go1, go2 }
}

test('the task dialog shows a running task\'s output live, line by line, while it runs', async (t) => {
  const executablePath = await chromiumPath()
  const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], timeout: 30_000 })
  t.after(() => browser.close())
  const { master, id, go1, go2 } = await gatedTask(t)

  const page = await (await browser.newContext({ viewport: { width: 1440, height: 1000 } })).newPage()
  page.setDefaultTimeout(WAIT_MS)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(String(err)))
  await page.goto(`${master.api}/`)
  await page.locator(`#queue tr.task[data-task-id="${id}"] .task-id`).click()
  const output = page.locator('#task-dialog-output')
  await output.filter({ hasText: 'first-line' }).waitFor({ state: 'visible', timeout: WAIT_MS })
  writeFileSync(go1, '')
  await output.filter({ hasText: 'second-line' }).waitFor({ state: 'visible', timeout: WAIT_MS })
  assert.equal((await api(master.api, `/api/tasks/${id}`)).body.status, 'running', 'shown while the task still runs')
  assert.equal(await output.textContent(), 'first-line\nsecond-line\n')
  writeFileSync(go2, '')
  await page.locator('#task-dialog dd').filter({ hasText: /^completed$/ }).waitFor({ state: 'visible', timeout: WAIT_MS })
  assert.equal(await output.textContent(), 'first-line\nsecond-line\n')
  assert.deepEqual(pageErrors, [])
})

async function launch(t: { after: (fn: () => Promise<void>) => void }): Promise<Browser> {
  const executablePath = await chromiumPath()
  const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], timeout: 30_000 })
  t.after(() => browser.close())
  return browser
}

/** A TCP proxy in front of the master whose connections the test can cut, and hold back (closed gate). */
async function gatedProxy(t: { after: (fn: () => void) => void }, port: number): Promise<{ url: string; cut(): void; hold(): void; open(): void }> {
  const sockets = new Set<Socket>()
  let held: (() => void)[] | null = null
  const proxy = createServer((client) => {
    sockets.add(client)
    const pass = (): void => {
      const upstream = connect(port, '127.0.0.1')
      sockets.add(upstream)
      client.pipe(upstream).pipe(client)
      const drop = (): void => {
        client.destroy()
        upstream.destroy()
      }
      upstream.on('error', drop).on('close', drop)
      client.on('close', drop)
    }
    client.on('error', () => client.destroy())
    if (held) held.push(pass)
    else pass()
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const s of sockets) s.destroy()
    proxy.close()
  })
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    cut: () => {
      for (const s of sockets) s.destroy()
      sockets.clear()
    },
    hold: () => {
      held ??= []
    },
    open: () => {
      const waiting = held ?? []
      held = null
      for (const pass of waiting) pass()
    },
  }
}

test('the task dialog\'s live output, refused with 503 (the master\'s reader limit) after a lost connection, says so, retries with backoff and goes on from its last line', async (t) => {
  const browser = await launch(t)
  const { master, id, go1, go2 } = await gatedTask(t)
  const proxy = await gatedProxy(t, master.httpPort)

  const page = await (await browser.newContext({ viewport: { width: 1440, height: 1000 } })).newPage()
  page.setDefaultTimeout(WAIT_MS)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(String(err)))
  await page.goto(`${proxy.url}/`)
  await page.locator(`#queue tr.task[data-task-id="${id}"] .task-id`).click()
  const output = page.locator('#task-dialog-output')
  await output.filter({ hasText: 'first-line' }).waitFor({ state: 'visible' })

  // The dialog's connection is lost, and its next one waits at the proxy while the test takes
  // every reader the master serves (its own readers, straight to the master).
  proxy.hold()
  proxy.cut()
  const readers: AbortController[] = []
  t.after(() => readers.forEach((r) => r.abort()))
  while (readers.length < MAX_LOG_READERS) {
    const abort = new AbortController()
    const r = await fetch(`${master.api}/api/tasks/${id}/logs?follow=1`, { headers: { accept: 'application/x-ndjson' }, signal: abort.signal })
    if (r.status === 200) readers.push(abort)
    else {
      assert.equal(r.status, 503) // the dialog's old reader is still counted: a moment later it is not
      await r.body?.cancel()
    }
  }
  writeFileSync(go1, '') // second-line, while the dialog is away
  proxy.open()
  const note = page.locator('#task-dialog-follow')
  await note.filter({ hasText: /The master answered 503 CLOUDAI_TOO_MANY_CONNECTIONS: .*; reconnecting in [\d.]+s from line 2/ }).waitFor({ state: 'visible' })
  assert.equal(await output.textContent(), 'first-line\n', 'nothing shown twice or out of place meanwhile')

  for (const r of readers.splice(0)) r.abort()
  await output.filter({ hasText: 'second-line' }).waitFor({ state: 'visible' })
  assert.equal(await output.textContent(), 'first-line\nsecond-line\n', 'on from its last line: none twice, none lost')
  await note.waitFor({ state: 'hidden' })
  writeFileSync(go2, '')
  await page.locator('#task-dialog dd').filter({ hasText: /^completed$/ }).waitFor({ state: 'visible' })
  assert.equal(await output.textContent(), 'first-line\nsecond-line\n')
  assert.deepEqual(pageErrors, [])
})
