// What both ends of a task's log stream (GET /api/tasks/{id}/logs) count on: the master writes a
// keepalive (an SSE comment, a blank NDJSON line) this often, whatever the task prints, so that a
// reader that hears nothing at all for a few of them knows the link is gone. A cut link or a master
// stopped dead (SIGSTOP, a host that froze) sends no FIN and no RST: without its own idle limit a
// follower would wait on the socket for as long as TCP keeps an idle connection, which is forever.

/** The master's keepalive interval on a task-log stream. */
export const TASK_LOG_KEEPALIVE_MS = 15_000

/** `cloudai logs`: with nothing read for this long (three keepalives missed), the connection is counted as lost. */
export const TASK_LOG_IDLE_DEFAULT_MS = 3 * TASK_LOG_KEEPALIVE_MS
