import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { DataDirLock } from '../../src/shared/data-dir-lock.js'
import { isCloudaiError } from '../../src/shared/errors.js'
import { tempDir } from '../support/cluster.js'
import { makeReadOnly, makeWritable, readOnlyCandidate, readOnlySupport } from '../support/readonly-dir.js'

const LOCK_MODULE = fileURLToPath(new URL('../../src/shared/data-dir-lock.js', import.meta.url))

/**
 * A process of its own that takes the lock and says so on stdout ("held <pid>" or "locked <pid>"),
 * then holds it until killed.
 */
function locker(dir: string): { child: ReturnType<typeof spawn>; said: Promise<string> } {
  const script = `
    const { DataDirLock } = await import(${JSON.stringify(LOCK_MODULE)})
    try { DataDirLock.acquire(${JSON.stringify(dir)}, 'worker'); process.stdout.write('held ' + process.pid + '\\n') }
    catch (err) { process.stdout.write(err.code + ' ' + err.details?.pid + '\\n'); process.exit(2) }
    setInterval(() => {}, 1000)`
  const child = spawn(process.execPath, ['--input-type=module', '--eval', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const said = new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (out.includes('\n')) resolve(out.trim())
    })
    child.once('exit', (code) => (out.includes('\n') ? undefined : reject(new Error(`locker exited with ${code} before saying anything`))))
  })
  return { child, said }
}

function refusal(fn: () => unknown): { code: string; pid: unknown; message: string } {
  try {
    fn()
  } catch (err) {
    assert.ok(isCloudaiError(err), `a CloudaiError, got ${String(err)}`)
    return { code: err.code, pid: err.details?.pid, message: err.message }
  }
  assert.fail('expected a refusal')
}

test('a data directory locked in this process refuses a second lock naming this pid, and takes one again once released', (t) => {
  const dir = tempDir(t)
  const first = DataDirLock.acquire(dir, 'master')
  const r = refusal(() => DataDirLock.acquire(dir, 'master'))
  assert.equal(r.code, 'CLOUDAI_DATA_DIR_LOCKED')
  assert.equal(r.pid, process.pid)
  assert.match(r.message, new RegExp(`in use by another cloudai master \\(pid ${process.pid};`))
  // The other role's lock is another file: a master and a worker may share a directory.
  DataDirLock.acquire(dir, 'worker').release()
  first.release()
  first.release()
  DataDirLock.acquire(dir, 'master').release()
  assert.equal(readFileSync(join(dir, 'master.lock'), 'utf8'), `${process.pid}\n`)
})

test('a lock held by a process killed with -9 is free at once', async (t) => {
  const dir = tempDir(t)
  const holder = locker(dir)
  t.after(() => holder.child.kill('SIGKILL'))
  assert.equal(await holder.said, `held ${holder.child.pid}`)
  assert.equal(refusal(() => DataDirLock.acquire(dir, 'worker')).pid, holder.child.pid)
  const exited = new Promise((resolve) => holder.child.once('exit', resolve))
  holder.child.kill('SIGKILL')
  await exited
  DataDirLock.acquire(dir, 'worker').release()
})

test('processes starting at once on one directory: exactly one holds it, every other names its pid', async (t) => {
  const dir = tempDir(t)
  const lockers = Array.from({ length: 4 }, () => locker(dir))
  t.after(() => lockers.forEach((l) => l.child.kill('SIGKILL')))
  const said = await Promise.all(lockers.map((l) => l.said))
  const held = said.filter((s) => s.startsWith('held '))
  assert.equal(held.length, 1, said.join(' | '))
  const winner = held[0]!.slice('held '.length)
  for (const s of said.filter((x) => !x.startsWith('held '))) assert.equal(s, `CLOUDAI_DATA_DIR_LOCKED ${winner}`)
})

test('a data directory that cannot be written is refused with CLOUDAI_DATA_DIR_READONLY', (t) => {
  const s = readOnlySupport()
  if (!s.ok) return t.skip(s.reason)
  const dir = readOnlyCandidate(t)
  DataDirLock.acquire(dir, 'master').release()
  makeReadOnly(dir)
  const r = refusal(() => DataDirLock.acquire(dir, 'master'))
  assert.equal(r.code, 'CLOUDAI_DATA_DIR_READONLY')
  assert.match(r.message, /cannot be written/)
  makeWritable(dir)
  DataDirLock.acquire(dir, 'master').release()
})
