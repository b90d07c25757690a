import { CloudaiError, ErrorCodes, type ErrorCode } from '../shared/errors.js'
import type { LogsOptions } from './options.js'
import { formatDuration } from '../shared/duration.js'
import { TASK_LOG_KEEPALIVE_MS } from '../shared/task-log-stream.js'

// `cloudai logs <id>`: a task's output from GET /api/tasks/{id}/logs as NDJSON, printed line by
// line as it comes. A connection lost after the first answer is opened again by itself, from the
// last sequence number printed (the route's `after`), so no line is printed twice or skipped; with
// -f the command ends when the task does, with the task's exit code. `--since` goes to the master
// as typed (a duration is read on the master's clock, as the lines' times are); a reconnection
// sends the time it stood for when the first request went, so the window does not slide. A
// connection that brings nothing at all for --idle-timeout (the master's keepalives included) is
// counted as lost too, and opened again the same way.

/** Time given to the master to answer with headers (the body may then take as long as the task). */
const CONNECT_TIMEOUT_MS = 10_000
const RETRY_MIN_MS = 250
const RETRY_MAX_MS = 5_000

interface LogEvent { type: string; seq: number; stream?: string; timestamp?: string; text?: string; missed?: number; complete?: boolean; status?: string; exit_code?: number | null }

export interface LogsOutput {
  out: (text: string) => void
  err: (text: string) => void
}

/** Resolves with the exit code: the task's with -f (1 when it has none), 0 otherwise. */
export async function runLogs(api: string, token: string | null, id: string, opts: LogsOptions, io: LogsOutput): Promise<number> {
  let after = opts.after
  /**
   * `--since`, as typed, so that a duration is counted back on the master's clock. Sent until a
   * line or a gap came: from then on `after` says where to go on, and a time computed here would
   * be on this host's clock, which may be ahead of the master's and filter out every new line.
   */
  const notBefore = opts.since
  let connected = false
  let delay = RETRY_MIN_MS
  for (;;) {
    const params = new URLSearchParams()
    if (opts.follow) params.set('follow', '1')
    if (after > 0) params.set('after', String(after))
    else {
      // A reconnection that has seen nothing yet asks again as the first request did (after is 0 until a line or gap came).
      if (notBefore !== null) params.set('since', notBefore)
      if (opts.tail > 0) params.set('tail', String(opts.tail))
    }
    const path = `/api/tasks/${encodeURIComponent(id)}/logs${params.size > 0 ? `?${params}` : ''}`
    // One signal for the whole request: the connect timeout until the headers come, then the idle
    // limit, restarted by every piece read. A cut link or a master stopped dead sends nothing, not
    // even its keepalive, and no FIN: without the limit the read would wait forever.
    const request = new AbortController()
    let idle = false
    let timer = setTimeout(() => request.abort(), CONNECT_TIMEOUT_MS)
    const restartIdle = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => {
        idle = true
        request.abort()
      }, opts.idleTimeoutMs)
    }
    let res: Response
    try {
      res = await fetch(api.replace(/\/+$/, '') + path, {
        headers: { accept: 'application/x-ndjson', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        signal: request.signal,
      })
    } catch (err) {
      clearTimeout(timer)
      if (!connected) throw unreachable(api, err)
      await lost(io, after, delay)
      delay = Math.min(RETRY_MAX_MS, delay * 2)
      continue
    }
    if (res.status !== 200) {
      clearTimeout(timer)
      const text = await res.text().catch(() => '')
      // A master restarting answers 503 for a moment: the same as a lost connection.
      if (connected && res.status === 503) {
        await lost(io, after, delay)
        continue
      }
      throw errorFrom(res.status, text)
    }
    connected = true
    restartIdle()
    let buf = ''
    const decoder = new TextDecoder()
    try {
      for await (const piece of res.body ?? []) {
        restartIdle()
        buf += decoder.decode(piece as Uint8Array, { stream: true })
        let nl
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl)
          buf = buf.slice(nl + 1)
          if (line.trim() === '') continue // a keepalive
          const e = JSON.parse(line) as LogEvent
          delay = RETRY_MIN_MS
          if (e.type === 'line') {
            // The master's own word between attempts goes with the other notices, not the output.
            if (e.stream === 'cloudai') io.err(`cloudai: ${e.text}\n`)
            else io.out(`${opts.timestamps ? `${e.timestamp} ` : ''}${e.text}\n`)
            after = e.seq
          } else if (e.type === 'gap') {
            io.err(`cloudai: ${e.missed} line(s) from ${e.seq} on are no longer kept\n`)
            after = e.seq + (e.missed ?? 0) - 1
          } else if (e.type === 'end') {
            if (!e.complete) return 0
            if (e.status === 'not_found') throw new CloudaiError('CLOUDAI_UNKNOWN_TASK', `task ${id}: its worker no longer has its output`)
            if (!opts.follow) return 0
            return typeof e.exit_code === 'number' ? e.exit_code : 1
          }
        }
      }
    } catch (err) {
      if (err instanceof CloudaiError || err instanceof SyntaxError) throw err
    } finally {
      clearTimeout(timer)
    }
    if (idle) io.err(`cloudai: nothing from the master for ${formatDuration(opts.idleTimeoutMs)}, not even its keepalive (every ${formatDuration(TASK_LOG_KEEPALIVE_MS)}): the link or the master is gone\n`)
    // The stream ended without its end event: the connection was lost.
    await lost(io, after, delay)
    delay = Math.min(RETRY_MAX_MS, delay * 2)
  }
}

async function lost(io: LogsOutput, after: number, delay: number): Promise<void> {
  io.err(`cloudai: connection to the master lost; reconnecting from line ${after + 1}\n`)
  await new Promise((resolve) => setTimeout(resolve, delay))
}

function unreachable(api: string, err: unknown): CloudaiError {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } }
  if (e?.name === 'AbortError') return new CloudaiError('CLOUDAI_API_UNREACHABLE', `the master at ${api} did not answer within ${CONNECT_TIMEOUT_MS / 1000}s`, { api })
  const reason = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err)
  return new CloudaiError('CLOUDAI_API_UNREACHABLE', `cannot reach the master at ${api} (${reason}): is \`cloudai master\` running? Start it, or point --api at the master's HTTP API`, { api })
}

function errorFrom(status: number, text: string): CloudaiError {
  let error: { code?: unknown; message?: unknown } | undefined
  try {
    error = (JSON.parse(text) as { error?: typeof error }).error
  } catch {
    error = undefined
  }
  if (typeof error?.code === 'string' && typeof error.message === 'string' && Object.hasOwn(ErrorCodes, error.code)) {
    return new CloudaiError(error.code as ErrorCode, error.message, { httpStatus: status, body: text })
  }
  return new CloudaiError('CLOUDAI_INTERNAL', `HTTP ${status} without a cloudai error body; is this a cloudai master?`, { httpStatus: status, body: text })
}
