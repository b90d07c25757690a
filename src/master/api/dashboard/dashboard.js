// The cloudai dashboard: plain JS, no build step, served by the master itself (GET /dashboard.js).
// State comes only from the WebSocket (/ws): a snapshot on every (re)connection, then events.
// Actions go through the REST API. Everything shown is set with textContent / createElement.

const TOKEN_KEY = 'cloudai.token'
const HISTORY = 60 // telemetry samples kept per worker for the sparklines
const EVENTS_MAX = 100
const RECENT_MAX = 100 // finished tasks kept (the snapshot carries the 100 newest)
const BACKOFF_MIN_MS = 500
const BACKOFF_MAX_MS = 15_000
const TASK_STATES = ['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled']
const UNFINISHED = new Set(['queued', 'assigned', 'running'])
const SVG_NS = 'http://www.w3.org/2000/svg'

// --- state ------------------------------------------------------------------------------------

/** @type {Map<string, any>} worker id → WorkerView */
let workers = new Map()
/** @type {Map<string, { latest: any, lastAt: string | null, firstAt: string | null, cpu: number[], memory: number[] }>} */
const metrics = new Map()
/** @type {Map<string, any>} task id → TaskView */
let tasks = new Map()
/** Task counts per status: the snapshot's totals, moved along by task_status events. */
let taskCounts = null
/** Master clock minus this browser's clock, estimated from message timestamps (per connection). */
let clockOffset = null

const serverNow = () => Date.now() + (clockOffset ?? 0)

// --- small DOM helpers ------------------------------------------------------------------------

const $ = (sel) => /** @type {HTMLElement} */ (document.querySelector(sel))

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue
    if (k === 'class') node.className = v
    else if (k === 'text') node.textContent = String(v)
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v)
    else node.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c) // strings become text nodes
  return node
}

function setText(node, text) {
  const s = String(text)
  if (node.textContent !== s) node.textContent = s
}

function setAttr(node, name, value) {
  if (value === null || value === undefined) {
    if (node.hasAttribute(name)) node.removeAttribute(name)
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value))
  }
}

/** Shows an error (message, then its code) in an <output>; null clears it. */
function showError(out, err, prefix = '') {
  if (!err) {
    out.replaceChildren()
    return
  }
  const parts = [prefix + (err.message || String(err))]
  if (err.code) parts.push(' ', el('span', { class: 'muted', text: `(${err.code})` }))
  out.replaceChildren(...parts)
}

// --- formatting -------------------------------------------------------------------------------

const dash = '—'
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v))
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)
const ms = (iso) => (iso ? Date.parse(iso) : NaN)

function fmtNumber(v, digits = 1) {
  const n = num(v)
  if (n === null) return dash
  return Number.isInteger(n) ? String(n) : n.toFixed(digits)
}

const fmtGB = (v) => (num(v) === null ? dash : `${fmtNumber(v)} GB`)
const fmtPct = (v) => (num(v) === null ? dash : `${clamp(v, 0, 100).toFixed(1)}%`)

function fmtDuration(millis) {
  const s = Math.max(0, Math.floor(millis / 1000))
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${s % 60}s`
  const h = Math.floor(m / 60)
  if (h < 24) return `${h}h ${m % 60}m`
  return `${Math.floor(h / 24)}d ${h % 24}h`
}

function fmtAgo(iso) {
  const t = ms(iso)
  if (Number.isNaN(t)) return 'never'
  const s = Math.max(0, Math.floor((serverNow() - t) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86_400)}d ago`
}

function fmtClock(iso) {
  const d = iso ? new Date(iso) : new Date()
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour12: false })
}

const shortId = (id) => (id.startsWith('task-') ? id.slice(0, 13) : id)
const taskLabel = (t) => (t.name ? `${shortId(t.task_id)} (${t.name})` : shortId(t.task_id))

// --- API token --------------------------------------------------------------------------------

function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY)
  } catch {
    return null
  }
}

function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token)
    else sessionStorage.removeItem(TOKEN_KEY)
  } catch {
    // storage disabled: the token lasts until the page closes
  }
}

/** One pending request for the token, shared by everything that got a 401 meanwhile. */
let tokenWait = null

function askToken(message) {
  if (!tokenWait) {
    let resolve
    const promise = new Promise((r) => (resolve = r))
    tokenWait = { promise, resolve }
  }
  const form = $('#auth-form')
  form.hidden = false
  setText($('#auth-error'), message || '')
  $('#auth-token').focus()
  return tokenWait.promise
}

$('#auth-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const input = /** @type {HTMLInputElement} */ ($('#auth-token'))
  const token = input.value.trim()
  if (!token) return
  setToken(token)
  input.value = ''
  $('#auth-form').hidden = true
  const wait = tokenWait
  tokenWait = null
  wait?.resolve(token)
})

// --- REST -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message, status) {
    super(message)
    this.code = code
    this.status = status
  }
}

function authHeaders() {
  const token = getToken()
  return token ? { authorization: `Bearer ${token}` } : {}
}

/** A REST call; a 401 asks for the token and retries once. Throws ApiError with the API's message. */
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const sentToken = getToken()
    const headers = { accept: 'application/json', ...authHeaders() }
    if (body !== undefined) headers['content-type'] = 'application/json'
    let res
    try {
      res = await fetch(path, { method, headers, cache: 'no-store', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
    } catch {
      throw new ApiError('CLOUDAI_UNREACHABLE', 'Cannot reach the master', 0)
    }
    const text = await res.text()
    let data = null
    try {
      data = text ? JSON.parse(text) : null
    } catch {
      data = null
    }
    const error = data && typeof data === 'object' && data.error && typeof data.error === 'object' ? data.error : null
    if (res.status === 401) {
      if (sentToken && getToken() === sentToken) setToken(null) // refused: ask again next time
      if (attempt === 0) {
        await askToken(sentToken ? 'The token was refused; enter the right one.' : error?.message || 'Enter the API token.')
        continue
      }
    }
    if (!res.ok) throw new ApiError(error?.code || `HTTP_${res.status}`, error?.message || `${res.status} ${res.statusText}`.trim(), res.status)
    return data
  }
}

/** After a failed WebSocket attempt: does the master want a token? (The browser hides the upgrade's status.) */
async function needsToken() {
  try {
    const res = await fetch('/api/status', { headers: { accept: 'application/json', ...authHeaders() }, cache: 'no-store' })
    return res.status === 401
  } catch {
    return false
  }
}

// --- WebSocket --------------------------------------------------------------------------------

let socket = null
let live = false
let everLive = false
let failures = 0
let retryTimer = null
let retryAt = 0
/** When the connection was lost (for the banner); null while live. */
let lostAt = null

function wsUrl() {
  const url = new URL('/ws', location.href)
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const token = getToken()
  if (token) url.searchParams.set('token', token)
  return url.href
}

function setConnection(state) {
  const node = $('#connection')
  node.dataset.state = state
  document.body.dataset.connection = state
  const text = {
    connecting: 'Connecting…',
    live: 'Live',
    disconnected: 'Disconnected — reconnecting…',
    auth: 'Waiting for the API token',
  }[state]
  setText(node, text)
  if (state !== 'disconnected') node.removeAttribute('title')
  if (state === 'disconnected' && lostAt === null) lostAt = new Date().toISOString()
  if (state === 'live') lostAt = null
  $('#offline').hidden = state !== 'disconnected'
  updateRetryHint()
}

function connect() {
  if (retryTimer) clearTimeout(retryTimer)
  retryTimer = null
  if (socket) return
  if (!everLive) setConnection('connecting')
  let sock
  try {
    sock = new WebSocket(wsUrl())
  } catch {
    scheduleReconnect()
    return
  }
  socket = sock
  let opened = false
  sock.addEventListener('open', () => {
    opened = true
    clockOffset = null
  })
  sock.addEventListener('message', (ev) => {
    if (socket === sock && typeof ev.data === 'string') handleMessage(ev.data)
  })
  sock.addEventListener('close', async (ev) => {
    if (socket !== sock) return
    socket = null
    if (live) {
      live = false
      addEvent('Connection to the master lost', 'bad')
    }
    setConnection('disconnected')
    if ((!opened || ev.code === 1008 || ev.code === 4401) && (await needsToken())) {
      setConnection('auth')
      await askToken(getToken() ? 'The token was refused; enter the right one.' : 'The master asks for an API token.')
      connect()
      return
    }
    scheduleReconnect()
  })
}

/** Exponential backoff with jitter, from 0.5 s to 15 s; reset by a snapshot. */
function scheduleReconnect() {
  if (retryTimer || socket) return
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(failures, 10))
  const delay = Math.round(base / 2 + (Math.random() * base) / 2)
  failures++
  retryAt = Date.now() + delay
  retryTimer = setTimeout(connect, delay)
  updateRetryHint()
}

/** The banner while disconnected: since when, and when the next attempt is. */
function updateRetryHint() {
  const banner = $('#offline')
  if (banner.hidden) return
  const next = retryTimer ? `next attempt in ${Math.max(0, Math.ceil((retryAt - Date.now()) / 1000))}s` : 'trying now'
  setAttr($('#connection'), 'title', next)
  setText(
    banner,
    everLive
      ? `Lost the connection to the master at ${fmtClock(lostAt)}. What is shown may be out of date; reconnecting (${next}).`
      : `Cannot reach the master; retrying (${next}).`,
  )
}

window.addEventListener('online', () => {
  if (!socket) connect()
})

// --- messages ---------------------------------------------------------------------------------

function noteClock(timestamp) {
  const t = ms(timestamp)
  if (Number.isNaN(t)) return
  // Timestamps are whole seconds, so each one is at most the master's clock: the largest
  // difference seen on this connection is the closest.
  const est = t - Date.now()
  clockOffset = clockOffset === null ? est : Math.max(clockOffset, est)
}

function handleMessage(raw) {
  let msg
  try {
    msg = JSON.parse(raw)
  } catch {
    return
  }
  if (!msg || typeof msg !== 'object') return
  noteClock(msg.timestamp)
  switch (msg.type) {
    case 'snapshot':
      applySnapshot(msg)
      break
    case 'worker':
      if (msg.worker) applyWorker(msg.worker, msg.timestamp)
      break
    case 'worker_status':
      applyWorkerStatus(msg)
      break
    case 'worker_removed':
      applyWorkerRemoved(msg)
      break
    case 'task_status':
      if (msg.task) applyTask(msg.task, msg.previous ?? null, msg.timestamp)
      break
    case 'worker_metrics':
      applyMetrics(msg)
      break
    case 'error':
      addEvent(`Master: ${msg.message ?? 'error'}${msg.code ? ` (${msg.code})` : ''}`, 'bad', msg.timestamp)
      break
    default:
      return // subscribed, and anything newer than this page
  }
  scheduleRender()
}

function applySnapshot(msg) {
  const first = !everLive
  workers = new Map((Array.isArray(msg.workers) ? msg.workers : []).map((w) => [w.worker_id, w]))
  for (const id of [...metrics.keys()]) if (!workers.has(id)) metrics.delete(id)
  tasks = new Map((Array.isArray(msg.tasks) ? msg.tasks : []).map((t) => [t.task_id, t]))
  taskCounts = Object.fromEntries(TASK_STATES.map((s) => [s, num(msg.status?.tasks?.[s]) ?? 0]))
  live = true
  everLive = true
  failures = 0
  setConnection('live')
  const what = `${workers.size} worker${workers.size === 1 ? '' : 's'}, ${tasks.size} task${tasks.size === 1 ? '' : 's'}`
  addEvent(first ? `Connected to the master: ${what}` : `Reconnected, fresh snapshot: ${what}`, 'good', msg.timestamp)
}

function applyWorker(w, timestamp) {
  const known = workers.get(w.worker_id)
  workers.set(w.worker_id, w)
  if (!known) addEvent(`Worker ${w.worker_id} registered at ${w.address ?? w.worker_ip}`, null, timestamp)
  else if ((known.scheduling ?? 'eligible') !== (w.scheduling ?? 'eligible')) addEvent(w.scheduling === 'eligible' ? `Worker ${w.worker_id} uncordoned: it takes tasks again` : `Worker ${w.worker_id} ${w.scheduling}`, w.scheduling === 'drained' ? 'good' : null, timestamp)
  else if (Boolean(known.suspect) !== Boolean(w.suspect)) addEvent(w.suspect ? `Worker ${w.worker_id} is suspect: ${w.suspect_reason ?? 'no answer'}` : `Worker ${w.worker_id} answers again`, w.suspect ? 'bad' : 'good', timestamp)
  else if (known.is_active === w.is_active) addEvent(`Worker ${w.worker_id} updated`, null, timestamp)
  // active/inactive changes are logged from worker_status
}

function applyWorkerStatus(msg) {
  const w = workers.get(msg.worker_id)
  if (w && w.is_active !== msg.is_active) workers.set(msg.worker_id, { ...w, is_active: msg.is_active, status: msg.is_active ? 'active' : 'inactive' })
  addEvent(`Worker ${msg.worker_id} is ${msg.is_active ? 'active' : 'inactive'}`, msg.is_active ? 'good' : 'bad', msg.timestamp)
}

function applyWorkerRemoved(msg) {
  workers.delete(msg.worker_id)
  metrics.delete(msg.worker_id)
  addEvent(`Worker ${msg.worker_id} unregistered`, null, msg.timestamp)
}

function applyTask(t, previous, timestamp) {
  tasks.set(t.task_id, t)
  taskChanged(t)
  if (taskCounts) {
    if (previous && previous in taskCounts) taskCounts[previous] = Math.max(0, taskCounts[previous] - 1)
    if (t.status in taskCounts) taskCounts[t.status]++
  }
  pruneTasks()
  const label = taskLabel(t)
  const text = {
    queued: previous ? `Task ${label} queued again` : `Task ${label} submitted: ${t.command}`,
    assigned: `Task ${label} assigned to ${t.worker_id ?? '?'}`,
    running: `Task ${label} running on ${t.worker_id ?? '?'}`,
    completed: `Task ${label} completed${t.exit_code !== null && t.exit_code !== undefined ? ` (exit ${t.exit_code})` : ''}`,
    failed: `Task ${label} failed${t.exit_code !== null && t.exit_code !== undefined ? ` (exit ${t.exit_code})` : ''}${t.reason ? `: ${t.reason}` : ''}`,
    cancelled: `Task ${label} cancelled`,
  }[t.status] ?? `Task ${label} is ${t.status}`
  addEvent(text, t.status === 'completed' ? 'good' : t.status === 'failed' ? 'bad' : null, timestamp)
}

function finishedAt(t) {
  const f = ms(t.finished_at)
  return Number.isNaN(f) ? ms(t.submitted_at) || 0 : f
}

function pruneTasks() {
  const finished = [...tasks.values()].filter((t) => !UNFINISHED.has(t.status))
  if (finished.length <= RECENT_MAX) return
  finished.sort((a, b) => finishedAt(b) - finishedAt(a))
  for (const t of finished.slice(RECENT_MAX)) tasks.delete(t.task_id)
}

function applyMetrics(msg) {
  const id = msg.worker_id
  // Telemetry is batched, so a summary can trail the worker's removal: ignore unknown workers.
  if (typeof id !== 'string' || !workers.has(id)) return
  let m = metrics.get(id)
  if (!m) {
    m = { latest: null, lastAt: null, firstAt: null, cpu: [], memory: [] }
    metrics.set(id, m)
  }
  const latest = msg.latest
  if (!latest) return
  m.latest = latest
  m.firstAt ??= latest.at
  if (latest.at !== m.lastAt) {
    m.lastAt = latest.at
    m.cpu.push(num(latest.cpu) ?? 0)
    m.memory.push(num(latest.memory) ?? 0)
    if (m.cpu.length > HISTORY) m.cpu.splice(0, m.cpu.length - HISTORY)
    if (m.memory.length > HISTORY) m.memory.splice(0, m.memory.length - HISTORY)
  }
}

// --- events feed ------------------------------------------------------------------------------

function addEvent(text, kind, timestamp) {
  const list = $('#events')
  const item = el('li', { class: kind || null }, el('time', { datetime: timestamp || new Date().toISOString(), text: fmtClock(timestamp) }), el('span', { text }))
  list.prepend(item)
  while (list.children.length > EVENTS_MAX) list.lastElementChild.remove()
}

// --- rendering --------------------------------------------------------------------------------

let renderQueued = false

function scheduleRender() {
  if (renderQueued) return
  renderQueued = true
  requestAnimationFrame(() => {
    renderQueued = false
    render()
  })
}

/** Keyed update of a tbody: rows are reused by key, created, reordered or removed as needed. */
function syncRows(tbody, items, keyOf, build, update) {
  const existing = new Map()
  for (const tr of [...tbody.children]) existing.set(tr.dataset.key, tr)
  let prev = null
  for (const item of items) {
    const key = keyOf(item)
    let tr = existing.get(key)
    if (tr) existing.delete(key)
    else {
      tr = build(item)
      tr.dataset.key = key
    }
    update(tr, item)
    const want = prev ? prev.nextSibling : tbody.firstChild
    if (want !== tr) tbody.insertBefore(tr, want)
    prev = tr
  }
  for (const tr of existing.values()) tr.remove()
}

function sparkline(kind, label) {
  const svg = document.createElementNS(SVG_NS, 'svg')
  svg.setAttribute('class', `spark ${kind}`)
  svg.setAttribute('viewBox', `0 0 ${HISTORY - 1} 100`)
  svg.setAttribute('preserveAspectRatio', 'none')
  svg.setAttribute('role', 'img')
  svg.setAttribute('aria-label', label)
  svg.append(document.createElementNS(SVG_NS, 'polyline'))
  return svg
}

function drawSparkline(svg, values) {
  const start = HISTORY - values.length
  const points = values.map((v, i) => `${start + i},${(100 - clamp(v, 0, 100)).toFixed(1)}`).join(' ')
  setAttr(svg.firstChild, 'points', points)
}

function usageCell(kind, label) {
  const pct = el('span', { class: 'pct' })
  const svg = sparkline(kind, label)
  const td = el('td', { class: `usage-${kind}` }, el('div', { class: 'usage' }, pct, svg))
  return { td, pct, svg }
}

function buildWorkerRow(w) {
  const id = w.worker_id
  const c = {
    id: el('span', { class: 'mono', text: id }),
    address: el('span', { class: 'sub mono address' }),
    badge: el('span', { class: 'badge' }),
    // Cordoned, draining, drained: an operator took it out of placement (hidden otherwise).
    sched: el('span', { class: 'badge sched', hidden: true }),
    cores: el('span', { class: 'cores' }),
    memory: el('span', { class: 'memory' }),
    rest: el('span', { class: 'sub' }),
    cpuUse: usageCell('cpu', `CPU use of ${id}, last ${HISTORY} samples`),
    memUse: usageCell('memory', `Memory use of ${id}, last ${HISTORY} samples`),
    running: el('td', { class: 'num running', 'data-label': 'Tasks' }),
    uptime: el('td', { class: 'uptime', 'data-label': 'Uptime' }),
    heartbeat: el('td', { class: 'heartbeat', 'data-label': 'Last heartbeat' }),
  }
  c.cpuUse.td.dataset.label = 'CPU use'
  c.memUse.td.dataset.label = 'Memory use'
  const button = el('button', { type: 'button', class: 'danger', text: 'Unregister', 'aria-label': `Unregister ${id}`, onclick: () => unregisterWorker(id, button) })
  const tr = el(
    'tr',
    { class: 'worker', 'data-worker-id': id },
    el('td', { class: 'worker-id', 'data-label': 'Worker' }, c.id, c.address),
    el('td', { class: 'state', 'data-label': 'State' }, c.badge, c.sched),
    el('td', { class: 'capacity', 'data-label': 'Capacity' }, c.cores, ' · ', c.memory, c.rest),
    c.cpuUse.td,
    c.memUse.td,
    c.running,
    c.uptime,
    c.heartbeat,
    el('td', { class: 'actions' }, button),
  )
  tr._cells = c
  return tr
}

function updateWorkerRow(tr, w) {
  const c = tr._cells
  // Suspect: active, but its last AssignTask got no answer, so it takes no tasks for now.
  const state = w.is_active ? (w.suspect ? 'suspect' : 'active') : 'inactive'
  if (tr.dataset.state !== state) tr.dataset.state = state
  setAttr(c.badge, 'class', `badge ${state}`)
  setAttr(c.badge, 'title', w.is_active && w.suspect ? w.suspect_reason : null)
  setText(c.badge, state)
  const sched = w.scheduling && w.scheduling !== 'eligible' ? w.scheduling : null
  c.sched.hidden = sched === null
  if (sched !== null) {
    setAttr(c.sched, 'class', `badge sched ${sched}`)
    setText(c.sched, sched)
    const d = w.drain
    setAttr(c.sched, 'title', sched === 'cordoned' ? 'no new tasks are placed on it' : sched === 'draining' ? `no new tasks; what runs there may finish${d?.deadline ? `, the rest is requeued at ${d.deadline}` : ''}` : `drained at ${d?.drained_at ?? ''}: it can be stopped`)
  }
  setText(c.address, w.address ?? w.worker_ip ?? dash)
  setAttr(c.address, 'title', w.reported_address && w.reported_address !== w.address ? `reports ${w.reported_address}` : null)
  // Specs come with the worker's registration: none yet for a worker that never connected.
  const known = w.total_cpu !== null && w.total_cpu !== undefined
  setText(c.cores, known ? `${fmtNumber(w.total_cpu)} cores` : dash)
  setText(c.memory, known ? fmtGB(w.total_memory) : dash)
  setText(c.rest, known ? `${fmtGB(w.total_storage)} storage · ${fmtNumber(w.total_gpu, 0)} GPU` : 'known once it connects')

  const m = metrics.get(w.worker_id)
  const latest = m?.latest
  const usage = latest ?? w.usage
  setText(c.cpuUse.pct, w.is_active ? fmtPct(usage?.cpu) : dash)
  setText(c.memUse.pct, w.is_active ? fmtPct(usage?.memory) : dash)
  drawSparkline(c.cpuUse.svg, m?.cpu ?? [])
  drawSparkline(c.memUse.svg, m?.memory ?? [])
  const running = w.is_active ? (num(latest?.running_tasks) ?? (Array.isArray(w.running_tasks) ? w.running_tasks.length : 0)) : null
  setText(c.running, running === null ? dash : String(running))

  const now = serverNow()
  if (w.is_active && w.connected_at) {
    setText(c.uptime, fmtDuration(now - ms(w.connected_at)))
    setAttr(c.uptime, 'title', `connected at ${w.connected_at}`)
  } else {
    setText(c.uptime, w.disconnected_at ? `offline ${fmtDuration(now - ms(w.disconnected_at))}` : 'never connected')
    setAttr(c.uptime, 'title', w.disconnected_at ? `disconnected at ${w.disconnected_at}` : null)
  }

  // The newest of the record's heartbeat and the telemetry's latest sample.
  let beat = w.last_heartbeat ?? null
  if (latest?.at && (!beat || ms(latest.at) > ms(beat))) beat = latest.at
  setText(c.heartbeat, fmtAgo(beat))
  setAttr(c.heartbeat, 'title', beat)
}

function buildTaskRow(t, kind) {
  const id = t.task_id
  const c = {
    // The whole id, one click selects it all (to paste into `cloudai task <id>`); it opens the task.
    id: el('button', { type: 'button', class: 'link mono task-id', title: 'Show this task and its output', onclick: () => openTask(id) }),
    name: el('span', { class: 'sub' }),
    command: el('td', { class: 'cmd', 'data-label': 'Command' }),
    badge: el('span', { class: 'badge' }),
    why: el('span', { class: 'sub why' }),
    worker: el('td', { class: 'mono worker', 'data-label': 'Worker' }),
    attempts: el('td', { class: 'num attempts', 'data-label': 'Attempts' }),
    exit: el('td', { class: 'num exit-code', 'data-label': 'Exit code' }),
    when: el('td', { class: 'when', 'data-label': kind === 'queue' ? 'Submitted' : 'Finished' }),
    last: el('td', { class: kind === 'queue' ? 'actions' : 'reason', 'data-label': kind === 'queue' ? null : 'Reason' }),
  }
  if (kind === 'queue') {
    const button = el('button', { type: 'button', class: 'danger', text: 'Cancel', 'aria-label': `Cancel ${id}`, onclick: () => cancelTask(id, button) })
    c.last.append(button)
  }
  const tr = el(
    'tr',
    { class: 'task', 'data-task-id': id },
    el('td', { class: 'task', 'data-label': 'Task' }, c.id, c.name),
    c.command,
    el('td', { class: 'state', 'data-label': 'State' }, c.badge, c.why),
    c.worker,
    c.attempts,
    c.exit,
    c.when,
    c.last,
  )
  tr._cells = c
  return tr
}

function updateTaskRow(tr, t, kind) {
  const c = tr._cells
  if (tr.dataset.state !== t.status) tr.dataset.state = t.status
  setText(c.id, t.task_id)
  setText(c.name, t.name || '')
  setText(c.command, t.command)
  setAttr(c.command, 'title', t.docker_image ? `${t.command}\n(image ${t.docker_image})` : t.command)
  setAttr(c.badge, 'class', `badge ${t.status}`)
  setText(c.badge, t.status)
  // Why a queued task waits (no registered worker is large enough...), under its state.
  setText(c.why, kind === 'queue' && t.reason ? t.reason : '')
  setText(c.worker, t.worker_id ?? (t.target_worker_id ? `→ ${t.target_worker_id}` : dash))
  setText(c.attempts, `${t.attempts ?? 0}/${t.max_attempts ?? '?'}`)
  setText(c.exit, t.exit_code === null || t.exit_code === undefined ? dash : String(t.exit_code))
  const when = kind === 'queue' ? t.submitted_at : t.finished_at ?? t.submitted_at
  setText(c.when, fmtAgo(when))
  setAttr(c.when, 'title', when)
  if (kind !== 'queue') setText(c.last, t.reason ?? '')
}

const STATE_ORDER = { running: 0, assigned: 1, queued: 2 }

function render() {
  // Workers, by id.
  const ws = [...workers.values()].sort((a, b) => a.worker_id.localeCompare(b.worker_id, undefined, { numeric: true }))
  syncRows($('#workers tbody'), ws, (w) => w.worker_id, buildWorkerRow, updateWorkerRow)
  $('#workers-empty').hidden = ws.length > 0

  // The queue: running, then assigned, then queued oldest first (the order they are taken in).
  const all = [...tasks.values()]
  const queue = all.filter((t) => UNFINISHED.has(t.status)).sort((a, b) => STATE_ORDER[a.status] - STATE_ORDER[b.status] || ms(a.submitted_at) - ms(b.submitted_at))
  syncRows($('#queue tbody'), queue, (t) => t.task_id, (t) => buildTaskRow(t, 'queue'), (tr, t) => updateTaskRow(tr, t, 'queue'))
  $('#queue-empty').hidden = queue.length > 0
  const recent = all.filter((t) => !UNFINISHED.has(t.status)).sort((a, b) => finishedAt(b) - finishedAt(a))
  syncRows($('#recent tbody'), recent, (t) => t.task_id, (t) => buildTaskRow(t, 'recent'), (tr, t) => updateTaskRow(tr, t, 'recent'))
  $('#recent-empty').hidden = recent.length > 0

  renderSummary(ws)
  syncTargetOptions(ws)
  seedHistory()
  updateRetryHint()
}

let summaryCells = null

function renderSummary(ws) {
  if (!summaryCells) {
    summaryCells = {}
    const dl = $('#summary')
    for (const [key, label] of [['workers', 'Workers'], ['active', 'Active'], ['inactive', 'Inactive'], ...TASK_STATES.map((s) => [s, s[0].toUpperCase() + s.slice(1)])]) {
      const dd = el('dd', { 'data-count': key, text: dash })
      dl.append(el('div', {}, el('dt', { text: label }), dd))
      summaryCells[key] = dd
    }
  }
  const active = ws.filter((w) => w.is_active).length
  setText(summaryCells.workers, ws.length)
  setText(summaryCells.active, active)
  setText(summaryCells.inactive, ws.length - active)
  for (const s of TASK_STATES) setText(summaryCells[s], taskCounts ? taskCounts[s] : dash)
}

function syncTargetOptions(ws) {
  const select = /** @type {HTMLSelectElement} */ ($('#task-form select[name="target_worker_id"]'))
  const ids = ws.map((w) => w.worker_id)
  const current = [...select.options].slice(1).map((o) => o.value)
  if (current.length === ids.length && current.every((id, i) => id === ids[i])) return
  const selected = select.value
  select.replaceChildren(el('option', { value: '', text: 'any worker' }), ...ids.map((id) => el('option', { value: id, text: id })))
  select.value = ids.includes(selected) ? selected : ''
}

// --- one task: its fields and output -----------------------------------------------------------

/** The task the dialog shows, and the status it was fetched in (a change fetches it again). */
let shown = null

async function openTask(id) {
  const dialog = /** @type {HTMLDialogElement} */ ($('#task-dialog'))
  stopFollowing()
  shown = { id, status: null }
  setText($('#task-dialog-title'), `Task ${id}`)
  if (!dialog.open) dialog.showModal()
  await refreshTask()
  if (shown && shown.id === id && UNFINISHED.has(shown.status)) followOutput(shown)
}

// --- a running task's output, live ---------------------------------------------------------------

/** The most of a task's output the dialog holds while it follows (older lines are dropped). */
const FOLLOW_MAX_CHARS = 256 * 1024
/** The dialog's live output: set while it follows the task it shows. */
let following = null

function stopFollowing() {
  following?.abort.abort()
  following = null
  if ($('#task-dialog-follow')) setFollowNote('')
}

/** The dialog's line under the output that says the live output is reconnecting (created once). */
function followNote() {
  let note = $('#task-dialog-follow')
  if (!note) {
    note = el('p', { id: 'task-dialog-follow', class: 'follow-note', role: 'status' })
    note.hidden = true
    $('#task-dialog-output').after(note)
  }
  return note
}

function setFollowNote(text) {
  const note = followNote()
  setText(note, text)
  note.hidden = text === ''
}

/** The message of an API error body, or the HTTP status. */
async function refusalOf(res) {
  try {
    const body = await res.json()
    if (body && body.error && typeof body.error.message === 'string') return `${res.status} ${body.error.code}: ${body.error.message}`
  } catch {
    // not a cloudai error body
  }
  return `HTTP ${res.status}`
}

/**
 * Follows the shown task's output on GET /api/tasks/{id}/logs?follow=1 as NDJSON, line by line,
 * until the task ends or the dialog closes. fetch rather than EventSource: EventSource cannot send
 * the API token's Authorization header. As an EventSource does, a lost connection and a 503 (the
 * master's reader limit, a master shutting down or restarting; 502 and 504 from a proxy in front)
 * are tried again with backoff from the last line (`after`, as Last-Event-ID would), and the dialog
 * says so; any other refusal ends following (the task's fields stay as GET /api/tasks/{id} showed them).
 */
function followOutput(want) {
  const abort = new AbortController()
  const f = { id: want.id, abort, text: '', live: false }
  following = f
  const pre = $('#task-dialog-output')
  let since = 0
  const show = () => {
    if (following !== f) return
    if (f.text.length > FOLLOW_MAX_CHARS) f.text = f.text.slice(f.text.indexOf('\n', f.text.length - FOLLOW_MAX_CHARS) + 1)
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4
    setText(pre, f.text || 'No output yet.')
    if (atBottom) pre.scrollTop = pre.scrollHeight
  }
  const take = (e) => {
    if (e.type === 'line') {
      f.text += `${e.stream === 'cloudai' ? `[${e.text}]` : e.text}\n`
      since = e.seq
    } else if (e.type === 'gap') {
      f.text += `[${e.missed} line(s) no longer kept]\n`
      since = e.seq + e.missed - 1
    }
    return e.type === 'end'
  }
  const note = (text) => {
    if (following === f) setFollowNote(text)
  }
  const retryNote = (why, delay) => note(`${why}; reconnecting in ${Math.round(delay / 100) / 10}s from line ${since + 1}…`)
  const run = async () => {
    let delay = 500
    while (following === f) {
      let why
      try {
        const res = await fetch(`/api/tasks/${encodeURIComponent(f.id)}/logs?follow=1${since > 0 ? `&after=${since}` : ''}`, {
          headers: { accept: 'application/x-ndjson', ...authHeaders() },
          cache: 'no-store',
          signal: abort.signal,
        })
        if (res.status === 503 || res.status === 502 || res.status === 504) {
          why = `The master answered ${await refusalOf(res)}`
        } else if (!res.ok || !res.body) {
          if (res.status !== 204) note(`Live output stopped: the master answered ${await refusalOf(res)}`)
          return
        } else {
          f.live = true
          note('')
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
          let buf = ''
          for (;;) {
            const { value, done } = await reader.read()
            if (done) break
            buf += value
            let ended = false
            let nl
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl)
              buf = buf.slice(nl + 1)
              if (line.trim() === '') continue
              let event
              try {
                event = JSON.parse(line)
              } catch {
                // Not a log event: retrying would read it again, so following stops here.
                note('Live output stopped: the master sent a line that is not a log event')
                return
              }
              // Backoff starts over only once the stream delivered something: a master that
              // answers 200 and drops the stream at once is retried with a growing pause.
              delay = 500
              if (take(event)) ended = true
            }
            show()
            if (ended) return
          }
          why = 'Connection to the master lost'
        }
      } catch {
        if (abort.signal.aborted) return
        why = 'Connection to the master lost'
      }
      if (following !== f) return
      retryNote(why, delay)
      await new Promise((resolve) => setTimeout(resolve, delay))
      delay = Math.min(delay * 2, 5000)
    }
  }
  run().catch(() => undefined)
}

async function refreshTask() {
  if (!shown) return
  const want = shown
  const out = $('#task-dialog-error')
  try {
    const t = await api('GET', `/api/tasks/${encodeURIComponent(want.id)}`)
    if (shown !== want) return
    want.status = t.status
    showError(out, null)
    const rows = [
      ['Status', t.status],
      ['Name', t.name || dash],
      ['Command', t.command],
      ['Worker', t.worker_id ?? (t.target_worker_id ? `→ ${t.target_worker_id}` : dash)],
      ['Attempts', `${t.attempts ?? 0}/${t.max_attempts ?? '?'}`],
      ['Exit code', t.exit_code === null || t.exit_code === undefined ? dash : String(t.exit_code)],
      ['Submitted', t.submitted_at ?? dash],
      ['Finished', t.finished_at ?? dash],
      ['Reason', t.reason || dash],
    ]
    $('#task-dialog-fields').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]))
    // While the dialog follows the output live, that is what it shows (the task's `logs` is a tail).
    if (!(following && following.id === want.id && following.live)) {
      setText($('#task-dialog-output'), t.logs ? t.logs : UNFINISHED.has(t.status) ? 'No output yet.' : 'No output.')
    }
  } catch (err) {
    if (shown === want) showError(out, err)
  }
}

$('#task-dialog').addEventListener('close', () => {
  shown = null
  stopFollowing()
})

/** Called on every task event: the dialog's task, once it moved on, is fetched again (its output grew). */
function taskChanged(t) {
  if (shown && shown.id === t.task_id && shown.status !== null && shown.status !== t.status) {
    refreshTask().catch(() => undefined)
  }
}

// --- sparklines from the master's history --------------------------------------------------------

/** Worker id → the seeding job for it; a worker removed and registered again gets a new one. */
const seeded = new Map()
let seeding = Promise.resolve()

/** Active workers' sparklines start from the history the master keeps, not empty, once per worker. */
function seedHistory() {
  for (const id of [...seeded.keys()]) if (!workers.has(id)) seeded.delete(id)
  for (const w of workers.values()) {
    if (!w.is_active || seeded.has(w.worker_id)) continue
    const id = w.worker_id
    const job = {}
    seeded.set(id, job)
    // One at a time: a page opened on a large cluster must not fire a request per worker at once.
    seeding = seeding.then(async () => {
      if (seeded.get(id) !== job) return
      const r = await api('GET', `/api/workers/${encodeURIComponent(id)}/metrics`).catch(() => null)
      if (seeded.get(id) !== job || !Array.isArray(r?.history)) return
      let m = metrics.get(id)
      if (!m) {
        m = { latest: null, lastAt: null, firstAt: null, cpu: [], memory: [] }
        metrics.set(id, m)
      }
      // The history before the first live sample, then what arrived live: the recent past once.
      const before = m.firstAt === null ? Infinity : ms(m.firstAt)
      const points = r.history.filter((p) => ms(p.at) < before).slice(-HISTORY)
      if (points.length === 0) return
      m.cpu = [...points.map((p) => num(p.cpu) ?? 0), ...m.cpu].slice(-HISTORY)
      m.memory = [...points.map((p) => num(p.memory) ?? 0), ...m.memory].slice(-HISTORY)
      scheduleRender()
    })
  }
}

// --- actions ----------------------------------------------------------------------------------

async function withButton(button, fn) {
  button.disabled = true
  try {
    return await fn()
  } finally {
    button.disabled = false
  }
}

$('#register-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const form = /** @type {HTMLFormElement} */ (e.currentTarget)
  const out = $('#register-error')
  const result = $('#register-result')
  showError(out, null)
  setText(result, '')
  const body = { worker_id: form.elements.worker_id.value.trim(), worker_ip: form.elements.worker_ip.value.trim() }
  try {
    const r = await withButton(form.querySelector('button[type="submit"]'), () => api('POST', '/api/workers', body))
    const text = r?.message ? `${body.worker_id}: ${r.message}` : `Registered ${body.worker_id}`
    // The worker's token is in this answer only (the master keeps its hash): shown once, here.
    setText(result, r?.token ? `${text}. Its token, shown once (start the worker with it in --token-file or CLOUDAI_WORKER_TOKEN): ${r.token}` : text)
    form.reset()
  } catch (err) {
    showError(out, err)
  }
})

function numberField(input, label) {
  if (input.validity.badInput) throw new ApiError('CLOUDAI_BAD_FIELD', `${label} must be a number`)
  const v = input.value.trim()
  return v === '' ? undefined : Number(v)
}

$('#task-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const form = /** @type {HTMLFormElement} */ (e.currentTarget)
  const f = form.elements
  const out = $('#task-error')
  const result = $('#task-result')
  showError(out, null)
  setText(result, '')
  try {
    const body = { command: f.command.value }
    const name = f.name.value.trim()
    if (name) body.name = name
    const cpu = numberField(f.req_cpu, 'CPU')
    if (cpu !== undefined) body.req_cpu = cpu
    const memory = numberField(f.req_memory, 'Memory')
    if (memory !== undefined) body.req_memory = memory
    if (f.target_worker_id.value) body.target_worker_id = f.target_worker_id.value
    const r = await withButton(form.querySelector('button[type="submit"]'), () => api('POST', '/api/tasks', body))
    const id = r?.task_id ?? r?.task?.task_id
    setText(result, id ? `Task ${id} queued` : 'Task queued')
    if (id) result.dataset.taskId = id
    f.command.value = ''
    f.name.value = ''
  } catch (err) {
    showError(out, err)
  }
})

async function unregisterWorker(id, button) {
  const out = $('#workers-error')
  showError(out, null)
  if (!window.confirm(`Unregister worker ${id}? The master forgets it and stops dialing it.`)) return
  try {
    await withButton(button, () => api('DELETE', `/api/workers/${encodeURIComponent(id)}`))
  } catch (err) {
    showError(out, err, `Unregister ${id}: `)
  }
}

async function cancelTask(id, button) {
  const out = $('#tasks-error')
  showError(out, null)
  try {
    await withButton(button, () => api('DELETE', `/api/tasks/${encodeURIComponent(id)}`))
  } catch (err) {
    showError(out, err, `Cancel ${shortId(id)}: `)
  }
}

// --- start ------------------------------------------------------------------------------------

// "12s ago", uptimes and the retry countdown move every second.
setInterval(scheduleRender, 1000)
render()
connect()
