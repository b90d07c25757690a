import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import { childCwd, childEnv } from '../support/cluster.js'

// The bench suite's smoke test: every scenario at --size tiny through the same entry point as
// `npm run bench`, its results in a temp dir so that the repo stays clean.

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const ENTRY = join(ROOT, 'dist', 'bench', 'run.js')

// A deadline, not a timing target: the tiny profile takes about 90 s alone on 2 cores and up to
// twice that beside the rest of npm test; CI's machines have been slower still (a run killed at
// 180 s while its last scenario ran), so the deadline only catches a bench that hangs.
function runBench(args: string[], timeoutMs = 480_000): Promise<{ code: number | null; killed: string; stdout: string; stderr: string }> {
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

const SCENARIOS = ['cloudai-table', 'dial-storm', 'heartbeat-ingest', 'telemetry-placement', 'memory-per-worker', 'time-to-assign', 'scaling', 'log-latency', 'failover']

test('bench: every scenario runs at --size tiny, prints its table and writes the JSON', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'cloudai-bench-smoke-'))
  t.after(() => rmSync(out, { recursive: true, force: true }))
  const r = await runBench(['--size', 'tiny', '--out', out])
  assert.equal(r.code, 0, `bench exited with ${r.code}${r.killed}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`)
  for (const name of SCENARIOS) {
    assert.match(r.stdout, new RegExp(`^### ${name}`, 'm'), `no table for ${name}`)
  }
  assert.match(r.stdout, /^\| mode \| workers\/inactive \|/m)
  assert.match(r.stdout, /\(target max ≤ 1000 ms\)/)
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
  assert.deepEqual(Object.keys(json.scenarios).sort(), [...SCENARIOS].sort())
  for (const name of SCENARIOS) {
    const s = json.scenarios[name]
    assert.equal(s.error, undefined, `${name} crashed: ${s.error}`)
    assert.ok(Array.isArray(s.tables) && s.tables.length > 0)
    assert.ok(Array.isArray(s.targets))
    assert.ok(s.raw && typeof s.raw === 'object')
    assert.ok(s.durationMs > 0)
  }
  const table = json.scenarios['cloudai-table'].raw
  // monitor, join, and a worker lost longer ago than the fast window.
  assert.equal(table.rows.length, 3)
  for (const row of table.rows) {
    assert.equal(row.runs.length, 1)
    assert.ok(row.runs[0].backMs > 0)
    assert.ok(row.masterMetrics.cloudai_heartbeats_received_total > 0)
  }
  for (const target of json.scenarios['cloudai-table'].targets) assert.equal(typeof target.met, 'boolean')
  // A takeover of each kind, timed, with nothing lost or run twice (correctness, not speed).
  const failover = json.scenarios['failover'].raw as { kind: string; leadMs: number | null; allActiveMs: number | null; accepted: number; lost: number; twice: number }[]
  assert.deepEqual(failover.map((r) => r.kind), ['kill', 'term'])
  for (const r of failover) {
    assert.ok(r.leadMs !== null && r.allActiveMs !== null, JSON.stringify(r))
    assert.ok(r.accepted > 0)
    assert.equal(r.lost, 0)
    assert.equal(r.twice, 0)
  }
  const ingest = json.scenarios['heartbeat-ingest']
  assert.deepEqual(ingest.raw.runs.map((r: { transport: string }) => r.transport), ['unary', 'stream'])
  for (const r of ingest.raw.runs) assert.ok(r.master.length > 0 && r.bare.length > 0)
  assert.deepEqual(ingest.targets.map((t: { name: string }) => t.name), ['unary master/bare', 'stream master/bare'])
  const storm = json.scenarios['dial-storm'].raw
  assert.deepEqual(storm.passes.map((x: { kind: string }) => x.kind), ['pool', 'inline'])
  for (const pass of storm.passes) {
    assert.equal(pass.outcomes.success, storm.profile.back)
    assert.equal(pass.outcomes.refused, storm.profile.refusing)
    assert.equal(pass.outcomes.timeout, storm.profile.tarpits)
  }
  const mem = json.scenarios['memory-per-worker'].raw
  for (const kind of ['inactive', 'active']) {
    assert.equal(mem.runs[kind].length, 1, `one ${kind} run`)
    assert.equal(typeof mem.runs[kind][0].perWorkerKiB, 'number')
    assert.equal(mem.runs[kind][0].masterMetrics.cloudai_workers_registered, mem.profile[kind])
  }
  // Each inactive worker's one registration dial was refused; each active worker got a telemetry lane.
  assert.equal(mem.runs.inactive[0].masterMetrics['cloudai_reconnect_failures_total{outcome="refused"}'], mem.profile.inactive)
  assert.equal(mem.runs.active[0].masterMetrics.cloudai_telemetry_lanes, mem.profile.active)
  const tp = json.scenarios['telemetry-placement'].raw
  assert.equal(tp.runs.length, 1)
  assert.ok(tp.runs[0].auto.heartbeats > 0)
  const assign = json.scenarios['time-to-assign'].raw
  assert.equal(assign.runs.length, 1)
  const [run] = assign.runs
  assert.equal(run.master.counts.completed, assign.profile.tasks, 'every task completed on the master')
  assert.ok(run.master.assignedMs > 0 && run.master.completedMs >= run.master.assignedMs)
  assert.equal(run.bare.refused, 0)
  assert.equal(run.bare.failed, 0)
  assert.ok(run.bare.completedMs > 0)
  const scale = json.scenarios.scaling.raw
  assert.deepEqual(scale.sizes.map((x: { workers: number }) => x.workers), scale.profile.sizes)
  for (const size of scale.sizes) {
    // Every worker active as the registry counts it, both servers counted heartbeats in every window.
    assert.equal(size.registry.active, size.workers)
    assert.equal(size.stream.windows.length, scale.profile.windows)
    for (const w of size.stream.windows) assert.ok(w.master.heartbeats > 0 && w.bare.heartbeats > 0)
    assert.equal(typeof size.masterKiBPerWorker, 'number')
    assert.equal(size.api.samples, scale.profile.apiSamples)
  }
  // At the reference size, unary heartbeats too (idle-cpu's figure).
  const ref = scale.sizes.find((x: { workers: number }) => x.workers === scale.profile.reference)
  assert.equal(ref.unary.windows.length, scale.profile.windows)
  assert.ok(scale.masterMetrics.cloudai_heartbeat_streams_opened_total >= scale.profile.sizes.at(-1))
  assert.ok(json.scenarios.scaling.targets.some((t: { name: string }) => t.name.startsWith('CPU per heartbeat master/bare')))
})

test('bench: an unknown scenario or size is refused with exit code 2', async () => {
  const scenario = await runBench(['--scenario', 'no-such-scenario', '--out', tmpdir()], 20_000)
  assert.equal(scenario.code, 2)
  assert.match(scenario.stderr, /unknown scenario "no-such-scenario"/)
  const size = await runBench(['--size', 'enormous', '--out', tmpdir()], 20_000)
  assert.equal(size.code, 2)
  assert.match(size.stderr, /unknown size "enormous"/)
})
