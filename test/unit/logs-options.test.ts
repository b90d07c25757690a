import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseLogQuery } from '../../src/master/api/query.js'
import { buildLogsOptions } from '../../src/cli/options.js'
import { CloudaiError } from '../../src/shared/errors.js'

const code = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    if (err instanceof CloudaiError) return err.code
    throw err
  }
  throw new Error('accepted')
}

test('GET /api/tasks/{id}/logs query: follow, tail and since, Last-Event-ID as since, the query first', () => {
  assert.deepEqual(parseLogQuery(''), { follow: false, since: 0, tail: 0 })
  assert.deepEqual(parseLogQuery('follow=1&tail=10'), { follow: true, since: 0, tail: 10 })
  assert.deepEqual(parseLogQuery('follow=false&since=42'), { follow: false, since: 42, tail: 0 })
  assert.deepEqual(parseLogQuery('follow=true', '17'), { follow: true, since: 17, tail: 0 })
  assert.deepEqual(parseLogQuery('since=3', '17'), { follow: false, since: 3, tail: 0 })
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
