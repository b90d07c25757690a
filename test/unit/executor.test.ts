import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { Executor, shellArgv, type TaskOutcome } from '../../src/worker/executor.js'
import { memoryLogger } from '../support/log.js'
import { tempDir, waitUntil } from '../support/cluster.js'

function executor(t: TestContext, opts: { maxLogBytes?: number; killGraceMs?: number } = {}): { ex: Executor; dataDir: string } {
  const dataDir = tempDir(t, 'cloudai-exec-')
  const ex = new Executor({ dataDir, log: memoryLogger('silent').log, killGraceMs: opts.killGraceMs ?? 500, ...(opts.maxLogBytes !== undefined ? { maxLogBytes: opts.maxLogBytes } : {}) })
  t.after(() => ex.close())
  return { ex, dataDir }
}

/** The outcome of `taskId`, listened for before the task starts. */
function outcomeOf(ex: Executor, taskId: string): Promise<TaskOutcome> {
  return new Promise((resolve) => {
    const on = (o: TaskOutcome): void => {
      if (o.taskId !== taskId) return
      ex.off('finished', on)
      resolve(o)
    }
    ex.on('finished', on)
  })
}

/**
 * Whether a process is gone. A zombie counts as gone: it has exited and only waits for its parent
 * to collect its status. Orphans are re-parented to PID 1, and where PID 1 does not reap (some
 * container and VM inits, this machine's among them) a killed grandchild stays a zombie for ever.
 */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return true
  }
}

async function readPid(file: string): Promise<number> {
  return waitUntil(() => {
    if (!existsSync(file)) return undefined
    const n = Number(readFileSync(file, 'utf8').trim())
    return n > 0 ? n : undefined
  }, `a pid in ${file}`, 10_000)
}

test('exit code and output (stdout and stderr) are captured, in the report and in output.log', async (t) => {
  const { ex } = executor(t)
  const done = outcomeOf(ex, 't-exit')
  const started = await ex.start({ taskId: 't-exit', attempt: 1, argv: shellArgv('echo to-stdout; echo to-stderr >&2; exit 3'), env: {}, timeoutMs: 0 })
  assert.ok(started.pid > 0)
  assert.equal(ex.has('t-exit'), true)
  const o = await done
  assert.equal(o.status, 'failed')
  assert.equal(o.exitCode, 3)
  assert.equal(o.signal, null)
  assert.equal(o.reason, 'exit code 3')
  assert.match(o.logsTail, /to-stdout/)
  assert.match(o.logsTail, /to-stderr/)
  assert.ok(o.finishedAt >= o.startedAt && o.durationMs >= 0)
  assert.equal(readFileSync(o.logFile, 'utf8'), o.logsTail)
  assert.equal(ex.has('t-exit'), false, 'no longer listed once finished')

  const ok = outcomeOf(ex, 't-zero')
  await ex.start({ taskId: 't-zero', attempt: 1, argv: shellArgv('true'), env: {}, timeoutMs: 0 })
  const z = await ok
  assert.equal(z.status, 'completed')
  assert.equal(z.exitCode, 0)
})

test('the task gets its env (PATH, HOME, CLOUDAI_TASK_ID and its own, nothing else) and a fresh working directory', async (t) => {
  const { ex, dataDir } = executor(t)
  const workDir = join(dataDir, 'tasks', 't-env-2', 'work')
  // What an earlier run of the same attempt left behind must not be seen.
  mkdirSync(workDir, { recursive: true })
  writeFileSync(join(workDir, 'stale'), 'old')
  process.env.CLOUDAI_TEST_SECRET = 'must-not-leak'
  t.after(() => delete process.env.CLOUDAI_TEST_SECRET)
  const done = outcomeOf(ex, 't-env')
  const started = await ex.start({ taskId: 't-env', attempt: 2, argv: shellArgv('pwd; ls -A; echo "--"; env'), env: { FOO: 'bar baz', EMPTY: '' }, timeoutMs: 0 })
  assert.equal(started.workDir, workDir)
  const o = await done
  assert.equal(o.status, 'completed')
  const [head, envText] = o.logsTail.split('--\n') as [string, string]
  assert.equal(head.trim(), workDir, 'cwd is the fresh work dir and it is empty')
  const env = new Map(envText.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  assert.equal(env.get('FOO'), 'bar baz')
  assert.equal(env.get('EMPTY'), '')
  assert.equal(env.get('CLOUDAI_TASK_ID'), 't-env')
  assert.equal(env.get('PATH'), process.env.PATH)
  assert.ok(env.has('HOME'))
  assert.equal(env.has('CLOUDAI_TEST_SECRET'), false, "the worker's own environment does not leak")
  const unexpected = [...env.keys()].filter((k) => !['FOO', 'EMPTY', 'CLOUDAI_TASK_ID', 'PATH', 'HOME', 'PWD', 'SHLVL', '_', 'OLDPWD'].includes(k))
  assert.deepEqual(unexpected, [])
})

test('a task over its timeout is stopped and fails with the reason', async (t) => {
  const { ex } = executor(t)
  const done = outcomeOf(ex, 't-slow')
  await ex.start({ taskId: 't-slow', attempt: 1, argv: shellArgv('echo begun; sleep 30'), env: {}, timeoutMs: 300 })
  const o = await done
  assert.equal(o.status, 'failed')
  assert.equal(o.reason, 'timed out after 300ms')
  assert.equal(o.exitCode, null)
  assert.equal(o.signal, 'SIGTERM')
  assert.match(o.logsTail, /begun/)
  assert.ok(o.durationMs >= 250 && o.durationMs < 5000, `took ${o.durationMs}ms`)
})

test('only the last maxLogBytes of output are kept in memory; the log file has it all', async (t) => {
  const { ex } = executor(t, { maxLogBytes: 10 })
  const done = outcomeOf(ex, 't-tail')
  await ex.start({ taskId: 't-tail', attempt: 1, argv: shellArgv("printf 'abcdefghij'; printf 'klmnopqrstuvwxyz'"), env: {}, timeoutMs: 0 })
  const o = await done
  assert.equal(o.logsTail, 'qrstuvwxyz')
  assert.equal(readFileSync(o.logFile, 'utf8'), 'abcdefghijklmnopqrstuvwxyz')
})

test('cancel kills the whole process group: the shell and the job it started in the background', async (t) => {
  const { ex } = executor(t)
  const done = outcomeOf(ex, 't-tree')
  const started = await ex.start({ taskId: 't-tree', attempt: 1, argv: shellArgv('sleep 300 & echo $! > child.pid; sleep 300'), env: {}, timeoutMs: 0 })
  const grandchild = await readPid(join(started.workDir, 'child.pid'))
  assert.equal(gone(started.pid), false)
  assert.equal(gone(grandchild), false)
  assert.equal(ex.cancel('t-tree'), true)
  const o = await done
  assert.equal(o.status, 'cancelled')
  assert.equal(o.reason, 'cancelled')
  await waitUntil(() => gone(started.pid) && gone(grandchild), `pids ${started.pid} and ${grandchild} to be gone`, 5000)
  assert.equal(ex.cancel('t-tree'), false, 'nothing left to cancel')
})

test('a background job the command leaves behind is killed when the command exits', async (t) => {
  const { ex } = executor(t)
  const done = outcomeOf(ex, 't-orphan')
  const started = await ex.start({ taskId: 't-orphan', attempt: 1, argv: shellArgv('sleep 300 & echo $! > child.pid; echo main done'), env: {}, timeoutMs: 0 })
  const o = await done
  assert.equal(o.status, 'completed')
  const grandchild = await readPid(join(started.workDir, 'child.pid'))
  await waitUntil(() => gone(grandchild), `background job ${grandchild} to be gone`, 5000)
})

test('close() cancels every running task, waits for them, and leaves no process behind', async (t) => {
  const { ex } = executor(t)
  const outcomes: TaskOutcome[] = []
  ex.on('finished', (o) => outcomes.push(o))
  const a = await ex.start({ taskId: 't-a', attempt: 1, argv: shellArgv('sleep 300 & echo $! > child.pid; sleep 300'), env: {}, timeoutMs: 0 })
  // Ignores SIGTERM: only the SIGKILL after the grace time ends it.
  const b = await ex.start({ taskId: 't-b', attempt: 1, argv: shellArgv("trap '' TERM; echo ready; while :; do sleep 0.05; done"), env: {}, timeoutMs: 0 })
  const aChild = await readPid(join(a.workDir, 'child.pid'))
  await waitUntil(() => readFileSync(b.logFile, 'utf8').includes('ready'), 't-b to install its trap', 5000)
  await ex.close()
  assert.deepEqual(outcomes.map((o) => `${o.taskId}:${o.status}`).sort(), ['t-a:cancelled', 't-b:cancelled'])
  assert.equal(ex.size, 0)
  await waitUntil(() => gone(a.pid) && gone(aChild) && gone(b.pid), 'every task process to be gone', 5000)
  await assert.rejects(ex.start({ taskId: 't-late', attempt: 1, argv: shellArgv('true'), env: {}, timeoutMs: 0 }), (err: { code?: string }) => err.code === 'CLOUDAI_SHUTTING_DOWN')
})

test('a program that cannot be spawned rejects start() and emits nothing', async (t) => {
  const { ex } = executor(t)
  let emitted = false
  ex.on('finished', () => (emitted = true))
  await assert.rejects(ex.start({ taskId: 't-nope', attempt: 1, argv: ['/nonexistent/program'], env: {}, timeoutMs: 0 }), /cannot start/)
  assert.equal(ex.has('t-nope'), false)
  assert.equal(emitted, false)
})

test('a task left running by a worker that died is killed when the next executor starts on its data dir; a recycled pid is not', async (t) => {
  const { ex: crashed, dataDir } = executor(t)
  const done = outcomeOf(crashed, 't-crash')
  const started = await crashed.start({ taskId: 't-crash', attempt: 1, argv: shellArgv('sleep 300 & echo $! > child.pid; sleep 300'), env: {}, timeoutMs: 0 })
  const grandchild = await readPid(join(started.workDir, 'child.pid'))

  // A marker whose pid now names another process (its start time differs) must not be signalled.
  const stranger = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' })
  t.after(() => { try { process.kill(-stranger.pid!, 'SIGKILL') } catch { /* gone */ } })
  mkdirSync(join(dataDir, 'tasks', 't-old-1', 'work'), { recursive: true })
  writeFileSync(join(dataDir, 'tasks', 't-old-1', 'process.json'), JSON.stringify({ taskId: 't-old', pid: stranger.pid, start: '1' }))

  const next = new Executor({ dataDir, log: memoryLogger('silent').log, killGraceMs: 500 })
  t.after(() => next.close())
  assert.deepEqual(next.reapOrphans(), ['t-crash'])
  const o = await done
  assert.equal(o.reason, 'killed by SIGKILL')
  await waitUntil(() => gone(started.pid) && gone(grandchild), 'the orphaned group to be gone', 5000)
  assert.equal(gone(stranger.pid!), false, 'the stranger is untouched')
  assert.deepEqual(next.reapOrphans(), [], 'markers are consumed')
})
