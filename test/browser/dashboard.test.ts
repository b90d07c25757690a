import assert from 'node:assert/strict'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { chromium, type Browser, type Locator, type Page, type WebSocketRoute } from 'playwright-core'
import { chromiumPath } from '../support/chromium.js'
import { api, FAST_MASTER_FLAGS, reservePort, ROOT, startMaster, startWorker, tempDir, waitUntil } from '../support/cluster.js'

// The dashboard in a real headless Chromium (Debian's package, driven by playwright-core) against
// a real master and worker. Every wait is Playwright's auto-waiting on a locator, never a sleep.

const ARTIFACTS = join(ROOT, 'test-artifacts')
/** Generous: the suite runs four files at a time on two cores. */
const WAIT_MS = 20_000

async function launch(t: TestContext): Promise<Browser> {
  // Found, or installed now where this user may (test/support/chromium.ts); else it fails saying how.
  const executablePath = await chromiumPath()
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 30_000,
  })
  t.after(() => browser.close())
  return browser
}

/** A page whose uncaught errors are collected (not yet navigated, so that routes can be set first). */
async function newPage(browser: Browser): Promise<{ page: Page; pageErrors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } })
  const page = await context.newPage()
  page.setDefaultTimeout(WAIT_MS)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(String(err)))
  return { page, pageErrors }
}

/** Runs the steps; if one fails, keeps a screenshot of what the page showed then. */
async function screenshotOnFailure<T>(page: Page, name: string, body: () => Promise<T>): Promise<T> {
  rmSync(join(ARTIFACTS, name), { force: true }) // not one from an earlier run
  try {
    return await body()
  } catch (err) {
    mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: join(ARTIFACTS, name), fullPage: true }).catch(() => undefined)
    throw err
  }
}

const visible = (locator: Locator): Promise<void> => locator.waitFor({ state: 'visible', timeout: WAIT_MS })

const live = (page: Page): Promise<void> => visible(page.locator('#connection[data-state="live"]').filter({ hasText: 'Live' }))
const disconnected = (page: Page): Promise<void> => visible(page.locator('#connection[data-state="disconnected"]').filter({ hasText: 'Disconnected — reconnecting…' }))
/** An entry of the events feed (newest first); `nth` counts matching entries from the newest. */
const event = (page: Page, text: string | RegExp, nth = 0): Promise<void> => visible(page.locator('#events li').filter({ hasText: text }).nth(nth))

test('the dashboard shows workers and tasks live, drives the API, reconnects, and shows a lost connection', async (t) => {
  const browser = await launch(t)
  const master = await startMaster(t, { dataDir: tempDir(t), args: FAST_MASTER_FLAGS })
  const { page, pageErrors } = await newPage(browser)

  // The page's WebSocket goes to the real master through Playwright, so that the test can cut it
  // (and hold the next one back) to see the page reconnect and start again from a fresh snapshot.
  const sockets: WebSocketRoute[] = []
  let gate: Promise<void> = Promise.resolve()
  await page.routeWebSocket(/\/ws(\?|$)/, async (ws) => {
    sockets.push(ws)
    await gate
    ws.connectToServer()
  })
  await page.goto(`${master.api}/`)

  await screenshotOnFailure(page, 'dashboard-failure.png', async () => {
    await live(page)
    assert.equal(await page.title(), 'cloudai dashboard')
    // Survives until the end only if the page never reloads.
    await page.evaluate('window.__sameDocument = true')

    const register = page.locator('#register-form')
    const workerId = register.getByLabel('Worker id')
    const address = register.getByLabel('Address')

    // A bad address: the API's own message, next to the form, and nothing registered.
    await workerId.fill('w1')
    await address.fill('not-an-address')
    await register.getByRole('button', { name: 'Register worker' }).click()
    const refused = await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: 'not-an-address' } })
    assert.equal(refused.status, 400)
    assert.equal(refused.body.error.code, 'CLOUDAI_BAD_ADDRESS')
    await visible(page.locator('#register-error').filter({ hasText: refused.body.error.message }))
    assert.match((await page.locator('#register-error').textContent()) ?? '', /CLOUDAI_BAD_ADDRESS/)
    assert.equal((await api(master.api, '/api/workers/w1')).status, 404)

    // An offline worker: listed, inactive.
    const port = await reservePort()
    await address.fill(`127.0.0.1:${port}`)
    await register.getByRole('button', { name: 'Register worker' }).click()
    await visible(page.locator('#register-result').filter({ hasText: 'offline' }))
    assert.equal(await page.locator('#register-error').textContent(), '', 'the earlier error is cleared')
    const row = page.locator('#workers tr[data-worker-id="w1"]')
    await visible(row.and(page.locator('[data-state="inactive"]')))
    assert.equal(await row.locator('.state').textContent(), 'inactive')
    assert.equal(await row.locator('.address').textContent(), `127.0.0.1:${port}`)
    await visible(row.locator('td.heartbeat').filter({ hasText: 'never' }))

    // The worker starts: the master's monitor reaches it and the row turns active, with specs and
    // live telemetry drawn into the sparklines.
    await startWorker(t, 'w1', port)
    await visible(row.and(page.locator('[data-state="active"]')))
    assert.equal(await row.locator('.state').textContent(), 'active')
    await visible(row.locator('.cores').filter({ hasText: /^\d+ cores$/ }))
    await visible(row.locator('.capacity .memory').filter({ hasText: /GB$/ }))
    await visible(row.locator('td.usage-cpu .pct').filter({ hasText: /^\d+\.\d%$/ }))
    await visible(row.locator('td.heartbeat').filter({ hasText: /^\d+s ago$/ }))
    // (Page-side code is given as text: this project compiles without the DOM's types.)
    await page.waitForFunction(`(document.querySelector('#workers tr[data-worker-id="w1"] td.usage-cpu polyline')?.getAttribute('points') ?? '').split(' ').length >= 3`, undefined, { timeout: WAIT_MS })
    await event(page, 'Worker w1 is active')
    await visible(page.locator('#summary dd[data-count="active"]').filter({ hasText: /^1$/ }))

    // A task through the form, followed to completed.
    const taskForm = page.locator('#task-form')
    const submitTask = async (command: string, name: string): Promise<string> => {
      await taskForm.getByLabel('Command').fill(command)
      await taskForm.getByLabel('Name').fill(name)
      await taskForm.getByRole('button', { name: 'Submit task' }).click()
      const result = page.locator('#task-result').filter({ hasText: /^Task task-\S+ queued$/ })
      await visible(result)
      const id = await result.getAttribute('data-task-id')
      if (!id?.startsWith('task-')) assert.fail(`the page shows the new task's id, got ${id}`)
      await visible(page.locator(`tr.task[data-task-id="${id}"]`))
      return id
    }
    const taskId = await submitTask('echo hello', 'greeting')
    const taskRow = page.locator(`tr.task[data-task-id="${taskId}"]`)
    await visible(taskRow.and(page.locator('[data-state="completed"]')))
    assert.equal(await taskRow.locator('.state').textContent(), 'completed')
    assert.equal(await taskRow.locator('td.exit-code').textContent(), '0')
    assert.equal(await taskRow.locator('td.cmd').textContent(), 'echo hello')
    assert.equal(await taskRow.locator('td.worker').textContent(), 'w1')
    assert.equal(await taskRow.locator('td.attempts').textContent(), `1/${(await api(master.api, `/api/tasks/${taskId}`)).body.max_attempts}`)
    assert.equal(await page.locator(`#recent tr.task[data-task-id="${taskId}"]`).count(), 1, 'a finished task is under recent tasks')
    await event(page, /greeting\) completed \(exit 0\)/)
    await visible(page.locator('#summary dd[data-count="completed"]').filter({ hasText: /^1$/ }))

    // A long task, cancelled with its button once it runs.
    const napId = await submitTask('sleep 30', 'nap')
    const napRow = page.locator(`tr.task[data-task-id="${napId}"]`)
    await visible(napRow.and(page.locator('[data-state="running"]')))
    assert.equal(await page.locator(`#queue tr.task[data-task-id="${napId}"]`).count(), 1, 'a running task is in the queue table')
    await napRow.getByRole('button', { name: `Cancel ${napId}` }).click()
    await visible(napRow.and(page.locator('[data-state="cancelled"]')))
    assert.equal((await api(master.api, `/api/tasks/${napId}`)).body.status, 'cancelled')
    await visible(page.locator('#queue-empty'))

    mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true })

    // The connection drops; while the page is away a worker is registered; the page reconnects by
    // itself and shows it, from the fresh snapshot (it missed the event).
    let release!: () => void
    gate = new Promise((resolve) => (release = resolve))
    const cut = sockets.length
    await sockets[cut - 1]!.close({ code: 4000, reason: 'cut by the test' })
    await disconnected(page)
    await visible(page.locator('#offline').filter({ hasText: 'reconnecting' }))
    await waitUntil(() => sockets.length > cut, 'the page to try again')
    const port2 = await reservePort()
    assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w2', worker_ip: `127.0.0.1:${port2}` } })).status, 201)
    release()
    await live(page)
    await event(page, /^.*Reconnected, fresh snapshot: 2 workers/)
    await visible(page.locator('#workers tr[data-worker-id="w2"][data-state="inactive"]'))
    assert.equal(await page.locator('#offline').isHidden(), true)
    assert.equal(await page.locator('#events li').filter({ hasText: 'Worker w2 registered' }).count(), 0, 'w2 came from the snapshot, not from an event')

    // Unregistering from the page (after its confirmation) removes the worker.
    const confirmed = page.waitForEvent('dialog').then((dialog) => dialog.accept())
    await row.getByRole('button', { name: 'Unregister w1' }).click()
    await confirmed
    await row.waitFor({ state: 'detached', timeout: WAIT_MS })
    assert.equal((await api(master.api, '/api/workers/w1')).status, 404)
    await event(page, 'Worker w1 unregistered')
    await visible(page.locator('#summary dd[data-count="workers"]').filter({ hasText: /^1$/ }))

    // The master goes away: the page says so and keeps trying.
    await master.proc.kill('SIGKILL')
    await disconnected(page)
    await event(page, 'Connection to the master lost', 1) // the second time: the first was the cut above
    await visible(page.locator('#offline').filter({ hasText: /^Lost the connection to the master at .*reconnecting/ }))
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-disconnected.png'), fullPage: true })

    assert.equal(await page.evaluate('window.__sameDocument'), true, 'the page was never reloaded')
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page')
  })
})

test('with --api-token, the page asks for the token once and uses it for the WebSocket and the API', async (t) => {
  const token = 'dashboard-test-token-0123456789'
  const browser = await launch(t)
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--api-token', token] })
  const { page, pageErrors } = await newPage(browser)
  await page.goto(`${master.api}/`)

  await screenshotOnFailure(page, 'dashboard-token-failure.png', async () => {
    const form = page.locator('#auth-form')
    await visible(form)
    await visible(page.locator('#connection[data-state="auth"]'))

    // A wrong token is refused and asked for again; the right one connects.
    await form.getByLabel('API token').fill('not-the-right-token-at-all')
    await form.getByRole('button', { name: 'Use token' }).click()
    await visible(page.locator('#auth-error').filter({ hasText: 'refused' }))
    await form.getByLabel('API token').fill(token)
    await form.getByRole('button', { name: 'Use token' }).click()
    await live(page)
    assert.equal(await form.isHidden(), true)
    assert.equal(await page.evaluate("sessionStorage.getItem('cloudai.token')"), token)

    // REST calls carry it: a registration through the form works, and shows up live.
    const port = await reservePort()
    await page.locator('#register-form').getByLabel('Worker id').fill('w1')
    await page.locator('#register-form').getByLabel('Address').fill(`127.0.0.1:${port}`)
    await page.locator('#register-form').getByRole('button', { name: 'Register worker' }).click()
    await visible(page.locator('#register-result').filter({ hasText: 'offline' }))
    await visible(page.locator('#workers tr[data-worker-id="w1"][data-state="inactive"]'))
    assert.equal(await form.isHidden(), true, 'asked once')
    assert.deepEqual(pageErrors, [])
  })
})

/** What sticks out: the page wider than the window, a table wider than its box, a cell past its table's box or cut short. */
const OVERFLOWS = `(() => {
  const out = []
  const doc = document.documentElement
  if (doc.scrollWidth > doc.clientWidth + 1) out.push('the page scrolls sideways: ' + doc.scrollWidth + ' > ' + doc.clientWidth)
  for (const wrap of document.querySelectorAll('.table-wrap')) {
    const table = wrap.querySelector('table')
    if (wrap.scrollWidth > wrap.clientWidth + 1) out.push('#' + table.id + ' is wider than its box: ' + wrap.scrollWidth + ' > ' + wrap.clientWidth)
    const box = wrap.getBoundingClientRect()
    for (const cell of table.querySelectorAll('th, td')) {
      const r = cell.getBoundingClientRect()
      if (r.width === 0) continue
      if (r.right > box.right + 1 || r.left < box.left - 1) out.push('#' + table.id + ' cell "' + cell.textContent.trim().slice(0, 30) + '" is outside its box')
      if (cell.scrollWidth > cell.clientWidth + 1) out.push('#' + table.id + ' cell "' + cell.textContent.trim().slice(0, 30) + '" is cut: ' + cell.scrollWidth + ' > ' + cell.clientWidth)
    }
  }
  return out
})()`

test('the dashboard fits 1280×800, 1920×1080 and 800×600: no column clipped or off to the side, full task ids, output and reasons shown, sparklines from history, cordoned and drained workers badged', async (t) => {
  const browser = await launch(t)
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--telemetry-step', '1s'] })
  const port = await reservePort()
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'gpu-node-eu-west-1a-0001', worker_ip: `127.0.0.1:${port}` } })).status, 201)
  await startWorker(t, 'gpu-node-eu-west-1a-0001', port)
  for (const [id, p] of [['build-runner-12', await reservePort()], ['w3', await reservePort()]] as const) {
    assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `127.0.0.1:${p}` } })).status, 201)
  }
  await waitUntil(async () => (await api(master.api, '/api/workers/gpu-node-eu-west-1a-0001')).body.is_active === true || undefined, 'the worker to be active')
  // One drained (nothing on it: at once), one cordoned: their badges must fit too.
  assert.equal((await api(master.api, '/api/workers/build-runner-12/drain', { method: 'POST', body: { deadline_s: 3600 } })).body.worker.scheduling, 'drained')
  assert.equal((await api(master.api, '/api/workers/w3/cordon', { method: 'POST', body: {} })).status, 200)
  const submit = async (body: Record<string, unknown>): Promise<string> => {
    const r = await api(master.api, '/api/tasks', { method: 'POST', body })
    assert.equal(r.status, 201, JSON.stringify(r.body))
    return r.body.task_id as string
  }
  const done = await submit({ command: 'echo hello from the task; echo and a second line', name: 'greeting' })
  await submit({ command: `python train.py --data /datasets/imagenet --epochs 90 --batch-size 256 --lr 0.1 --output /checkpoints/${'x'.repeat(40)}; exit 3`, max_attempts: 1 })
  // The two other workers never connected and might be large enough: only a target says "never".
  const huge = await submit({ command: 'sleep 1', req_cpu: 512, target_worker_id: 'gpu-node-eu-west-1a-0001' })
  await waitUntil(async () => (await api(master.api, `/api/tasks/${done}`)).body.status === 'completed' || undefined, 'the first task to complete')
  // History to draw from: some seconds of it at a 1 s step.
  const history = await waitUntil(async () => {
    const h = (await api(master.api, '/api/workers/gpu-node-eu-west-1a-0001/metrics')).body.history as unknown[]
    return h.length >= 4 ? h.length : undefined
  }, 'four history points')

  const { page, pageErrors } = await newPage(browser)
  // Live telemetry is held back: whatever the sparklines draw comes from the master's history.
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    const server = ws.connectToServer()
    server.onMessage((m) => {
      if (!String(m).includes('"worker_metrics"')) ws.send(m)
    })
  })
  await page.goto(`${master.api}/`)
  await screenshotOnFailure(page, 'dashboard-fit-failure.png', async () => {
    await live(page)
    assert.equal(await page.locator('link[rel="icon"]').getAttribute('href'), '/favicon.svg')
    const icon = await fetch(`${master.api}/favicon.svg`)
    assert.equal(icon.status, 200)
    assert.equal(icon.headers.get('content-type'), 'image/svg+xml')
    await page.waitForFunction(`(document.querySelector('#workers tr[data-worker-id="gpu-node-eu-west-1a-0001"] td.usage-cpu polyline')?.getAttribute('points') ?? '').split(' ').filter(Boolean).length >= ${Math.min(history, 4)}`, undefined, { timeout: WAIT_MS })

    await visible(page.locator('#workers tr[data-worker-id="build-runner-12"] .badge.sched.drained').filter({ hasText: /^drained$/ }))
    await visible(page.locator('#workers tr[data-worker-id="w3"] .badge.sched.cordoned').filter({ hasText: /^cordoned$/ }))
    assert.equal(await page.locator('#workers tr[data-worker-id="gpu-node-eu-west-1a-0001"] .badge.sched').isVisible(), false, 'no badge for a worker that takes tasks')

    // Full ids, and why the queued one waits.
    await visible(page.locator(`#recent tr.task[data-task-id="${done}"] .task-id`).filter({ hasText: new RegExp(`^${done}$`) }))
    await visible(page.locator(`#queue tr.task[data-task-id="${huge}"] .why`).filter({ hasText: /is large enough for 512 CPU/ }))

    for (const [width, height] of [[1280, 800], [1920, 1080], [800, 600]] as const) {
      await page.setViewportSize({ width, height })
      await page.waitForFunction('new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => resolve(true))))')
      mkdirSync(ARTIFACTS, { recursive: true })
      await page.screenshot({ path: join(ARTIFACTS, `dashboard-${width}x${height}.png`), fullPage: true })
      assert.deepEqual(await page.evaluate(OVERFLOWS), [], `at ${width}×${height}`)
      for (const label of ['Unregister gpu-node-eu-west-1a-0001', `Cancel ${huge}`]) {
        const box = await page.getByRole('button', { name: label }).boundingBox()
        assert.ok(box && box.x >= 0 && box.x + box.width <= width, `${label} is on the screen at ${width}×${height}`)
      }
    }

    // A task's output, from its id.
    await page.locator(`#recent tr.task[data-task-id="${done}"] .task-id`).click()
    const dialog = page.locator('#task-dialog')
    await visible(dialog.locator('#task-dialog-output').filter({ hasText: 'hello from the task' }))
    assert.match((await dialog.locator('#task-dialog-output').textContent()) ?? '', /and a second line/)
    await visible(dialog.locator('dd').filter({ hasText: /^completed$/ }))
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-task.png') })
    await dialog.getByRole('button', { name: 'Close' }).click()
    await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS })
    assert.deepEqual(pageErrors, [])
  })
})
