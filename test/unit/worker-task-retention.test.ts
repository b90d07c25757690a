import assert from 'node:assert/strict'
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { TaskDirRetention } from '../../src/worker/task-retention.js'
import { tempDir } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

// A worker's task directories under --task-retention, on a clock the test moves by hand.

const HOUR = 3_600_000

/** `<dataDir>/tasks/<name>/` with a log, last changed `ageMs` before `now`. */
function taskDir(dataDir: string, name: string, now: number, ageMs: number, opts: { running?: boolean } = {}): string {
  const dir = join(dataDir, 'tasks', name)
  mkdirSync(join(dir, 'work'), { recursive: true })
  writeFileSync(join(dir, 'output.log'), 'the whole log\n')
  if (opts.running) writeFileSync(join(dir, 'process.json'), '{}')
  const at = (now - ageMs) / 1000
  utimesSync(join(dir, 'output.log'), at, at)
  utimesSync(dir, at, at)
  return dir
}

test('a finished task\'s directory is removed once the worker\'s retention has passed since it finished, not before; one in use or running stays', (t) => {
  const dataDir = tempDir(t)
  let now = Date.now()
  const inUse = new Set<string>()
  const expired = taskDir(dataDir, 'task-0a1b-1', now, 25 * HOUR)
  const recent = taskDir(dataDir, 'task-0a1b-2', now, 23 * HOUR)
  const running = taskDir(dataDir, 'task-77-1', now, 99 * HOUR, { running: true })
  const undelivered = taskDir(dataDir, 'task-88-3', now, 30 * HOUR)
  inUse.add('task-88:3')
  const retention = new TaskDirRetention({
    dataDir,
    retentionMs: 24 * HOUR,
    log: memoryLogger('silent').log,
    now: () => now,
    inUse: (id, attempt) => inUse.has(`${id}:${attempt}`),
  })
  t.after(() => retention.close())
  retention.start()
  assert.equal(existsSync(expired), false, 'left by an earlier run, past its retention: removed at start')
  assert.equal(existsSync(recent), true)
  assert.equal(existsSync(running), true, 'a directory whose process still runs is never removed')
  assert.equal(existsSync(undelivered), true, 'a result still waiting for the master keeps its directory')

  const fresh = taskDir(dataDir, 'task-99-1', now, 0)
  retention.taskFinished('task-99', 1)
  now += HOUR
  retention.sweep()
  assert.equal(existsSync(recent), false, '24 h after it finished')
  assert.equal(existsSync(fresh), true)
  inUse.clear()
  now += 22 * HOUR
  retention.sweep()
  assert.equal(existsSync(fresh), true, 'one hour short of its retention')
  now += HOUR
  retention.sweep()
  assert.equal(existsSync(fresh), false)
  assert.equal(existsSync(undelivered), false, 'delivered since: removed a retention time after it was found in use')
  assert.equal(existsSync(running), true)
})
