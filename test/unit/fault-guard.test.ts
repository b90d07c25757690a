import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { FaultGuard } from '../../src/cli/fault-guard.js'
import { memoryLogger } from '../support/log.js'

// The guard's decisions without a process to lose: the real master and worker processes, with a
// fault made to escape inside them, are in test/integration/process-faults.test.ts.

function guard(t: TestContext, closeLimitMs = 30_000) {
  const { log, lines } = memoryLogger('debug')
  let endShutdown!: () => void
  const shutdowns: string[] = []
  const exits: number[] = []
  let exited!: (code: number) => void
  const exitedOnce = new Promise<number>((resolve) => (exited = resolve))
  const g = new FaultGuard({
    name: 'master',
    log,
    closeLimitMs,
    shutdown: (reason) => {
      shutdowns.push(reason)
      return new Promise<void>((resolve) => (endShutdown = resolve))
    },
    exit: (code) => {
      exits.push(code)
      exited(code)
    },
  })
  // The guard's own limit timer is unref'd; this keeps the test's loop alive while it waits.
  const alive = setTimeout(() => {}, 20_000)
  t.after(() => clearTimeout(alive))
  return { g, lines, shutdowns, exits, exitedOnce, endShutdown: () => endShutdown() }
}

test('a fault is logged as fatal with its error, runs the ordered shutdown once, and exits with code 1 when it has ended', async (t) => {
  const { g, lines, shutdowns, exits, exitedOnce, endShutdown } = guard(t)
  g.fault('unhandledRejection', new Error('boom'))
  const fatal = lines.find((l) => l.level === 60)
  assert.ok(fatal, 'logged at fatal')
  assert.match(fatal.msg, /^Unhandled promise rejection: boom\. Shutting down the master in order/)
  assert.equal((fatal.err as { message: string }).message, 'boom')
  assert.equal(typeof (fatal.err as { stack?: string }).stack, 'string', 'with its stack')
  assert.deepEqual(shutdowns, ['Unhandled promise rejection'])
  assert.deepEqual(exits, [], 'not before the shutdown has ended')
  endShutdown()
  assert.equal(await exitedOnce, 1)
  assert.deepEqual(exits, [1])
})

test('a second fault during the shutdown after a fault exits at once, without running the shutdown again', async (t) => {
  const { g, lines, shutdowns, exits } = guard(t)
  g.fault('uncaughtException', new Error('first'))
  g.fault('unhandledRejection', 'second')
  assert.deepEqual(shutdowns, ['Uncaught exception'], 'one shutdown')
  assert.deepEqual(exits, [1], 'exited at once')
  assert.equal(lines.filter((l) => l.level === 60).length, 2)
  assert.match(lines.at(-1)!.msg, /during the shutdown after an earlier one \(second\): exiting at once/)
})

test('a shutdown that hangs after a fault does not keep the process: it exits with code 1 after the limit', async (t) => {
  const { g, lines, exitedOnce } = guard(t, 50)
  g.fault('uncaughtException', new Error('stuck'))
  assert.equal(await exitedOnce, 1)
  assert.ok(lines.some((l) => l.level === 60 && /did not finish shutting down within 50 ms/.test(l.msg)))
})
