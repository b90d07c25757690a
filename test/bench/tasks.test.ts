import assert from 'node:assert/strict'
import { test } from 'node:test'
import { runTiny, SMOKE_GROUPS } from '../support/bench-smoke.js'

// The bench's task scenarios at --size tiny (test/support/bench-smoke.ts).

test('bench: time-to-assign, log-latency and failover run at --size tiny, print their tables and write the JSON', async (t) => {
  const { json } = await runTiny(t, SMOKE_GROUPS.tasks)
  // A takeover of each kind, timed, with nothing lost or run twice (correctness, not speed).
  const failover = json.scenarios['failover'].raw as { kind: string; leadMs: number | null; allActiveMs: number | null; accepted: number; lost: number; twice: number }[]
  assert.deepEqual(failover.map((r) => r.kind), ['kill', 'term'])
  for (const r of failover) {
    assert.ok(r.leadMs !== null && r.allActiveMs !== null, JSON.stringify(r))
    assert.ok(r.accepted > 0)
    assert.equal(r.lost, 0)
    assert.equal(r.twice, 0)
  }
  const assign = json.scenarios['time-to-assign'].raw
  assert.equal(assign.runs.length, 1)
  const [run] = assign.runs
  assert.equal(run.master.counts.completed, assign.profile.tasks, 'every task completed on the master')
  assert.ok(run.master.assignedMs > 0 && run.master.completedMs >= run.master.assignedMs)
  assert.equal(run.bare.refused, 0)
  assert.equal(run.bare.failed, 0)
  assert.ok(run.bare.completedMs > 0)
  // Every line reached the CLI once and in order, also across each restart, and the CLI exited with the task's code.
  const logs = json.scenarios['log-latency'].raw
  for (const r of logs.runs) assert.deepEqual([r.received, r.inOrder, r.exitCode], [r.lines, true, 7], JSON.stringify(r))
  assert.deepEqual(logs.restarts.map((r: { restart: string }) => r.restart), ['worker', 'master'])
  for (const r of logs.restarts) assert.deepEqual([r.lost, r.duplicated, r.outOfOrder, r.exitCode], [0, 0, 0, 7], JSON.stringify(r))
})
