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
