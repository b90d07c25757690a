// The node flags a dial thread is started with: node's own, less those a Worker refuses in its
// execArgv (V8's, and process-wide ones such as --title), which are in effect for every thread
// already. Without this, `node --max-old-space-size=… cloudai master` could not start its pool.

/** The flags a Worker refused (ERR_WORKER_INVALID_EXEC_ARGV: "…invalid execArgv flags: a, b"); none for any other error. */
export function refusedExecArgv(err: unknown): Set<string> {
  const e = err as NodeJS.ErrnoException
  if (e?.code !== 'ERR_WORKER_INVALID_EXEC_ARGV') return new Set()
  const at = e.message.indexOf(': ')
  return new Set(at < 0 ? [] : e.message.slice(at + 2).split(', '))
}

/**
 * `execArgv` without the `refused` flags and their values. Node names a refused flag alone
 * (`--title`, not its value), and a value left behind would end the Worker's options there:
 * everything after it would be dropped without a word. So a refused flag without `=` takes the
 * next entry with it, unless that entry is a flag itself.
 */
export function withoutRefused(execArgv: readonly string[], refused: ReadonlySet<string>): string[] {
  const kept: string[] = []
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i]!
    if (!refused.has(a)) {
      kept.push(a)
      continue
    }
    const next = execArgv[i + 1]
    if (!a.includes('=') && next !== undefined && !next.startsWith('-')) i++
  }
  return kept
}

/**
 * `start(execArgv)`, again without the flags a Worker refuses for as long as it refuses some: V8's
 * own flags (`node --max-old-space-size=… cloudai master`) and process-wide ones (`--title`), which
 * are in effect for every thread already. Node names the refused ones in its error, as they were
 * given, and one kind at a time (process-wide ones first), so it may take a few tries.
 */
export function withAcceptedExecArgv<T>(execArgv: readonly string[], start: (execArgv: string[]) => T): T {
  let argv = [...execArgv]
  for (;;) {
    try {
      return start(argv)
    } catch (err) {
      const kept = withoutRefused(argv, refusedExecArgv(err))
      if (kept.length === argv.length) throw err
      argv = kept
    }
  }
}
