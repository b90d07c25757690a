import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { TestContext } from 'node:test'

// A directory made really read-only for a while, and writable again: for the read-only store tests
// and the chaos suite.
//
// Root ignores permission bits (chmod 555 does not stop root from writing), but not a read-only
// mount: as root the directory is bind-mounted onto itself and that mount remounted read-only
// (needs CAP_SYS_ADMIN). As anyone else, chmod 555 does it. What Linux does with files already
// open matters to a test: under the bind mount, files a process opened before makeReadOnly stay
// writable (they were opened through the mount below); every open from then on sees the
// directory read-only. Under chmod, open files stay writable too; new files cannot be created.
//
// makeWritable first remounts the bind mount read-write, which takes effect at once even for files
// opened through it, and then unmounts it; if a process still has files open through it, the mount
// is detached lazily (umount -l) and those files keep working, now writable. Every mount still in
// place when this process exits is undone then, so a failed test never leaves one behind; tests
// call makeWritable in their cleanup all the same.

export type ReadOnlyHow = 'bind-mount' | 'chmod'

export type ReadOnlySupport = { ok: true; how: ReadOnlyHow } | { ok: false; reason: string }

/** Bind mounts of ours in place (resolved paths), to undo at exit. */
const mounted = new Set<string>()
/** Directories we chmodded, with their mode before. */
const chmodded = new Map<string, number>()
let support: ReadOnlySupport | null = null
let exitHook = false

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 })
}

function why(err: unknown): string {
  const e = err as { stderr?: Buffer; message?: string }
  const text = e.stderr?.toString().trim()
  return text ? text : (e.message ?? String(err))
}

/**
 * Whether a directory can be made read-only here, and how (checked once, on a scratch dir), or
 * why not: the reason to skip a test with.
 */
export function readOnlySupport(): ReadOnlySupport {
  if (support) return support
  const scratch = mkdtempSync(join(tmpdir(), 'cloudai-ro-probe-'))
  try {
    const how: ReadOnlyHow = process.getuid?.() === 0 ? 'bind-mount' : 'chmod'
    try {
      applyReadOnly(scratch, how)
    } catch (err) {
      support = { ok: false, reason: how === 'bind-mount' ? `running as root, and a read-only bind mount cannot be made here (needs CAP_SYS_ADMIN): ${why(err)}` : `chmod cannot make a directory read-only here: ${why(err)}` }
      return support
    }
    let writable = false
    try {
      writeFileSync(join(scratch, 'probe'), 'x')
      writable = true
    } catch {
      // What we want: the write was refused.
    } finally {
      undo(scratch)
    }
    support = writable ? { ok: false, reason: `a directory made read-only by ${how} could still be written here` } : { ok: true, how }
    return support
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}

/** Makes `dir` read-only for every process from now on. @throws when readOnlySupport() is not ok */
export function makeReadOnly(dir: string): void {
  const s = readOnlySupport()
  if (!s.ok) throw new Error(`cannot make ${dir} read-only here: ${s.reason}`)
  const path = resolve(dir)
  if (mounted.has(path) || chmodded.has(path)) return
  applyReadOnly(path, s.how)
}

/** Undoes makeReadOnly (idempotent; a no-op for a directory it did not touch). */
export function makeWritable(dir: string): void {
  undo(resolve(dir))
}

function applyReadOnly(path: string, how: ReadOnlyHow): void {
  hookExit()
  if (how === 'chmod') {
    chmodded.set(path, statSync(path).mode & 0o7777)
    chmodSync(path, 0o555)
    return
  }
  run('mount', ['--bind', path, path])
  mounted.add(path)
  try {
    run('mount', ['-o', 'remount,ro,bind', path, path])
  } catch (err) {
    undo(path)
    throw err
  }
}

function undo(path: string): void {
  const mode = chmodded.get(path)
  if (mode !== undefined) {
    chmodded.delete(path)
    chmodSync(path, mode)
  }
  if (!mounted.has(path)) return
  mounted.delete(path)
  try {
    run('mount', ['-o', 'remount,rw,bind', path, path])
  } catch {
    // Unmounted below all the same.
  }
  try {
    run('umount', [path])
  } catch {
    // Busy: a process has files open through it. Detached now; they keep them, writable.
    run('umount', ['-l', path])
  }
}

function hookExit(): void {
  if (exitHook) return
  exitHook = true
  process.once('exit', () => {
    for (const path of [...mounted, ...chmodded.keys()]) {
      try {
        undo(path)
      } catch {
        // Nothing more can be done at exit.
      }
    }
  })
}

/** A temp dir of the test's that is made writable again (if it was made read-only) and removed after it, whatever happened. */
export function readOnlyCandidate(t: TestContext, prefix = 'cloudai-ro-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.after(() => {
    makeWritable(dir)
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}
