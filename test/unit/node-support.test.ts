import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { isCloudaiError } from '../../src/shared/errors.js'
import { checkNodeSupport, SUPPORTED_NODE } from '../../src/master/api/uws.js'
import { ROOT } from '../support/cluster.js'

const refusal = (node: string) => (err: unknown) => {
  assert.ok(isCloudaiError(err))
  assert.equal(err.code, 'CLOUDAI_UNSUPPORTED_NODE')
  assert.ok(!err.message.includes('\n'), 'one line')
  assert.ok(err.message.endsWith(`this is Node.js ${node}`), err.message)
  return true
}

test('Node.js 20.19 and later 20.x run the master on the uWebSockets.js build for ABI 115 (@based/uws, as Node 22)', () => {
  for (const node of ['20.19.0', '20.20.2']) {
    const build = checkNodeSupport({ node, modules: '115' })
    assert.equal(build.pkg, 'uws-node22')
    assert.equal(build.abi, '115')
  }
})

test('Node.js 22.12 and later 22.x run the master on the uWebSockets.js build for ABI 127', () => {
  for (const node of ['22.12.0', '22.23.5']) assert.equal(checkNodeSupport({ node, modules: '127' }).pkg, 'uws-node22')
})

test('Node.js 24, 26, 18, 23 and 20 or 22 below their floors are refused with CLOUDAI_UNSUPPORTED_NODE', () => {
  const refused: [string, string][] = [
    ['24.22.3', '137'],
    ['24.0.0', '137'],
    ['26.12.1', '147'],
    ['25.2.1', '141'],
    ['23.11.1', '131'],
    ['18.20.8', '108'],
    ['20.18.3', '115'],
    ['22.11.0', '127'],
  ]
  for (const [node, modules] of refused) assert.throws(() => checkNodeSupport({ node, modules }), refusal(node), node)
})

test('a version whose ABI is not its major\'s (a custom build) is refused', () => {
  assert.throws(() => checkNodeSupport({ node: '20.19.0', modules: '127' }), refusal('20.19.0'))
  assert.throws(() => checkNodeSupport({ node: '22.12.0', modules: '115' }), refusal('22.12.0'))
})

test('the refusal names the versions that work and why, in one line', () => {
  assert.throws(
    () => checkNodeSupport({ node: '24.22.3', modules: '137' }),
    { message: 'the master needs Node.js 20 (20.19 or later) or 22 (22.12 or later), the versions cloudai has a native uWebSockets.js build for; this is Node.js 24.22.3' },
  )
})

test('package.json engines.node says the same versions as the check', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }
  assert.equal(pkg.engines.node, SUPPORTED_NODE)
})
