import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { MAX_LINE_BYTES, TaskLog } from '../../src/worker/task-log.js'

const texts = (log: TaskLog): string[] => {
  const out: string[] = []
  for (let s = log.firstSeq; s < log.nextSeq; s++) out.push(log.get(s)!.text)
  return out
}

test('output becomes one numbered record per line, a line split across chunks joined, each stream on its own', () => {
  const log = new TaskLog(1, 1 << 20, () => 42)
  log.push('stdout', Buffer.from('one\ntw'))
  log.push('stderr', Buffer.from('err-1\r\n'))
  log.push('stdout', Buffer.from('o\n'))
  assert.deepEqual([1, 2, 3].map((s) => log.get(s)), [
    { seq: 1, stream: 'stdout', at: 42, text: 'one' },
    { seq: 2, stream: 'stderr', at: 42, text: 'err-1' },
    { seq: 3, stream: 'stdout', at: 42, text: 'two' },
  ])
})

test('a last line without its newline is a record once the attempt ends, and the end is known', () => {
  const log = new TaskLog(1, 1 << 20)
  let changes = 0
  log.on('change', () => changes++)
  log.push('stdout', Buffer.from('no newline'))
  assert.equal(log.nextSeq, 1)
  log.finish({ status: 'failed', exitCode: 3 })
  assert.deepEqual(texts(log), ['no newline'])
  assert.deepEqual(log.end, { status: 'failed', exitCode: 3 })
  assert.equal(changes, 1)
})

test('a line longer than the record limit is cut into records of that size', () => {
  const log = new TaskLog(1, 1 << 22)
  log.push('stdout', Buffer.alloc(MAX_LINE_BYTES * 2 + 5, 'x'))
  log.push('stdout', Buffer.from('\n'))
  assert.deepEqual(texts(log).map((t) => t.length), [MAX_LINE_BYTES, MAX_LINE_BYTES, 5])
})

test('past its byte bound the oldest records go, and firstSeq says from where records are kept', () => {
  const log = new TaskLog(1, 1000)
  for (let i = 1; i <= 100; i++) log.push('stdout', Buffer.from(`line-${i}\n`))
  assert.equal(log.nextSeq, 101)
  assert.ok(log.firstSeq > 1 && log.firstSeq < 100, String(log.firstSeq))
  assert.equal(log.get(log.firstSeq - 1), undefined)
  assert.equal(log.get(100)!.text, 'line-100')
  assert.deepEqual(texts(log), Array.from({ length: 101 - log.firstSeq }, (_, i) => `line-${log.firstSeq + i}`))
})

test('a long line of multi-byte characters is cut between characters, never inside one', () => {
  const log = new TaskLog(1, 4 * 1024 * 1024)
  // 3 bytes a character: MAX_LINE_BYTES is not a multiple of 3.
  const line = '€'.repeat(50_000)
  const bytes = Buffer.from(`${line}\n`)
  // In pieces, as a pipe gives them.
  for (let at = 0; at < bytes.length; at += 10_000) log.push('stdout', bytes.subarray(at, at + 10_000))
  const got = texts(log)
  assert.ok(got.length >= 3, String(got.length))
  assert.ok(got.every((t) => !t.includes('\ufffd') && Buffer.byteLength(t) <= MAX_LINE_BYTES))
  assert.equal(got.join(''), line)
})

test('the byte bound counts bytes, not characters', () => {
  const log = new TaskLog(1, 10_000)
  for (let i = 0; i < 10; i++) log.push('stdout', Buffer.from(`${'€'.repeat(1000)}\n`))
  // Each record is 3000 bytes (1000 characters): three of them fit in 10000 bytes, not nine.
  assert.equal(log.nextSeq - log.firstSeq, 3)
})

test('a saved log loads back ended, with its sequence numbers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cloudai-task-log-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const log = new TaskLog(2, 200)
  for (let i = 1; i <= 20; i++) log.push(i % 2 ? 'stdout' : 'stderr', Buffer.from(`l${i}\n`))
  log.finish({ status: 'completed', exitCode: 0 })
  log.save(dir)
  const back = (await TaskLog.load(dir))!
  assert.equal(back.attempt, 2)
  assert.equal(back.firstSeq, log.firstSeq)
  assert.equal(back.nextSeq, 21)
  assert.deepEqual(back.get(20), log.get(20))
  assert.deepEqual(back.end, { status: 'completed', exitCode: 0 })
  assert.equal(await TaskLog.load(join(dir, 'none')), null)
})

test('the report\'s output tail is the kept records one per line, so its k-th line from the end is record nextSeq - k', () => {
  const log = new TaskLog(1, 1 << 20)
  log.push('stdout', Buffer.from('one\ntw'))
  log.push('stderr', Buffer.from('err-1\r\n'))
  log.push('stdout', Buffer.from(`o\n${'x'.repeat(MAX_LINE_BYTES + 3)}\n`))
  log.finish({ status: 'completed', exitCode: 0 })
  const tail = log.tailText()
  assert.equal(tail, `one\nerr-1\ntwo\n${'x'.repeat(MAX_LINE_BYTES)}\nxxx\n`)
  const lines = tail.replace(/\n$/, '').split('\n')
  lines.forEach((text, i) => assert.equal(text, log.get(log.nextSeq - lines.length + i)!.text))
  // Output that did not end with a newline does not gain one.
  const open = new TaskLog(1, 1 << 20)
  open.push('stdout', Buffer.from('bonjour'))
  open.finish({ status: 'completed', exitCode: 0 })
  assert.equal(open.tailText(), 'bonjour')
  assert.equal(new TaskLog(1, 1 << 20).tailText(), '')
})
