import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseLogQuery } from '../../src/master/api/query.js'
import { buildLogsOptions } from '../../src/cli/options.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { codeOf as code } from '../support/refusal.js'

test('GET /api/tasks/{id}/logs query: follow, tail and since; Last-Event-ID wins over since (an EventSource reconnects to the URL it was opened with); `end` after the end event', () => {
  const none = { follow: false, since: 0, tail: 0, afterEnd: false }
  assert.deepEqual(parseLogQuery(''), none)
  assert.deepEqual(parseLogQuery('follow=1&tail=10'), { ...none, follow: true, tail: 10 })
  assert.deepEqual(parseLogQuery('follow=false&since=42'), { ...none, since: 42 })
  assert.deepEqual(parseLogQuery('follow=true', '17'), { ...none, follow: true, since: 17 })
  assert.deepEqual(parseLogQuery('since=3', '17'), { ...none, since: 17 })
  assert.deepEqual(parseLogQuery('since=3', ''), { ...none, since: 3 })
  assert.deepEqual(parseLogQuery('follow=1&since=3', 'end'), { ...none, follow: true, since: 3, afterEnd: true })
})

test('GET /api/tasks/{id}/logs query: anything else is CLOUDAI_BAD_REQUEST', () => {
  for (const q of ['tail=abc', 'tail=0', 'tail=100001', 'tail=1e3', 'since=-1', 'since=', 'follow=yes', 'lines=3', 'tail=1&tail=2']) {
    assert.equal(code(() => parseLogQuery(q)), 'CLOUDAI_BAD_REQUEST', q)
  }
  assert.equal(code(() => parseLogQuery('', 'abc')), 'CLOUDAI_BAD_REQUEST')
})

test('cloudai logs flags: -f, --tail, --since and --timestamps, checked with the route\'s limits', () => {
  assert.deepEqual(buildLogsOptions({}), { follow: false, tail: 0, since: 0, timestamps: false })
  assert.deepEqual(buildLogsOptions({ follow: true, tail: '5', since: '9', timestamps: true }), { follow: true, tail: 5, since: 9, timestamps: true })
  assert.deepEqual(buildLogsOptions({ tail: ['5', '7'] }), { follow: false, tail: 7, since: 0, timestamps: false })
  for (const argv of [{ tail: 'many' }, { tail: '0' }, { tail: '100001' }, { since: '-1' }, { since: '10m' }]) {
    assert.equal(code(() => buildLogsOptions(argv)), 'CLOUDAI_BAD_CONFIG', JSON.stringify(argv))
  }
})
