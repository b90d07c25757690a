import { execFileSync } from 'node:child_process'

// Where a result came from: the commit of the tree it ran on, and whether that tree had changes
// not committed (a figure from a dirty tree belongs to no commit). Null where git is not there.

export function gitCommit(root: string): { commit: string | null; dirty: boolean | null } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim() !== ''
    return { commit, dirty }
  } catch {
    return { commit: null, dirty: null }
  }
}
