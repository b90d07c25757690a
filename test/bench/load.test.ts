import assert from 'node:assert/strict'
import { tmpdir } from 'node:os'
import { test } from 'node:test'
import { runBench, runTiny, SMOKE_GROUPS } from '../support/bench-smoke.js'

// The bench's load scenarios at --size tiny (test/support/bench-smoke.ts), the bench's refusal of
// bad arguments, and that the smoke files together run every scenario.

test('bench: heartbeat-ingest, telemetry-placement, memory-per-worker and scaling run at --size tiny, print their tables and write the JSON', async (t) => {
  const { json } = await runTiny(t, SMOKE_GROUPS.load)
  const ingest = json.scenarios['heartbeat-ingest']
  assert.deepEqual(ingest.raw.runs.map((r: { transport: string }) => r.transport), ['unary', 'stream'])
  for (const r of ingest.raw.runs) assert.ok(r.master.length > 0 && r.bare.length > 0)
  assert.deepEqual(ingest.targets.map((t: { name: string }) => t.name), ['unary master/bare', 'stream master/bare'])
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

test('bench: the smoke files together run every scenario the bench lists', async () => {
  const help = await runBench(['--help'], 20_000)
  assert.equal(help.code, 0, help.stderr)
  const listed = [...help.stdout.matchAll(/^ {2}([a-z][a-z-]+) {2,}/gm)].map((m) => m[1])
  assert.ok(listed.length > 0, `no scenarios in --help:\n${help.stdout}`)
  assert.deepEqual(Object.values(SMOKE_GROUPS).flat().sort(), listed.sort())
})

test('bench: an unknown scenario or size is refused with exit code 2', async () => {
  const scenario = await runBench(['--scenario', 'no-such-scenario', '--out', tmpdir()], 20_000)
  assert.equal(scenario.code, 2)
  assert.match(scenario.stderr, /unknown scenario "no-such-scenario"/)
  const size = await runBench(['--size', 'enormous', '--out', tmpdir()], 20_000)
  assert.equal(size.code, 2)
  assert.match(size.stderr, /unknown size "enormous"/)
})
