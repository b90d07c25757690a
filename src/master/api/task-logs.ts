import { CloudaiError } from '../../shared/errors.js'
import { TASK_LOG_KEEPALIVE_MS } from '../../shared/task-log-stream.js'
import type { MasterControl } from '../control.js'
import type { LogEvent } from '../task-log-feeds.js'
import type { LogQuery } from './query.js'
import type { Reply, ReplyStream } from './respond.js'

// GET /api/tasks/{id}/logs: a task's output as Server-Sent Events (the default; `id:` is the
// line's sequence number, so an EventSource that reconnects sends Last-Event-ID and gets exactly
// the rest; the end event's id is `end`, and a reconnection with it is answered 204, which stops
// an EventSource from reconnecting), or as NDJSON with `Accept: application/x-ndjson`. Each event is one line, a gap
// (lines no longer kept) or the end (the task's final status and exit code, or, for a reader that
// does not follow, its status now). The connection's own backpressure paces it (see TaskLogFeeds).
// The query (parseLogQuery): follow, tail, after (a sequence number; Last-Event-ID wins over it)
// and since (a duration back from now or an RFC 3339 time: older lines are not sent).

export const SSE_TYPE = 'text/event-stream; charset=utf-8'
export const NDJSON_TYPE = 'application/x-ndjson; charset=utf-8'

function sse(e: LogEvent): string {
  const data = JSON.stringify(e)
  if (e.type === 'line') return `id: ${e.seq}\ndata: ${data}\n\n`
  // A resume after a gap starts after what it skipped; one after the end is answered 204.
  if (e.type === 'gap') return `event: gap\nid: ${e.seq + e.missed - 1}\ndata: ${data}\n\n`
  return `event: end\nid: end\ndata: ${data}\n\n`
}

const ndjson = (e: LogEvent): string => `${JSON.stringify(e)}\n`

export function serveTaskLogs(control: MasterControl, reply: Reply, id: string, query: LogQuery, accept: string): void {
  if (!control.readTaskLogs) throw new CloudaiError('CLOUDAI_NOT_FOUND', 'this master serves no task output')
  if (query.afterEnd) {
    control.getTask(id) // 404 for an unknown task, as without the header
    return reply.text(204, SSE_TYPE, '', { headers: { 'cache-control': 'no-store' } })
  }
  const asNdjson = accept.includes('application/x-ndjson')
  const format = asNdjson ? ndjson : sse
  let out: ReplyStream | null = null
  let keepalive: NodeJS.Timeout | null = null
  const stopKeepalive = (): void => {
    if (keepalive) clearInterval(keepalive)
    keepalive = null
  }
  // readTaskLogs checks the task (404, 400) before anything is answered, and writes to the sink
  // from the next turn of the loop on, by which time the stream is open.
  const stop = control.readTaskLogs(id, query, {
    write: (e) => out?.write(format(e)) ?? true,
    onWritable: (cb) => out?.onWritable(cb),
    close: () => {
      stopKeepalive()
      out?.end()
    },
  })
  out = reply.stream(200, asNdjson ? NDJSON_TYPE : SSE_TYPE, { headers: { 'cache-control': 'no-store', 'x-accel-buffering': 'no' } })
  if (!out) return stop()
  const stream = out
  reply.onAbort(() => {
    stopKeepalive()
    stop()
  })
  // uWS sends the headers with the first bytes of the body (an empty write sends nothing): a
  // keepalive now, so that a reader of a task that has printed nothing yet has its answer.
  stream.write(asNdjson ? '\n' : 'retry: 1000\n\n')
  // A comment (SSE) or a blank line (NDJSON): keeps proxies from closing a quiet stream, and tells
  // a reader that hears nothing for a few of them that the link is gone (task-log-stream.ts).
  keepalive = setInterval(() => stream.write(asNdjson ? '\n' : ': keepalive\n\n'), TASK_LOG_KEEPALIVE_MS)
  keepalive.unref()
}
