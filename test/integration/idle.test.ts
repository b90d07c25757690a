import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'node:test'
import { startMaster, tempDir } from '../support/cluster.js'

// A master with nothing to do should cost nothing: every timer and thread sleeps until there is
// work (or ticks rarely). Measured from outside, as an operator would: how often the kernel ran
// any of the master's threads, from /proc/<pid>/task/*/schedstat (the third field counts the
// times a thread was put on a CPU). Before, prom-client's 10 ms event-loop sampler (100 a
// second), the telemetry thread's 50 ms tick (20) and the WebSocket check (4) alone came to
// ~125 a second; a threshold far from both sides keeps this about sleeping, not about speed.

/** Times any thread of `pid` has been scheduled so far (threads that ended are not counted). */
function runs(pid: number): number {
  let total = 0
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/)[2])
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return total
}

const WINDOW_MS = 3000
const MAX_RUNS_PER_SECOND = 40

test('an empty master sleeps: its threads run fewer than 40 times a second', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  // The default intervals (the test flags make the monitor tick every 300 ms, as a test wants).
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--shutdown-grace', '2s', '--log-level', 'info'] })
  const pid = master.proc.child.pid!
  // The start's own work (store open, threads starting, the first GCs) takes a moment, so windows
  // follow one another until one is quiet, within a generous deadline: an idle master gets there
  // in its first or second window, one that keeps waking never does.
  const deadline = Date.now() + 30_000
  const seen: number[] = []
  for (;;) {
    const before = runs(pid)
    // A window, not a wait for an event: what is measured is that nothing happens in it.
    await sleep(WINDOW_MS)
    const perSecond = ((runs(pid) - before) * 1000) / WINDOW_MS
    seen.push(Math.round(perSecond))
    if (perSecond < MAX_RUNS_PER_SECOND) break
    assert.ok(Date.now() < deadline, `the idle master's threads kept running more than ${MAX_RUNS_PER_SECOND} times a second: ${seen.join(', ')} per window`)
  }
})
