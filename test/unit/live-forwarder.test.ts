import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { test } from 'node:test'
import type { LiveEvents, LiveFeed, LiveMessage } from '../../src/master/live.js'
import { LiveForwarder } from '../../src/master/standby-cycle.js'

// The WebSocket of a master process outlives the masters it runs (leader, deposed, standby): the
// forwarder relays whichever feed is current, and listens to it only while it is listened to
// itself, since a feed with no listener builds no message.

/** A feed as the forwarder uses one: listeners counted, messages emitted by the test. */
function feed(): LiveFeed {
  const f = new EventEmitter<LiveEvents>() as EventEmitter<LiveEvents> & { want: () => void; snapshot: () => never }
  f.want = () => {}
  f.snapshot = () => {
    throw new Error('not used')
  }
  return f as unknown as LiveFeed
}

const msg = (id: string): LiveMessage => ({ type: 'worker_removed', worker_id: id, timestamp: '2026-12-02T00:00:00Z' })

test('the forwarder listens to the current feed only while it is listened to, across switches, and relays once', () => {
  const a = feed()
  const b = feed()
  const fwd = new LiveForwarder()
  fwd.follow(a)
  assert.equal(a.listenerCount('message'), 0, 'nobody listens to the forwarder')

  const got: string[] = []
  const listener = (_topic: string, m: LiveMessage): void => {
    got.push((m as { worker_id: string }).worker_id)
  }
  fwd.on('message', listener)
  fwd.on('message', listener)
  assert.equal(a.listenerCount('message'), 1, 'one relay, however often the same listener is added')
  a.emit('message', 'workers', msg('a1'))
  assert.deepEqual(got, ['a1'])

  fwd.follow(b)
  assert.equal(a.listenerCount('message'), 0, 'the old feed is let go')
  assert.equal(b.listenerCount('message'), 1)
  a.emit('message', 'workers', msg('a2'))
  b.emit('message', 'workers', msg('b1'))
  assert.deepEqual(got, ['a1', 'b1'])

  fwd.off('message', listener)
  assert.equal(b.listenerCount('message'), 0, 'the last listener gone: the feed is let go')
  fwd.follow(a)
  assert.equal(a.listenerCount('message'), 0, 'a switch while nobody listens attaches nothing')
  fwd.on('message', listener)
  assert.equal(a.listenerCount('message'), 1)
  fwd.off('message', listener)
})
