import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// A directory made read-only under a running process. chmod does not stop root, so this is a
// read-only bind mount of the directory onto itself (`mount --bind D D`, then
// `mount -o remount,ro,bind D D`), undone with `umount D`. Files a process already holds open
// stay writable through their old mount; what the directory refuses is every new open for
// writing (a master starting on it, SQLite creating its -wal or -shm file).
// (test/support/readonly-dir.ts is being written for the tests; this is the suite's own small
// version until the two are unified.)

const MOUNT_TIMEOUT_MS = 10_000

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: MOUNT_TIMEOUT_MS, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' } }, (err, _out, stderr) => {
      if (err) reject(new Error(`\`${cmd} ${args.join(' ')}\` failed: ${stderr.trim() || err.message}`))
      else resolve()
    })
  })
}

/** Bind mounts this process stacked on each directory and has not unmounted yet. */
const mounted = new Map<string, number>()

let exitHookSet = false

/** A run that dies without its clean-up (an uncaught error, process.exit) still unmounts (lazily). */
function setExitHook(): void {
  if (exitHookSet) return
  exitHookSet = true
  process.once('exit', () => {
    for (const [dir, n] of mounted) {
      for (let i = 0; i < n; i++) {
        try {
          execFileSync('umount', ['-l', dir], { timeout: MOUNT_TIMEOUT_MS, stdio: 'ignore' })
        } catch {
          break
        }
      }
    }
  })
}

export async function makeReadOnly(dir: string): Promise<void> {
  setExitHook()
  await run('mount', ['--bind', dir, dir])
  mounted.set(dir, (mounted.get(dir) ?? 0) + 1)
  try {
    await run('mount', ['-o', 'remount,ro,bind', dir, dir])
  } catch (err) {
    await makeWritable(dir)
    throw err
  }
}

/**
 * Undoes makeReadOnly: the bind mount is made writable again (so files a process opened through
 * it while it was read-only become writable too, as after a chmod back), then unmounted if
 * nothing holds a file open through it; else it stays, writable, until makeAllWritable.
 */
export async function makeWritable(dir: string): Promise<void> {
  if (!mounted.get(dir)) return
  await run('mount', ['-o', 'remount,rw,bind', dir, dir])
  await unmount(dir).catch(() => {}) // busy: a process holds a file open through it
}

async function unmount(dir: string): Promise<void> {
  await run('umount', [dir])
  const n = (mounted.get(dir) ?? 1) - 1
  if (n > 0) mounted.set(dir, n)
  else mounted.delete(dir)
}

/** Every bind mount still there, unmounted (for the final clean-up, once the processes are gone; lazily if still busy). */
export async function makeAllWritable(): Promise<void> {
  for (const dir of [...mounted.keys()]) {
    while (mounted.get(dir)) {
      try {
        await unmount(dir)
      } catch {
        await run('umount', ['-l', dir])
        const n = (mounted.get(dir) ?? 1) - 1
        if (n > 0) mounted.set(dir, n)
        else mounted.delete(dir)
      }
    }
  }
}

/** Null when a directory can be made read-only here, else why not (not root, no mount, a container without CAP_SYS_ADMIN). */
export async function readOnlyUnavailable(): Promise<string | null> {
  if (process.platform !== 'linux') return `read-only bind mounts are Linux only (this is ${process.platform})`
  if (process.getuid?.() !== 0) return `a read-only bind mount needs root (uid is ${process.getuid?.()}); without it chmod would do, but root ignores chmod`
  const dir = mkdtempSync(join(tmpdir(), 'cloudai-ro-probe-'))
  try {
    await makeReadOnly(dir)
    let refused = false
    try {
      writeFileSync(join(dir, 'probe'), 'x')
    } catch {
      refused = true
    }
    await makeWritable(dir)
    return refused ? null : 'the read-only bind mount did not refuse a write'
  } catch (err) {
    return (err as Error).message
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
