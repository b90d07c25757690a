import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { childCwd, childEnv, ROOT } from './cluster.js'

// The bench suite's smoke tests (test/bench/): every scenario at --size tiny through the same entry
// point as `npm run bench`, its results in a temp dir so that the repo stays clean. The scenarios
// are split over three files so that npm test runs them side by side rather than one after the
// other (about two minutes in one file); SMOKE_GROUPS says which file runs which, and one test
// checks that together they run every scenario the bench lists.

const ENTRY = join(ROOT, 'dist', 'bench', 'run.js')

export const SMOKE_GROUPS = {
  reconnect: ['cloudai-table', 'dial-storm'],
  load: ['heartbeat-ingest', 'telemetry-placement', 'memory-per-worker', 'scaling'],
  tasks: ['time-to-assign', 'log-latency', 'failover'],
} as const

export interface BenchRun {
  code: number | null
  killed: string
  stdout: string
  stderr: string
}

// A deadline, not a timing target: a group takes under a minute alone on 2 cores and up to a few
// times that beside the rest of npm test; CI's machines have been slower still, so the deadline
// only catches a bench that hangs.
export function runBench(args: string[], timeoutMs = 480_000): Promise<BenchRun> {
  return new Promise((resolve) => {
    // In a process group of its own: past the deadline the bench is killed with every master,
    // fleet child and task it started (killing the bench alone left its masters running).
    const child = spawn(process.execPath, [ENTRY, ...args], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    let killed = ''
    const timer = setTimeout(() => {
      killed = ` (killed at the ${timeoutMs / 1000} s deadline)`
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {
        child.kill('SIGKILL')
      }
    }, timeoutMs)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, killed, stdout, stderr })
    })
  })
}

/**
 * Runs `names` at --size tiny and checks what every run must have: exit 0, a table per scenario,
 * no crash, one JSON file with the machine, the versions and each scenario's tables, targets and
 * raw figures. Returns the run's stdout and its JSON for the scenario's own checks.
 */
export async function runTiny(t: TestContext, names: readonly string[]): Promise<{ stdout: string; json: any }> {
  const out = mkdtempSync(join(tmpdir(), 'cloudai-bench-smoke-'))
  t.after(() => rmSync(out, { recursive: true, force: true }))
  const r = await runBench(['--size', 'tiny', '--scenario', names.join(','), '--out', out])
  assert.equal(r.code, 0, `bench exited with ${r.code}${r.killed}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`)
  for (const name of names) assert.match(r.stdout, new RegExp(`^### ${name}`, 'm'), `no table for ${name}`)
  assert.doesNotMatch(r.stdout, /CRASHED/)

  const files = readdirSync(out).filter((f) => f.endsWith('-tiny.json'))
  assert.equal(files.length, 1, `one results file in ${out}: ${readdirSync(out).join(', ')}`)
  const json = JSON.parse(readFileSync(join(out, files[0]!), 'utf8'))
  assert.equal(json.profile, 'tiny')
  assert.equal(json.runs, 1)
  assert.equal(typeof json.machine.os, 'string')
  assert.ok(json.machine.cpus > 0)
  assert.ok(json.machine.memoryBytes > 0)
  assert.equal(json.versions.node, process.version)
  assert.equal(json.versions.cloudai, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version)
  assert.ok('commit' in json.versions.git)
  assert.deepEqual(Object.keys(json.scenarios).sort(), [...names].sort())
  for (const name of names) {
    const s = json.scenarios[name]
    assert.equal(s.error, undefined, `${name} crashed: ${s.error}`)
    assert.ok(Array.isArray(s.tables) && s.tables.length > 0)
    assert.ok(Array.isArray(s.targets))
    assert.ok(s.raw && typeof s.raw === 'object')
    assert.ok(s.durationMs > 0)
  }
  return { stdout: r.stdout, json }
}
