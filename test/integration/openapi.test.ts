import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { OPERATIONS } from '../../src/master/api/schema/routes.js'
import { ROOT, startMaster, tempDir } from '../support/cluster.js'

// GET /openapi.json on a real master: the committed snapshot, served without the API token like
// /healthz and the dashboard's files (it says what the API is, not what the master holds), while
// every other operation the document marks as needing the token answers 401 without it.

const TOKEN = 'test-token-0123456789abcdef'

test('GET /openapi.json is the committed snapshot and needs no API token; the operations the document secures answer 401 without it', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), env: { CLOUDAI_API_TOKEN: TOKEN } })
  const res = await fetch(`${master.api}/openapi.json`, { signal: AbortSignal.timeout(10_000) })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
  const served = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { security?: unknown[] }>> }
  assert.deepEqual(served, JSON.parse(readFileSync(join(ROOT, 'test', 'snapshots', 'openapi.json'), 'utf8')))
  assert.equal(served.openapi, '3.1.0')

  for (const op of OPERATIONS) {
    if (op.path === '/ws') continue
    const path = op.path.replace('{id}', 'w1')
    const init: RequestInit = { method: op.method.toUpperCase(), signal: AbortSignal.timeout(10_000), ...(op.body ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) }
    const answer = await fetch(master.api + path, init)
    await answer.body?.cancel()
    const open = served.paths[op.path]![op.method]!.security?.length === 0
    assert.equal(open, op.open === true, `${op.method} ${op.path}: the document says whether it needs the token`)
    if (open) assert.notEqual(answer.status, 401, `${op.method} ${op.path} is open`)
    else assert.equal(answer.status, 401, `${op.method} ${op.path} needs the token`)
  }
})
