import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { HttpApi } from '../../src/master/api/http.js'
import type { LiveSource } from '../../src/master/api/ws.js'
import type { LiveSnapshot } from '../../src/master/live.js'
import { startTestMaster, type TestMaster } from '../support/test-master.js'
import { waitUntil } from '../support/cluster.js'
import { Watcher } from '../support/watcher.js'

// The WebSocket tells telemetry which workers somebody watches, so that nothing is summarized for
// nobody: the first watcher of a topic turns it on, the last one to go turns it off. The source of
// events records what it is asked; the routes behind the API are the real master's control service.

let m: TestMaster
before(async () => {
  m = await startTestMaster()
})
after(() => m.close())

test('the WebSocket wants the telemetry its watchers subscribe to, and lets go when they leave', async (t) => {
  const wants: string[] = []
  const source: LiveSource = {
    snapshot: (): LiveSnapshot => ({ type: 'snapshot', workers: [], tasks: [], status: {} as LiveSnapshot['status'], timestamp: new Date().toISOString() }),
    on: () => source,
    off: () => source,
    want: (id: string, on: boolean) => wants.push(`${on ? '+' : '-'}${id}`),
  }
  const api = new HttpApi({ control: m.control, host: '127.0.0.1', port: 0, log: m.log, live: source })
  const port = await api.start()
  t.after(() => api.close())
  const url = `ws://127.0.0.1:${port}/ws`

  const a = await Watcher.open(t, url)
  await a.next((m) => m.type === 'snapshot', 'a snapshot')
  assert.deepEqual(wants, ['+*'], 'the default topics include metrics: everyone')
  const b = await Watcher.open(t, url)
  await b.next((m) => m.type === 'snapshot', 'b snapshot')
  assert.deepEqual(wants, ['+*'], 'a second watcher of everyone changes nothing')

  // b narrows to w1: still one watcher of everyone (a), now one of w1.
  b.send({ type: 'subscribe', topics: ['metrics/w1'] })
  await b.next((m) => m.type === 'subscribed', 'b subscribed')
  assert.deepEqual(wants, ['+*', '+w1'])
  a.send({ type: 'unsubscribe', topics: ['metrics'] })
  await a.next((m) => m.type === 'subscribed', 'a unsubscribed')
  assert.deepEqual(wants, ['+*', '+w1', '-*'], 'nobody watches everyone any more')

  b.ws.close()
  await waitUntil(() => wants.length === 4, 'b to be let go')
  assert.deepEqual(wants, ['+*', '+w1', '-*', '-w1'])
})

// A feed with no listener builds no message (live.ts), so the WebSocket listens only while it has
// a client: from before the first client's snapshot (an event after it is delivered), until the
// last client goes.
test('the WebSocket listens to its source only while a client is connected, from before its snapshot', async (t) => {
  const calls: string[] = []
  const source: LiveSource = {
    snapshot: (): LiveSnapshot => {
      calls.push('snapshot')
      return { type: 'snapshot', workers: [], tasks: [], status: {} as LiveSnapshot['status'], timestamp: new Date().toISOString() }
    },
    on: () => (calls.push('on'), source),
    off: () => (calls.push('off'), source),
  }
  const api = new HttpApi({ control: m.control, host: '127.0.0.1', port: 0, log: m.log, live: source })
  const port = await api.start()
  let closed = false
  t.after(() => (closed ? undefined : api.close()))
  const url = `ws://127.0.0.1:${port}/ws`
  assert.deepEqual(calls, [], 'no client: not listening')

  const a = await Watcher.open(t, url)
  await a.next((m) => m.type === 'snapshot', 'a snapshot')
  const b = await Watcher.open(t, url)
  await b.next((m) => m.type === 'snapshot', 'b snapshot')
  assert.deepEqual(calls, ['on', 'snapshot', 'snapshot'], 'on once, before the first snapshot')
  a.ws.close()
  await a.closed
  b.ws.close()
  await waitUntil(() => calls.length === 4, 'the last client to be let go')
  assert.deepEqual(calls, ['on', 'snapshot', 'snapshot', 'off'])

  const c = await Watcher.open(t, url)
  await c.next((m) => m.type === 'snapshot', 'c snapshot')
  assert.deepEqual(calls.slice(4), ['on', 'snapshot'], 'a new client after none: on again')
  closed = true
  await api.close()
  assert.deepEqual(calls.slice(6), ['off'], 'closing the API lets go')
})

test("the real master's feed is listened to only while a WebSocket client is connected, and then delivers", async (t) => {
  const live = m.master.live
  assert.equal(live.listenerCount('message'), 0, 'no client')
  const w = await Watcher.open(t, `ws://${m.host}/ws`)
  await w.next((msg) => msg.type === 'snapshot', 'the snapshot')
  assert.equal(live.listenerCount('message'), 1, 'one client')
  const res = await fetch(`${m.base}/api/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: 'true', name: 'heard' }) })
  assert.equal(res.status, 201)
  const { task_id: id } = (await res.json()) as { task_id: string }
  await w.next((msg) => msg.type === 'task_status' && msg.task_id === id && msg.status === 'queued', 'the queued task')
  w.ws.close()
  await waitUntil(() => live.listenerCount('message') === 0, 'the feed to be let go')
})
