import type { HealthReport } from '../master/health.js'
import type { WatchMessage } from './watch.js'
import type { ClusterStatus, TaskView, WorkerMetricsView, WorkerView } from '../master/views.js'
import { toCloudaiError } from '../shared/errors.js'
import type { TaskStatus } from '../shared/types.js'

// What people read: the CLI and the master> prompt print the same text. Every function is pure;
// the current time and whether to colour come in as arguments, so tests are deterministic.

export interface FormatOptions {
  /** Epoch ms that ages are measured from. */
  now: number
  /** ANSI colours; only when the output is a terminal that takes them. */
  color: boolean
}

const GREEN = '\x1b[32m'
const RED = '\x1b[31m'
const YELLOW = '\x1b[33m'
const CYAN = '\x1b[36m'
const GRAY = '\x1b[90m'
const RESET_FG = '\x1b[39m'
const ANSI = /\x1b\[[0-9;]*m/g

/** "12s ago", "3m ago", "5h ago", "2d ago"; "never" for a worker that has not sent a heartbeat. */
export function formatAge(iso: string | null, now: number): string {
  if (iso === null) return 'never'
  const at = Date.parse(iso)
  if (Number.isNaN(at)) return 'unknown'
  // A timestamp slightly ahead of our clock (master on another host) reads as just now.
  const s = Math.floor(Math.max(0, now - at) / 1000)
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86_400)}d ago`
}

/** "42s", "3m 12s", "2h 5m", "3d 4h": the two largest units are enough for an uptime. */
export function formatUptime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

function amount(n: number | null, unit = ''): string {
  if (n === null) return '-'
  return `${Number.isInteger(n) ? n : n.toFixed(1)}${unit}`
}

function percent(n: number | undefined): string {
  return n === undefined ? '-' : `${n.toFixed(1)}%`
}

function statusCell(w: WorkerView, color: boolean): string {
  // A master before suspicion existed sends no `suspect`; one before cordons no `scheduling`.
  const suspect = w.is_active && w.suspect === true
  const text = suspect ? '◐ Suspect' : w.is_active ? '● Active' : '○ Inactive'
  const out = schedulingOf(w) === 'eligible' ? '' : `, ${schedulingOf(w)}`
  if (!color) return text + out
  return `${suspect ? YELLOW : w.is_active ? GREEN : RED}${text}${RESET_FG}${out === '' ? '' : `${YELLOW}${out}${RESET_FG}`}`
}

const schedulingOf = (w: WorkerView): WorkerView['scheduling'] => w.scheduling ?? 'eligible'

type Align = 'left' | 'right'

/** Columns padded to their widest cell, measured without colour codes. */
function renderTable(headers: readonly string[], align: readonly Align[], rows: readonly string[][]): string {
  const width = (cell: string): number => cell.replace(ANSI, '').length
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))))
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => {
        const pad = ' '.repeat((widths[i] ?? 0) - width(cell))
        return align[i] === 'right' ? pad + cell : cell + pad
      })
      .join('  ')
      .trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}

export function formatWorkerSummary(workers: readonly WorkerView[]): string {
  const active = workers.filter((w) => w.is_active).length
  const suspect = workers.filter((w) => w.is_active && w.suspect === true).length
  const cordoned = workers.filter((w) => schedulingOf(w) !== 'eligible').length
  return `${plural(workers.length, 'worker')}: ${active} active${suspect > 0 ? ` (${suspect} suspect)` : ''}, ${workers.length - active} inactive${cordoned > 0 ? `; ${cordoned} cordoned (no new tasks)` : ''}`
}

/** The `workers` table with its summary line. */
export function formatWorkers(workers: readonly WorkerView[], opts: FormatOptions): string {
  if (workers.length === 0) return 'No workers registered yet: add one with register <id> <host:port>'
  const headers = ['ID', 'STATUS', 'ADDRESS', 'CPU', 'MEM', 'CPU%', 'MEM%', 'LAST HEARTBEAT']
  const align: Align[] = ['left', 'left', 'left', 'right', 'right', 'right', 'right', 'left']
  const rows = workers.map((w) => [
    w.worker_id,
    statusCell(w, opts.color),
    w.address,
    amount(w.total_cpu),
    amount(w.total_memory, ' GB'),
    percent(w.usage?.cpu),
    percent(w.usage?.memory),
    formatAge(w.last_heartbeat, opts.now),
  ])
  return `${renderTable(headers, align, rows)}\n\n${formatWorkerSummary(workers)}`
}

export function formatStatus(status: ClusterStatus): string {
  const store = status.store
  const pending = store.pending_writes > 0 ? ` (${plural(store.pending_writes, 'pending write')})` : ''
  const storeLine = store.healthy
    ? `${store.kind}, healthy${pending}`
    : `${store.kind}, FAILING${pending}${store.last_error ? `: ${store.last_error}` : ''}`
  const rows: [string, string][] = [
    ['Workers', String(status.workers)],
    ['Active', String(status.active)],
    ['Inactive', String(status.inactive)],
    // A master from before tasks has no counts; say nothing rather than "none".
    ...(status.tasks ? [['Tasks', formatTaskCounts(status.tasks)] as [string, string]] : []),
    ['Monitor', status.reconnect_monitor],
    ['Store', storeLine],
    ['gRPC', status.grpc_address],
    // A master from before worker tokens does not say; one with --worker-auth none is warned about.
    ...(status.worker_auth === undefined ? [] : [['Worker auth', status.worker_auth === 'none'
      ? 'none (WARNING: workers without a token are accepted from any address: --worker-auth none)'
      : 'token (without one: loopback only, for workers that never presented theirs)'] as [string, string]]),
    ['Uptime', formatUptime(status.uptime_s)],
  ]
  return labelled(rows)
}

/** `Label:  value` lines with the values aligned. */
function labelled(rows: readonly (readonly [string, string])[]): string {
  const labelWidth = Math.max(...rows.map(([label]) => label.length)) + 1
  return rows.map(([label, value]) => `${`${label}:`.padEnd(labelWidth)}  ${value}`).join('\n')
}

export interface RegisterResult {
  worker: WorkerView
  created: boolean
  persisted: boolean
  /** The new worker's token (only in the answer that created it). */
  token?: string | null
}

export function formatRegistered(result: RegisterResult): string {
  const { worker, created, persisted, token } = result
  let text: string
  if (!created) {
    text = `Worker ${worker.worker_id} is already registered at ${worker.address} (${worker.is_active ? 'active' : 'inactive'})`
  } else if (worker.is_active) {
    text = `✅ Worker ${worker.worker_id} registered (already connected and active)`
  } else {
    text = `✅ Worker ${worker.worker_id} registered (offline, will reconnect automatically)`
  }
  if (!created) text = `${text}\n   its token is not shown again; \`cloudai token rotate ${worker.worker_id}\` issues a new one`
  if (token) text = `${text}\n${tokenLines(worker.worker_id, token)}`
  return persisted ? text : `${text}\n   not saved yet: the store is failing; the master writes it once the store answers`
}

/** The token, and how to hand it to the worker: said once, since the master cannot show it again. */
function tokenLines(id: string, token: string): string {
  return [
    `Token: ${token}`,
    '   Shown once: the master keeps only its hash. Give it to the worker, for example in a file only it can read:',
    `   cloudai worker --id ${id} --token-file <file>   (or CLOUDAI_WORKER_TOKEN=<token>, or --token <token>)`,
  ].join('\n')
}

export function formatTokenIssued(issued: { worker_id: string; token: string; previous_valid_until: string | null; persisted: boolean }): string {
  const old = issued.previous_valid_until === null
    ? 'No earlier token of it works any more.'
    : `The old token works until the worker presents this one, at the latest until ${issued.previous_valid_until}.`
  const text = `✅ New token for worker ${issued.worker_id}. ${old}\n${tokenLines(issued.worker_id, issued.token)}`
  return issued.persisted ? text : `${text}\n   not saved yet: the store is failing; the master writes it once the store answers (until then a restart of the master loses it)`
}

export function formatUnregistered(result: { worker_id: string; persisted: boolean; tasks_requeued?: string[] }): string {
  const n = result.tasks_requeued?.length ?? 0
  const text = `Worker ${result.worker_id} unregistered (the master no longer dials it)${n > 0 ? `; its ${n} task(s) went back to the queue (a connected worker is told to stop them)` : ''}`
  return result.persisted ? text : `${text}\n   not removed from the store yet: the store is failing; the master retries`
}

/** The answer to cordon, uncordon and drain (a drain as it started: --detach, or before waiting). */
export function formatScheduling(action: 'cordon' | 'uncordon' | 'drain', result: { worker: WorkerView; persisted: boolean }, now: number): string {
  const w = result.worker
  const id = w.worker_id
  let text: string
  if (action === 'cordon') text = `Worker ${id} cordoned: no new tasks are placed on it (what runs there goes on; tasks for it wait); cloudai uncordon ${id} ends it`
  else if (action === 'uncordon') text = `Worker ${id} uncordoned: it takes tasks again`
  else if (w.scheduling === 'drained') text = formatDrained(w)
  else text = `Worker ${id} draining: cordoned; ${formatDrainProgress(w, now)}`
  return result.persisted ? text : `${text}\n   not saved yet: the store is failing; the master writes it once the store answers`
}

/** What a drain under way still waits for. */
export function formatDrainProgress(w: WorkerView, now: number): string {
  const n = w.running_tasks.length
  const deadline = w.drain?.deadline ?? null
  const left = deadline === null ? null : Math.max(0, Date.parse(deadline) - now)
  const when = left === null ? 'no deadline' : left === 0 ? 'deadline reached: what is left is cancelled and requeued' : `deadline in ${span(left)}`
  return `${plural(n, 'task')} still running there (${when})`
}

export function formatDrained(w: WorkerView): string {
  return `✅ Worker ${w.worker_id} drained: nothing runs there, it can be stopped; it stays cordoned until cloudai uncordon ${w.worker_id}`
}

// --- tasks ---------------------------------------------------------------------------------------

/** Lifecycle order, for counts and summaries. */
const TASK_STATUS_ORDER: readonly TaskStatus[] = ['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled']
const TASK_STATUS_COLOR: Readonly<Record<TaskStatus, string>> = {
  queued: YELLOW,
  assigned: CYAN,
  running: CYAN,
  completed: GREEN,
  failed: RED,
  cancelled: GRAY,
}
const NAME_WIDTH = 32

function taskStatusCell(status: string, color: boolean): string {
  const code = (TASK_STATUS_COLOR as Readonly<Record<string, string>>)[status]
  return color && code !== undefined ? `${code}${status}${RESET_FG}` : status
}

/** "2 queued, 1 running, 5 completed" (statuses with none left out), or "none". */
export function formatTaskCounts(counts: Readonly<Partial<Record<string, number>>>): string {
  const parts = TASK_STATUS_ORDER.filter((s) => (counts[s] ?? 0) > 0).map((s) => `${counts[s]} ${s}`)
  return parts.length === 0 ? 'none' : parts.join(', ')
}

function clip(text: string, width: number): string {
  const line = text.replace(/\s+/g, ' ').trim()
  return line.length > width ? `${line.slice(0, width - 1)}…` : line
}

/** "500ms", "42s", "3m 12s", "2h 5m". */
function span(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`
  return formatUptime(ms / 1000)
}

export interface TaskListFormatOptions extends FormatOptions {
  /** The --status filter the list was asked with, for the empty-list message. */
  status?: TaskStatus | undefined
}

/**
 * The `tasks` table, newest first, with a summary line. An unnamed task shows its command in the
 * NAME column, shortened: a column of dashes would not tell the tasks apart.
 */
export function formatTasks(list: { tasks: readonly TaskView[]; total: number; offset?: number }, opts: TaskListFormatOptions): string {
  const { tasks, total } = list
  if (tasks.length === 0) {
    if (total > 0) return `No tasks at offset ${list.offset ?? 0}: there ${total === 1 ? 'is 1 task' : `are ${total} tasks`}${opts.status ? ` ${opts.status}` : ''}`
    return opts.status ? `No ${opts.status} tasks` : 'No tasks yet: submit one with task submit -- <command...>'
  }
  const headers = ['ID', 'NAME', 'STATUS', 'WORKER', 'ATTEMPTS', 'SUBMITTED', 'EXIT']
  const align: Align[] = ['left', 'left', 'left', 'left', 'right', 'left', 'right']
  const rows = tasks.map((t) => [
    t.task_id,
    clip(t.name !== '' ? t.name : t.command, NAME_WIDTH),
    taskStatusCell(t.status, opts.color),
    t.worker_id ?? '-',
    `${t.attempts}/${t.max_attempts}`,
    formatAge(t.submitted_at, opts.now),
    t.exit_code === null ? '-' : String(t.exit_code),
  ])
  const counts: Partial<Record<string, number>> = {}
  for (const t of tasks) counts[t.status] = (counts[t.status] ?? 0) + 1
  const shown = tasks.length === total ? plural(total, 'task') : `Showing ${tasks.length} of ${plural(total, 'task')} (newest first; --limit and --offset show others)`
  const waiting = tasks.filter((t) => t.status === 'queued' && t.reason).map((t) => `${t.task_id} waits: ${t.reason}`)
  return `${renderTable(headers, align, rows)}\n${waiting.length > 0 ? `\n${waiting.join('\n')}\n` : ''}\n${shown}: ${formatTaskCounts(counts)}`
}

function timeRow(label: string, iso: string | null, now: number): [string, string][] {
  return iso === null ? [] : [[label, `${iso} (${formatAge(iso, now)})`]]
}

/** `task <id>`: the fields that matter, times as ISO and age, the history, and the end of the output last. */
export function formatTask(task: TaskView, opts: FormatOptions): string {
  const t = task
  const started = t.started_at === null ? Number.NaN : Date.parse(t.started_at)
  const finished = t.finished_at === null ? Number.NaN : Date.parse(t.finished_at)
  const rows: [string, string][] = [
    ['Task', t.task_id],
    ...(t.name !== '' ? [['Name', t.name] as [string, string]] : []),
    ['Status', taskStatusCell(t.status, opts.color)],
    ['Command', t.command],
    ...(t.docker_image !== '' ? [['Image', t.docker_image] as [string, string]] : []),
    ['Worker', t.worker_id ?? '-'],
    ...(t.target_worker_id !== null ? [['Target', `${t.target_worker_id} only`] as [string, string]] : []),
    ['Needs', `cpu ${amount(t.req_cpu)}, memory ${amount(t.req_memory, ' GB')}, gpu ${amount(t.req_gpu)}, storage ${amount(t.req_storage, ' GB')}`],
    ['Timeout', t.timeout_s > 0 ? span(t.timeout_s * 1000) : 'none'],
    // The placement number names the worker's task directory (tasks/<id>-<placement>); said when it is not the run count.
    ['Attempts', `${t.attempts} of ${t.max_attempts}${t.attempt > 0 && t.attempt !== t.attempts ? ` (placement ${t.attempt})` : ''}`],
    ['Exit code', t.exit_code === null ? '-' : String(t.exit_code)],
    ...(t.reason !== null && t.reason !== '' ? [['Reason', t.reason] as [string, string]] : []),
    ...timeRow('Submitted', t.submitted_at, opts.now),
    ...timeRow('Assigned', t.assigned_at, opts.now),
    ...timeRow('Started', t.started_at, opts.now),
    ...timeRow('Finished', t.finished_at, opts.now),
    ...(finished >= started ? [['Duration', span(finished - started)] as [string, string]] : []),
  ]
  const parts = [labelled(rows)]
  if (t.history.length > 0) {
    const statusWidth = Math.max(...t.history.map((h) => h.status.length))
    const workerWidth = Math.max(...t.history.map((h) => (h.worker_id ?? '').length))
    const lines = t.history.map((h) => {
      const cells = [h.at, taskStatusCell(h.status, opts.color) + ' '.repeat(statusWidth - h.status.length)]
      // The worker column only when some entry has a worker (a task that never ran has none).
      if (workerWidth > 0) cells.push((h.worker_id ?? '').padEnd(workerWidth))
      cells.push(h.reason ?? '')
      return `  ${cells.join('  ')}`.trimEnd()
    })
    parts.push(`History:\n${lines.join('\n')}`)
  }
  const logs = t.logs.replace(/\n$/, '')
  if (logs !== '') parts.push(`Logs (the end of the output; the full log stays on the worker):\n${logs}`)
  else parts.push(`Logs: ${t.started_at === null ? 'none yet (the task has not started)' : 'no output'}`)
  return parts.join('\n\n')
}

export function formatTaskSubmitted(task: TaskView): string {
  // Queued all the same (a larger worker may register), but the operator hears it now, not after an hour of waiting.
  const waits = task.status === 'queued' && task.reason ? `\n⚠ It waits: ${task.reason}` : ''
  if (!task.durable) return `⚠ Task ${task.task_id} queued in memory only: the master's store is down, so it is lost if the master stops before the store answers${waits}`
  return `✅ Task ${task.task_id} queued${waits}`
}

export function formatTaskCancelled(task: TaskView): string {
  return task.status === 'cancelled' ? `Task ${task.task_id} cancelled` : `Task ${task.task_id}: cancel requested (now ${task.status})`
}

/**
 * `error: <message> (<code>)` for anything thrown; non-cloudai errors show as CLOUDAI_INTERNAL.
 * `flags`: the API fields of the command's body by the flags the user typed them as, so that the
 * master's "target_worker_id nope is not a registered worker" reads "--worker nope ...". The field
 * is details.field when the error has one, else the word the message starts with; "name" or "env"
 * elsewhere in a message are ordinary words.
 */
export function formatError(err: unknown, flags: Readonly<Record<string, string>> = {}): string {
  const e = toCloudaiError(err)
  // The field the error is about: details.field where the master names it; otherwise (the CLI's
  // own errors, the master's task-input checks) the message starts with it. A message that
  // starts with the field gets the flag in its place.
  const named = typeof e.details?.field === 'string' ? e.details.field : undefined
  const field = named ?? /^[a-z_]+(?=[ :])/.exec(e.message)?.[0]
  const flag = field !== undefined && Object.hasOwn(flags, field) ? flags[field] : undefined
  if (flag === undefined) return `error: ${e.message} (${e.code})`
  const leads = e.message.startsWith(field!) && /^[ :]/.test(e.message.slice(field!.length))
  return `error: ${leads ? `${flag}${e.message.slice(field!.length)}` : `${flag}: ${e.message}`} (${e.code})`
}

/** `cloudai health`: the verdict, then one line per failed check with the workers it names. */
export function formatHealth(report: HealthReport, opts: { color: boolean }): string {
  const paint = (text: string, code: string): string => (opts.color ? `${code}${text}${RESET_FG}` : text)
  const w = report.workers
  const verdict = report.status === 'healthy' ? paint('● Healthy', GREEN) : report.status === 'degraded' ? paint('◐ Degraded', YELLOW) : paint('○ Unhealthy', RED)
  const head = `${verdict}  (${plural(w.total, 'worker')}: ${w.active} active, ${w.inactive} inactive; monitor ${report.reconnect_monitor}; ${report.store.kind} store ${report.store.status})`
  const lines = report.reasons.map((r) => {
    const ids = r.worker_ids && r.worker_ids.length > 0 ? `: ${r.worker_ids.join(', ')}${(r.count ?? 0) > r.worker_ids.length ? ` and ${(r.count ?? 0) - r.worker_ids.length} more` : ''}` : ''
    return `  - ${r.message}${ids}`
  })
  const warnings = (report.warnings ?? []).map((w) => `  ! ${paint('warning', YELLOW)}: ${w.message}`)
  return [head, ...lines, ...warnings].join('\n')
}

const WINDOW_ORDER = ['1m', '5m', '15m', '1h'] as const

/** `cloudai metrics <id>`: latest usage, the rolling windows, and the history as a table. */
export function formatWorkerMetrics(m: WorkerMetricsView, opts: FormatOptions & { historyRows?: number }): string {
  const rows: [string, string][] = [
    ['Worker', `${m.worker_id} (${m.is_active ? 'active' : 'inactive'})`],
    ['Uptime', m.uptime_s === null ? '-' : formatUptime(m.uptime_s)],
    ['Heartbeat', formatAge(m.last_heartbeat, opts.now)],
    ['Reconnects', String(m.reconnects)],
  ]
  if (!m.has_data) return `${labelled(rows)}\n\nNo telemetry yet: the worker has not connected to this master.`
  rows.push(['Samples', `${m.samples_processed} processed, ${m.samples_dropped} dropped`])
  const latest = m.latest
  const table = renderTable(
    ['', 'CPU', 'MEM', 'DISK', 'GPU', 'TASKS', 'PEAK CPU', 'PEAK MEM', 'SAMPLES'],
    ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    [
      ...(latest ? [['latest', percent(latest.cpu), percent(latest.memory), percent(latest.storage), percent(latest.gpu), amount(latest.running_tasks), '', '', '']] : []),
      ...WINDOW_ORDER.map((name) => {
        const a = m.averages[name]
        const p = m.peaks[name]
        if (!a || !p) return [name, '-', '-', '-', '-', '-', '-', '-', '0']
        return [name, percent(a.cpu), percent(a.memory), percent(a.storage), percent(a.gpu), amount(a.running_tasks), percent(p.cpu), percent(p.memory), String(a.samples)]
      }),
    ],
  )
  const shown = m.history.slice(-(opts.historyRows ?? 12))
  const history = shown.length === 0
    ? 'No history in the asked range.'
    : renderTable(
        ['AT (UTC)', 'CPU', 'MEM', 'DISK', 'GPU', 'TASKS', 'PEAK CPU', 'SAMPLES'],
        ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
        shown.map((p) => [p.at.slice(11, 19), percent(p.cpu), percent(p.memory), percent(p.storage), percent(p.gpu), amount(p.running_tasks), percent(p.cpu_peak), String(p.samples)]),
      )
  const more = m.history.length > shown.length ? ` (last ${shown.length} of ${m.history.length} points)` : ''
  // Points older than the fine tier are coarser (README: Telemetry): name every width shown.
  const widths = [...new Set(shown.map((p) => p.step_ms ?? m.history_step_ms))].sort((a, b) => a - b)
  const per = widths.length <= 1 ? `one point per ${(widths[0] ?? m.history_step_ms) / 1000}s` : `points of ${widths.map((w) => `${w / 1000}s`).join(' and ')}`
  return `${labelled(rows)}\n\n${table}\n\nHistory, ${per}${more}:\n${history}`
}

/**
 * `cloudai watch`: one line per event, or null for messages that say nothing new to a person
 * (a `worker` record that accompanies a status line, subscription acknowledgements).
 * `known` holds the worker ids seen so far, so that a registration reads as one.
 */
export function formatEvent(m: WatchMessage, opts: { color: boolean; known: Set<string> }): string | null {
  const paint = (text: string, code: string): string => (opts.color ? `${code}${text}${RESET_FG}` : text)
  const at = typeof m.timestamp === 'string' ? m.timestamp.slice(11, 19) : '--:--:--'
  switch (m.type) {
    case 'snapshot': {
      opts.known.clear()
      for (const w of m.workers) opts.known.add(w.worker_id)
      const active = m.workers.filter((w) => w.is_active).length
      return `${at}  watching: ${plural(m.workers.length, 'worker')} (${active} active, ${m.workers.length - active} inactive), tasks: ${formatTaskCounts(m.status.tasks)}`
    }
    case 'worker_status':
      return `${at}  ${m.is_active ? paint('● ', GREEN) : paint('○ ', RED)}${m.worker_id} ${m.is_active ? 'active' : 'inactive'}`
    case 'worker':
      if (opts.known.has(m.worker.worker_id)) return null
      opts.known.add(m.worker.worker_id)
      return `${at}  + ${m.worker.worker_id} registered at ${m.worker.address}`
    case 'worker_removed':
      opts.known.delete(m.worker_id)
      return `${at}  - ${m.worker_id} unregistered`
    case 'task_status': {
      const t = m.task
      const on = t.worker_id ? ` on ${t.worker_id}` : ''
      const detail =
        t.status === 'assigned' ? ` to ${t.worker_id}`
          : t.status === 'running' ? on
            : t.status === 'completed' ? `${on} (exit ${t.exit_code ?? 0})`
              : t.status === 'failed' || t.status === 'cancelled' ? `${on}${t.reason ? `: ${t.reason}` : ''}`
                : t.status === 'queued' && m.previous !== null ? ` again (attempt ${t.attempts + 1} of ${t.max_attempts})` : ''
      return `${at}  task ${t.task_id}${t.name ? ` (${t.name})` : ''} ${t.status}${detail}`
    }
    case 'worker_metrics': {
      const l = m.latest
      if (!l) return null
      return `${at}  ${m.worker_id}  cpu ${percent(l.cpu)}  mem ${percent(l.memory)}  disk ${percent(l.storage)}  tasks ${l.running_tasks}`
    }
    case 'error':
      return `${at}  error from the master: ${String(m.message)} (${String(m.code)})`
    default:
      return null
  }
}
