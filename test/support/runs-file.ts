import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { tempDir } from './cluster.js'

// Real runs of a task, counted from the outside: each command appends its pid (`echo $$ >> file`)
// before it `exec`s its sleep, so a test sees how often it really started, and every run it
// caused is killed when the test ends (a worker killed with SIGKILL orphans its tasks).

/** The pids the task's runs wrote, one line per run. */
export function runs(file: string): number[] {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number)
}

/** Still a run of ours: alive and the `sleep` it execs (a pid reused by someone else is left alone). */
export function ours(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('sleep\0')
  } catch {
    return false
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A runs file in a temp dir of the test's; every run it lists is killed when the test ends. */
export function runsFile(t: TestContext): string {
  const file = join(tempDir(t, 'cloudai-runs-'), 'runs')
  t.after(() => {
    for (const pid of runs(file)) if (ours(pid)) process.kill(pid, 'SIGKILL')
  })
  return file
}
