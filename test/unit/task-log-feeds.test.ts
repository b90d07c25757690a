import assert from 'node:assert/strict'
import { test } from 'node:test'
import { C, Counters } from '../../src/master/counters.js'
import { chunkTime, TaskLogFeeds, type LogEvent, type LogSink } from '../../src/master/task-log-feeds.js'
import type { WorkerClients } from '../../src/master/worker-clients.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { createLogger } from '../../src/shared/log.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { codeOf } from '../support/refusal.js'

// TaskLogFeeds' own rules (readers, shutdown) with tasks that have no worker to stream from: the
// streaming itself is tested with real processes in test/integration/task-logs.test.ts.

const ID = 'task-00000000-0000-0000-0000-000000000001'
const queued = { id: ID, status: 'queued', workerId: null, attempt: 1, logsTail: '', finishedAt: null, exitCode: null } as unknown as TaskRecord
// No worker is ever asked: a queued task without a worker waits.
const clients = { get: () => assert.fail('no worker to ask'), proof: () => assert.fail('no worker to ask') } as unknown as WorkerClients

function sink(): LogSink & { events: LogEvent[]; closed: number } {
  const s = { events: [] as LogEvent[], closed: 0, write: (e: LogEvent) => (s.events.push(e), true), onWritable: () => {}, close: () => void s.closed++ }
  return s
}

function feeds(opts: { maxReaders?: number; counters?: Counters } = {}): TaskLogFeeds {
  return new TaskLogFeeds({ clients, task: () => queued, worker: () => undefined, log: createLogger({ level: 'silent' }), retryMs: 60_000, ...opts })
}

test('closing the task log feeds closes every reader\'s connection (no end event) and refuses new readers with CLOUDAI_SHUTTING_DOWN', () => {
  const f = feeds()
  const a = sink()
  const b = sink()
  f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, a)
  f.read(ID, { follow: true, after: 7, notBefore: null, tail: 0 }, b)
  assert.equal(f.readerCount, 2)
  f.close()
  assert.deepEqual([a.closed, b.closed], [1, 1])
  assert.deepEqual([...a.events, ...b.events].filter((e) => e.type === 'end'), [], 'a reader cut at shutdown resumes later: no end event')
  assert.equal(f.readerCount, 0)
  assert.equal(f.size, 0)
  assert.equal(codeOf(() => f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, sink())), 'CLOUDAI_SHUTTING_DOWN')
})

test('task log readers beyond the limit are refused with CLOUDAI_TOO_MANY_CONNECTIONS and counted; one that leaves makes room', () => {
  const counters = new Counters()
  const f = feeds({ maxReaders: 2, counters })
  const stopA = f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, sink())
  f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, sink())
  assert.equal(codeOf(() => f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, sink())), 'CLOUDAI_TOO_MANY_CONNECTIONS')
  assert.equal(counters.raw(C.LOG_READERS_REFUSED), 1)
  stopA()
  f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, sink())
  assert.equal(f.readerCount, 2)
  f.close()
})

test('a reader that does not follow a queued task gets an end at once saying it is queued', async () => {
  const f = feeds()
  const s = sink()
  f.read(ID, { follow: false, after: 0, notBefore: null, tail: 0 }, s)
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(s.events, [{ type: 'end', seq: 1, complete: false, status: 'queued', exit_code: null }])
  assert.equal(s.closed, 1)
  f.close()
})

test('a reader with notBefore (the route\'s since) gets only lines of that time or later, and a gap only when the line after it is one of those', async () => {
  const { EventEmitter } = await import('node:events')
  const t0 = 1_800_000_000_000
  const running = { ...queued, status: 'running', workerId: 'w1' } as unknown as TaskRecord
  const call = Object.assign(new EventEmitter(), { cancel: () => {} })
  const upstream = { get: () => ({ StreamTaskLogs: () => call }), proof: () => undefined } as unknown as WorkerClients
  const f = new TaskLogFeeds({ clients: upstream, task: () => running, worker: () => ({ id: 'w1', address: '127.0.0.1:1', isActive: true }) as never, log: createLogger({ level: 'silent' }), retryMs: 60_000 })
  const recent = sink()
  const all = sink()
  f.read(ID, { follow: true, after: 0, notBefore: t0 + 50, tail: 0 }, recent)
  f.read(ID, { follow: true, after: 0, notBefore: null, tail: 0 }, all)
  const chunk = (fields: object): object => ({ task_id: ID, content: '', timestamp: 0, time_ms: 0, is_complete: false, status: 'running', seq: 0, stream: '', gap: false, missed: 0, exit_code: 0, has_exit_code: false, attempt: 1, ...fields })
  const line = (seq: number, ms: number): object => chunk({ seq, stream: 'stdout', time_ms: ms, content: `line-${seq}` })
  // Lines 1-3 gone before line 4 (older than the cut), 6-7 gone between line 5 (older) and line 8 (newer).
  for (const c of [chunk({ gap: true, seq: 1, missed: 3 }), line(4, t0), line(5, t0 + 10), chunk({ gap: true, seq: 6, missed: 2 }), line(8, t0 + 100), line(9, t0 + 110)]) call.emit('data', c)
  running.status = 'completed'
  running.exitCode = 0
  call.emit('data', chunk({ is_complete: true, status: 'success', seq: 10, has_exit_code: true }))
  await new Promise((resolve) => setImmediate(resolve))
  const shape = (e: LogEvent): string => (e.type === 'line' ? `line ${e.seq}` : e.type === 'gap' ? `gap ${e.seq}+${e.missed}` : `end ${e.seq}`)
  assert.deepEqual(recent.events.map(shape), ['gap 6+2', 'line 8', 'line 9', 'end 10'])
  assert.deepEqual(all.events.map(shape), ['gap 1+3', 'line 4', 'line 5', 'gap 6+2', 'line 8', 'line 9', 'end 10'])
  f.close()
})

test('a LogChunk timestamp (a string on CloudAI\'s wire) reads as RFC 3339 or Unix seconds or ms in digits; anything else is no time', () => {
  assert.equal(chunkTime('2026-12-01T19:00:00.250Z'), Date.UTC(2026, 11, 1, 19, 0, 0, 250))
  assert.equal(chunkTime('1796157919'), 1796157919000)
  assert.equal(chunkTime('1796157919.5'), 1796157919500)
  assert.equal(chunkTime('1796157919330'), 1796157919330)
  for (const bad of ['', '  ', 'soon', '0', '-5', null, undefined]) assert.equal(chunkTime(bad), null, String(bad))
})
