import type { ClusterStatus, WorkerView } from '../master/views.js'
import { toCloudaiError } from '../shared/errors.js'

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
  const text = w.is_active ? '● Active' : '○ Inactive'
  if (!color) return text
  return `${w.is_active ? GREEN : RED}${text}${RESET_FG}`
}

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
  return `${plural(workers.length, 'worker')}: ${active} active, ${workers.length - active} inactive`
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
    ['Monitor', status.reconnect_monitor],
    ['Store', storeLine],
    ['gRPC', status.grpc_address],
    ['Uptime', formatUptime(status.uptime_s)],
  ]
  const labelWidth = Math.max(...rows.map(([label]) => label.length)) + 1
  return rows.map(([label, value]) => `${`${label}:`.padEnd(labelWidth)}  ${value}`).join('\n')
}

export interface RegisterResult {
  worker: WorkerView
  created: boolean
  persisted: boolean
}

export function formatRegistered(result: RegisterResult): string {
  const { worker, created, persisted } = result
  let text: string
  if (!created) {
    text = `Worker ${worker.worker_id} is already registered at ${worker.address} (${worker.is_active ? 'active' : 'inactive'})`
  } else if (worker.is_active) {
    text = `✅ Worker ${worker.worker_id} registered (already connected and active)`
  } else {
    text = `✅ Worker ${worker.worker_id} registered (offline, will reconnect automatically)`
  }
  return persisted ? text : `${text}\n   not saved yet: the store is failing; the master writes it once the store answers`
}

export function formatUnregistered(result: { worker_id: string; persisted: boolean }): string {
  const text = `Worker ${result.worker_id} unregistered (the master no longer dials it)`
  return result.persisted ? text : `${text}\n   not removed from the store yet: the store is failing; the master retries`
}

/** `error: <message> (<code>)` for anything thrown; non-cloudai errors show as CLOUDAI_INTERNAL. */
export function formatError(err: unknown): string {
  const e = toCloudaiError(err)
  return `error: ${e.message} (${e.code})`
}
