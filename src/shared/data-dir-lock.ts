import { closeSync, constants, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import { CloudaiError } from './errors.js'

// One data directory, one process of each role: a master's (its SQLite store, its key) or a
// worker's (its task directories, its outbox). A second worker on the same directory would take
// the first one's running tasks for orphans of an earlier run and kill them; a second master on the
// same store would dial every worker and take it over.
//
// The lock is an OS lock, so that the kernel lets go of it when the process dies, kill -9 included:
// a crash never leaves a stale lock behind and nothing has to guess whether a pid file is stale.
// Node has no flock(2) or fcntl(2) of its own; fs-native-extensions (Holepunch, maintained, N-API
// with a linux-x64 prebuild inside the npm package, so `npm ci` builds nothing and downloads nothing
// else) takes an open-file-description lock on Linux (fcntl F_OFD_SETLK) and flock(2) elsewhere.
// Either belongs to the open file, not to the process: closing another descriptor of the same file
// (reading the pid below) does not drop it, unlike a classic fcntl lock, and two opens in one
// process conflict, so a second master in the same process is refused too. Node opens files with
// O_CLOEXEC, so a task's process never inherits the descriptor and cannot keep the lock alive after
// the worker died.
//
// The lock file stays in place when the lock is released: removing it would let a process that
// opened the old file and one that creates a new one both hold "the" lock.

const nativeRequire = createRequire(import.meta.url)
/** Loaded on first use: operator commands that never lock a directory do not load the addon. */
let tryLockFn: ((fd: number) => boolean) | null = null
/** An exclusive open-file-description lock on `fd` (an fd opened for writing), held until it is closed or the process ends; false when another holds it. */
export function tryLock(fd: number): boolean {
  tryLockFn ??= (nativeRequire('fs-native-extensions') as { tryLock(fd: number): boolean }).tryLock
  return tryLockFn(fd)
}

/**
 * `standby`: a master started with --standby, which shares a master's directory (its SQLite store,
 * its key) on purpose, under a lock of its own (issue 19): one leader and one standby per
 * directory; which of them leads is the store's lease's to say, not this lock's.
 */
export type DataDirRole = 'master' | 'standby' | 'worker'

/**
 * How long a process that lost the lock keeps reading the holder's pid: the holder writes it just
 * after it locked, and until then the file may still name a holder that died (or nothing).
 */
const PID_WAIT_MS = 1000
const PID_POLL_MS = 20

/** Errors of a directory (or a file in it) that cannot be written now. */
export const READ_ONLY_CODES: ReadonlySet<string> = new Set(['EROFS', 'EACCES', 'EPERM'])

export class DataDirLock {
  private fd: number | null

  private constructor(readonly dir: string, readonly path: string, fd: number) {
    this.fd = fd
  }

  /**
   * Locks `dir` (created if missing) for this process, as `role`, and checks that it can be
   * written, before anything else uses it.
   * @throws CLOUDAI_DATA_DIR_LOCKED when another process holds it (details.pid: its pid, null when
   *   it could not be read); CLOUDAI_DATA_DIR_READONLY when the directory cannot be written;
   *   CLOUDAI_BAD_CONFIG when it cannot be used at all (not a directory, ...).
   */
  static acquire(dataDir: string, role: DataDirRole): DataDirLock {
    const dir = resolve(dataDir)
    const path = join(dir, `${role}.lock`)
    let fd: number
    try {
      mkdirSync(dir, { recursive: true })
      fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644)
    } catch (err) {
      throw dirError(err, dir, role)
    }
    try {
      if (!waitForLockOrHolder(fd, path)) {
        const pid = holderPid(path)
        throw new CloudaiError(
          'CLOUDAI_DATA_DIR_LOCKED',
          `the data directory ${dir} is in use by another cloudai ${role} (${pid === null ? 'pid unknown' : `pid ${pid}`}; lock ${path}): stop it, or give this ${role} a --data-dir of its own${role === 'master' ? ', or start this one with --standby to share it as the standby' : ''}`,
          { dataDir: dir, lockFile: path, pid },
        )
      }
      // The pid is what a refused process names; the lock itself is the kernel's.
      ftruncateSync(fd, 0)
      writeSync(fd, `${process.pid}\n`, 0)
      assertWritableDir(dir, role)
    } catch (err) {
      closeSync(fd)
      throw err
    }
    return new DataDirLock(dir, path, fd)
  }

  /** Idempotent. Closing the descriptor releases the lock. */
  release(): void {
    const fd = this.fd
    this.fd = null
    if (fd !== null) closeSync(fd)
  }
}

/**
 * Creates and removes a file in `dir`: the only check that holds for root (who ignores permission
 * bits but not a read-only mount) and for everyone else alike.
 * @throws CLOUDAI_DATA_DIR_READONLY when `dir` cannot be written now
 */
export function assertWritableDir(dataDir: string, role: DataDirRole): void {
  const dir = resolve(dataDir)
  const probe = join(dir, `.write-probe-${process.pid}`)
  try {
    closeSync(openSync(probe, 'w'))
    rmSync(probe, { force: true })
  } catch (err) {
    throw dirError(err, dir, role)
  }
}

/** The error for a data directory that refused an open or a write. */
export function dirError(err: unknown, dir: string, role: DataDirRole): CloudaiError {
  const e = err as NodeJS.ErrnoException
  if (READ_ONLY_CODES.has(e.code ?? '')) {
    return new CloudaiError(
      'CLOUDAI_DATA_DIR_READONLY',
      `the data directory ${dir} cannot be written (${e.code}: ${e.message}): a ${role} needs to write there; make it writable (a read-only mount, its permissions) and start again`,
      { dataDir: dir, errno: e.code },
    )
  }
  return new CloudaiError('CLOUDAI_BAD_CONFIG', `cannot use the data directory ${dir}: ${e.message}`, { dataDir: dir })
}

/**
 * True once this process holds the lock; false when another holds it and has written its pid (or
 * did not within PID_WAIT_MS). A holder that dies meanwhile hands the lock over here.
 */
function waitForLockOrHolder(fd: number, path: string): boolean {
  const deadline = Date.now() + PID_WAIT_MS
  for (;;) {
    if (tryLock(fd)) return true
    if (holderPid(path) !== null || Date.now() >= deadline) return false
    sleepSync(PID_POLL_MS)
  }
}

/** The pid the lock file names when it is a live process (this one included), else null. */
function holderPid(path: string): number | null {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return null
  }
  const m = /^(\d{1,10})\n/.exec(text)
  if (!m) return null
  const pid = Number(m[1])
  return pid > 0 && alive(pid) ? pid : null
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Only on the refused path at start, for a few polls: nothing else runs yet. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}
