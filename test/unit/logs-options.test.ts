import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseLogQuery } from '../../src/master/api/query.js'
import { buildLogsOptions } from '../../src/cli/options.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { codeOf as code } from '../support/refusal.js'

test('GET /api/tasks/{id}/logs query: follow, tail and after; Last-Event-ID wins over after (an EventSource reconnects to the URL it was opened with); `end` after the end event', () => {
  const none = { follow: false, after: 0, notBefore: null, tail: 0, afterEnd: false }
  assert.deepEqual(parseLogQuery(''), none)
  assert.deepEqual(parseLogQuery('follow=1&tail=10'), { ...none, follow: true, tail: 10 })
  assert.deepEqual(parseLogQuery('follow=false&after=42'), { ...none, after: 42 })
  assert.deepEqual(parseLogQuery('follow=true', '17'), { ...none, follow: true, after: 17 })
  assert.deepEqual(parseLogQuery('after=3', '17'), { ...none, after: 17 })
  assert.deepEqual(parseLogQuery('after=3', ''), { ...none, after: 3 })
  assert.deepEqual(parseLogQuery('follow=1&after=3', 'end'), { ...none, follow: true, after: 3, afterEnd: true })
})

test('GET /api/tasks/{id}/logs query: since is a duration back from now or an RFC 3339 time, and stays beside Last-Event-ID', () => {
  const now = Date.parse('2026-12-01T20:00:00Z')
  const at = (q: string, id = ''): number | null => parseLogQuery(q, id, now).notBefore
  assert.equal(at('since=10m'), now - 600_000)
  assert.equal(at('since=90s'), now - 90_000)
  assert.equal(at('since=1.5h'), now - 5_400_000)
  assert.equal(at('since=2d'), now - 2 * 86_400_000)
  assert.equal(at('since=250ms'), now - 250)
  assert.equal(at('since=2026-12-01T19:30:00Z'), Date.parse('2026-12-01T19:30:00Z'))
  assert.equal(at('since=2026-12-01T20:30:00.5%2B01:00'), Date.parse('2026-12-01T19:30:00.5Z'))
  assert.equal(at('since=2026-12-01t19:30:00z'), Date.parse('2026-12-01T19:30:00Z'))
  assert.deepEqual(parseLogQuery('since=5m&follow=1', '12', now), { follow: true, after: 12, notBefore: now - 300_000, tail: 0, afterEnd: false })
})

test('GET /api/tasks/{id}/logs query: a since that is not a duration or an RFC 3339 time is CLOUDAI_BAD_REQUEST saying what to use', () => {
  for (const v of ['', '10', '10x', 'm', '-5m', '367d', '2026-12-01', '2026-12-01T19:30:00', '2026-02-31T00:00:00Z', '2026-12-01T25:00:00Z', 'yesterday', '1e3s']) {
    const err = refusal(() => parseLogQuery(`since=${encodeURIComponent(v)}`))
    assert.equal(err.code, 'CLOUDAI_BAD_REQUEST', v)
    assert.match(err.message, /since .* (is not a time|is too far back): use a duration back from now \(90s, 10m, 2h, 1d\) or an RFC 3339 time/, v)
  }
  // A bare number was a sequence number before: the answer says where that went.
  assert.match(refusal(() => parseLogQuery('since=42')).message, /use after=42/)
  assert.equal(code(() => parseLogQuery('since=1m&since=2m')), 'CLOUDAI_BAD_REQUEST')
})

test('GET /api/tasks/{id}/logs query: anything else is CLOUDAI_BAD_REQUEST', () => {
  for (const q of ['tail=abc', 'tail=0', 'tail=100001', 'tail=1e3', 'after=-1', 'after=', 'after=1m', 'follow=yes', 'lines=3', 'tail=1&tail=2']) {
    assert.equal(code(() => parseLogQuery(q)), 'CLOUDAI_BAD_REQUEST', q)
  }
  assert.equal(code(() => parseLogQuery('', 'abc')), 'CLOUDAI_BAD_REQUEST')
})

test('cloudai logs flags: -f, --tail, --after, --since, --timestamps and --idle-timeout, checked with the route\'s limits', () => {
  const none = { follow: false, tail: 0, after: 0, since: null, timestamps: false, idleTimeoutMs: 45_000 }
  assert.deepEqual(buildLogsOptions({}), none)
  assert.deepEqual(buildLogsOptions({ follow: true, tail: '5', after: '9', since: '10m', timestamps: true }), { ...none, follow: true, tail: 5, after: 9, since: '10m', timestamps: true })
  assert.deepEqual(buildLogsOptions({ 'idle-timeout': '2m' }), { ...none, idleTimeoutMs: 120_000 })
  assert.deepEqual(buildLogsOptions({ 'idle-timeout': '1s' }), { ...none, idleTimeoutMs: 1_000 })
  // A plain number is seconds, as for every other duration flag.
  assert.deepEqual(buildLogsOptions({ 'idle-timeout': '90' }), { ...none, idleTimeoutMs: 90_000 })
  assert.deepEqual(buildLogsOptions({ since: '2026-12-01T19:00:00Z' }), { ...none, since: '2026-12-01T19:00:00Z' })
  assert.deepEqual(buildLogsOptions({ tail: ['5', '7'] }), { ...none, tail: 7 })
  for (const argv of [{ tail: 'many' }, { tail: '0' }, { tail: '100001' }, { after: '-1' }, { after: '10m' }, { since: '10' }, { since: 'soon' }, { since: '2026-12-01' }, { 'idle-timeout': '0s' }, { 'idle-timeout': '999ms' }, { 'idle-timeout': '2h' }, { 'idle-timeout': 'soon' }]) {
    assert.equal(code(() => buildLogsOptions(argv)), 'CLOUDAI_BAD_CONFIG', JSON.stringify(argv))
  }
  assert.match(refusal(() => buildLogsOptions({ since: 'soon' })).message, /^--since "soon" is not a time: use a duration back from now/)
  assert.match(refusal(() => buildLogsOptions({ since: '42' })).message, /use --after 42/)
  assert.match(refusal(() => buildLogsOptions({ 'idle-timeout': '2h' })).message, /^--idle-timeout "2h" is out of range: use from 1s to 1h/)
})

function refusal(run: () => unknown): CloudaiError {
  try {
    run()
  } catch (err) {
    if (err instanceof CloudaiError) return err
    throw err
  }
  assert.fail('not refused')
}
