import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from '../shared/log.js'
import { parseResultStatus, resultStatusWord } from '../shared/result-status.js'
import type { TaskResultMsg } from '../shared/wire.js'

// Task results the master has not acknowledged yet, one JSON file per task attempt under
// <dataDir>/outbox/. A result is on disk (file and directory entry fsynced) before the worker
// first tries to report it, so a worker restart loses nothing; it is removed once the master
// answers for it. The files are also held in memory: heartbeats read the outbox every few seconds.

const TASK_ID = /^[A-Za-z0-9._-]{1,128}$/

export class Outbox {
  private readonly dir: string
  private readonly items = new Map<string, TaskResultMsg>()

  constructor(dataDir: string, private readonly log: Logger) {
    this.dir = join(dataDir, 'outbox')
  }

  /** Creates the directory and loads what a previous run left. Returns how many results it holds. */
  open(): number {
    mkdirSync(this.dir, { recursive: true })
    for (const name of readdirSync(this.dir)) {
      const path = join(this.dir, name)
      if (name.endsWith('.tmp')) {
        // A write that never reached its rename: the result was not acknowledged as stored either.
        rmSync(path, { force: true })
        continue
      }
      if (!name.endsWith('.json')) continue
      let item: TaskResultMsg | null = null
      try {
        item = parse(readFileSync(path, 'utf8'))
      } catch {
        item = null
      }
      if (!item) {
        // Kept aside for a person to look at, out of the way of the rest.
        this.log.error({ file: path }, `Outbox file ${name} is unreadable; moved aside as ${name}.bad`)
        try {
          renameSync(path, `${path}.bad`)
        } catch {
          // Leave it; it is skipped again next time.
        }
        continue
      }
      this.items.set(key(item.task_id, item.attempt), item)
    }
    return this.items.size
  }

  /** Stores a result durably. Throws if the disk refuses it; the result is then held in memory only. */
  put(result: TaskResultMsg): void {
    const k = key(result.task_id, result.attempt)
    this.items.set(k, result)
    const file = join(this.dir, `${k}.json`)
    const tmp = `${file}.tmp`
    const fd = openSync(tmp, 'w')
    try {
      writeSync(fd, JSON.stringify(result))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, file)
    syncDir(this.dir)
  }

  remove(taskId: string, attempt: number): void {
    const k = key(taskId, attempt)
    this.items.delete(k)
    rmSync(join(this.dir, `${k}.json`), { force: true })
  }

  has(taskId: string, attempt: number): boolean {
    return this.items.has(key(taskId, attempt))
  }

  /** Results waiting for delivery, oldest first. */
  list(): TaskResultMsg[] {
    return [...this.items.values()].sort((a, b) => a.finished_at - b.finished_at)
  }

  get size(): number {
    return this.items.size
  }
}

/** Task ids are [A-Za-z0-9._-], so `<id>@<attempt>` is a safe file name and cannot collide. */
function key(taskId: string, attempt: number): string {
  return `${taskId}@${attempt}`
}

function parse(text: string): TaskResultMsg | null {
  const v = JSON.parse(text) as Partial<TaskResultMsg>
  if (typeof v !== 'object' || v === null) return null
  if (typeof v.task_id !== 'string' || !TASK_ID.test(v.task_id)) return null
  let status: string
  try {
    // Files written before the worker sent CloudAI's words say "completed": sent as "success" now.
    status = resultStatusWord(parseResultStatus(v.status))
  } catch {
    return null
  }
  if (typeof v.attempt !== 'number' || !Number.isInteger(v.attempt) || v.attempt < 0) return null
  return {
    task_id: v.task_id,
    worker_id: String(v.worker_id ?? ''),
    status,
    logs: String(v.logs ?? ''),
    result_location: String(v.result_location ?? ''),
    output_files: Array.isArray(v.output_files) ? v.output_files.map(String) : [],
    exit_code: Number(v.exit_code ?? 0),
    has_exit_code: v.has_exit_code === true,
    duration_ms: Number(v.duration_ms ?? 0),
    started_at: Number(v.started_at ?? 0),
    finished_at: Number(v.finished_at ?? 0),
    attempt: v.attempt,
    reason: String(v.reason ?? ''),
    log_lines: Number(v.log_lines ?? 0),
  }
}

/** Makes a rename in `dir` durable (where the platform allows fsync on a directory). */
function syncDir(dir: string): void {
  let fd: number | undefined
  try {
    fd = openSync(dir, 'r')
    fsyncSync(fd)
  } catch {
    // Some platforms refuse fsync on directories; the file itself is synced.
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
