import { existsSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from '../shared/log.js'

// A worker's disk under retention: each finished attempt leaves `<data-dir>/tasks/<id>-<attempt>/`
// (its work dir and its whole output log), kept for --task-retention after it finished and then
// removed. The directories are known in the order they finished, oldest first, so a tick looks
// at the expired ones only; the directory is read once, at start.

export interface TaskDirRetentionOptions {
  /** The worker's --data-dir: task directories are under `tasks/`. */
  dataDir: string
  retentionMs: number
  log: Logger
  /**
   * True while the directory must stay: the attempt runs (again), or its result still waits in the
   * outbox for a master. It is looked at again a retention time later.
   */
  inUse: (taskId: string, attempt: number) => boolean
  now?: () => number
  /** Default: a quarter of the retention, between 250 ms and a minute. */
  intervalMs?: number
}

/** `<task id>-<attempt>`: task ids hold dashes too, the attempt is what follows the last one. */
function parseDirName(name: string): { taskId: string; attempt: number } | null {
  const m = /^(.+)-(\d+)$/.exec(name)
  return m ? { taskId: m[1]!, attempt: Number(m[2]) } : null
}

export class TaskDirRetention {
  /** Directory name -> when it finished; Map order is finish order (re-added entries move last). */
  private readonly finished = new Map<string, number>()
  private readonly root: string
  private readonly now: () => number
  private timer: NodeJS.Timeout | null = null

  constructor(private readonly opts: TaskDirRetentionOptions) {
    this.root = join(opts.dataDir, 'tasks')
    this.now = opts.now ?? Date.now
  }

  /**
   * Learns the directories an earlier run left (finished when they were last changed: the marker
   * of a running process is removed from the directory as it ends, the log is closed after it),
   * removes the expired ones, then checks on a timer.
   */
  start(): void {
    if (this.timer) return
    const found: { name: string; at: number }[] = []
    let names: string[] = []
    try {
      names = readdirSync(this.root)
    } catch {
      // No task has run here yet.
    }
    for (const name of names) {
      const dir = join(this.root, name)
      if (parseDirName(name) === null || existsSync(join(dir, 'process.json'))) continue
      try {
        const log = join(dir, 'output.log')
        const at = Math.max(statSync(dir).mtimeMs, existsSync(log) ? statSync(log).mtimeMs : 0)
        found.push({ name, at })
      } catch {
        // Gone meanwhile.
      }
    }
    found.sort((a, b) => a.at - b.at)
    for (const f of found) this.finished.set(f.name, f.at)
    this.sweep()
    const ms = this.opts.intervalMs ?? Math.min(60_000, Math.max(250, Math.floor(this.opts.retentionMs / 4)))
    this.timer = setInterval(() => this.sweep(), ms)
    this.timer.unref()
  }

  /** An attempt finished now: its directory goes a retention time from now. */
  taskFinished(taskId: string, attempt: number): void {
    const name = `${taskId}-${attempt}`
    this.finished.delete(name)
    this.finished.set(name, this.now())
  }

  /** Removes the directories past their retention; the cost is what it removes. */
  sweep(): void {
    const now = this.now()
    const cutoff = now - this.opts.retentionMs
    let removed = 0
    for (const [name, at] of this.finished) {
      if (at > cutoff) break
      this.finished.delete(name)
      const parsed = parseDirName(name)
      if (parsed && this.opts.inUse(parsed.taskId, parsed.attempt)) {
        // Still needed: looked at again later (a rerun that finishes re-adds it anyway).
        this.finished.set(name, now)
        continue
      }
      try {
        rmSync(join(this.root, name), { recursive: true, force: true })
        removed++
      } catch (err) {
        this.opts.log.warn({ dir: join(this.root, name), err: (err as Error).message }, `Cannot remove the task directory ${join(this.root, name)}: ${(err as Error).message}`)
      }
    }
    if (removed > 0) this.opts.log.debug({ removed, retentionMs: this.opts.retentionMs }, `Removed ${removed} task director${removed === 1 ? 'y' : 'ies'} past the task retention`)
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }
}
