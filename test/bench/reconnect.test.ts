import assert from 'node:assert/strict'
import { test } from 'node:test'
import { runTiny, SMOKE_GROUPS } from '../support/bench-smoke.js'

// The bench's reconnection scenarios at --size tiny (test/support/bench-smoke.ts).

test('bench: cloudai-table and dial-storm run at --size tiny, print their tables and write the JSON', async (t) => {
  const { stdout, json } = await runTiny(t, SMOKE_GROUPS.reconnect)
  assert.match(stdout, /^\| mode \| workers\/inactive \|/m)
  assert.match(stdout, /\(target max ≤ 1000 ms\)/)
  const table = json.scenarios['cloudai-table'].raw
  // monitor, join, and a worker lost longer ago than the fast window.
  assert.equal(table.rows.length, 3)
  for (const row of table.rows) {
    assert.equal(row.runs.length, 1)
    assert.ok(row.runs[0].backMs > 0)
    assert.ok(row.masterMetrics.cloudai_heartbeats_received_total > 0)
  }
  for (const target of json.scenarios['cloudai-table'].targets) assert.equal(typeof target.met, 'boolean')
  const storm = json.scenarios['dial-storm'].raw
  assert.deepEqual(storm.passes.map((x: { kind: string }) => x.kind), ['pool', 'inline'])
  for (const pass of storm.passes) {
    assert.equal(pass.outcomes.success, storm.profile.back)
    assert.equal(pass.outcomes.refused, storm.profile.refusing)
    assert.equal(pass.outcomes.timeout, storm.profile.tarpits)
  }
})
