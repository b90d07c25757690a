import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { chromium } from 'playwright-core'
import { chromiumPath } from '../support/chromium.js'
import { api, reservePort, startMaster, startWorker, tempDir, waitUntil } from '../support/cluster.js'

// The dashboard's task dialog follows a running task's output live (GET /api/tasks/{id}/logs),
// in a real headless Chromium against a real master and worker. The task prints a line, waits
// for a file the test creates, prints another and waits again: each line must show while the
// task still runs, when nothing else (no status change) would make the dialog fetch the task.

const WAIT_MS = 20_000

test('the task dialog shows a running task\'s output live, line by line, while it runs', async (t) => {
  const executablePath = await chromiumPath()
  const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], timeout: 30_000 })
  t.after(() => browser.close())
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
