import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { buildOpenApiDocument } from '../../src/master/api/schema/document.js'
import { OPERATIONS } from '../../src/master/api/schema/routes.js'
import { BodyValidator } from '../../src/master/api/schema/validate.js'
import { DrainBodySchema, EmptyBodySchema, RegisterWorkerBodySchema } from '../../src/master/api/schema/workers.js'
import { SubmitTaskBodySchema } from '../../src/master/api/schema/tasks.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { ROOT, tempDir } from '../support/cluster.js'

// The API's contract as a file: the committed snapshot is what GET /openapi.json serves, and a
// change to the schemas that does not update it fails here. To update it after a deliberate change:
//   npm run openapi:snapshot
// (CLOUDAI_UPDATE_SNAPSHOT=1 on this test writes it), then review and commit the diff.

const run = promisify(execFile)
const SNAPSHOT = join(ROOT, 'test', 'snapshots', 'openapi.json')
const rendered = (): string => `${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`

test('the OpenAPI document is the committed snapshot (npm run openapi:snapshot updates it)', () => {
  if (process.env.CLOUDAI_UPDATE_SNAPSHOT === '1') writeFileSync(SNAPSHOT, rendered())
  const committed = readFileSync(SNAPSHOT, 'utf8')
  assert.equal(rendered(), committed, 'the document changed: run `npm run openapi:snapshot`, review the diff of test/snapshots/openapi.json and commit it')
})

test('the document lists every operation with a unique id, and every error status it lists has a code', () => {
  const doc = buildOpenApiDocument()
  assert.equal(doc.openapi, '3.1.0')
  const ids = OPERATIONS.map((op) => op.operationId)
  assert.equal(new Set(ids).size, ids.length, 'operation ids are unique')
  for (const op of OPERATIONS) {
    const documented = doc.paths[op.path]?.[op.method] as { responses: Record<string, { description: string }> } | undefined
    assert.ok(documented, `${op.method} ${op.path}`)
    for (const [status, answer] of Object.entries(documented.responses)) {
      if (Number(status) >= 400 && !(String(status) in op.answers)) assert.match(answer.description, /`CLOUDAI_[A-Z_]+`/, `${op.method} ${op.path} ${status} names its codes`)
    }
  }
  // Issue 19: a standby answers /api/status, /healthz and this document, and refuses every other route naming the leader.
  for (const op of OPERATIONS) {
    const refusals = (doc.paths[op.path]![op.method] as { responses: Record<string, { description: string }> }).responses['503']?.description ?? ''
    if (op.operationId === 'getStatus' || op.operationId === 'getHealth' || op.operationId === 'getOpenApi') assert.doesNotMatch(refusals, /CLOUDAI_NOT_LEADER/, `${op.method} ${op.path}`)
    else assert.match(refusals, /CLOUDAI_NOT_LEADER/, `${op.method} ${op.path}`)
  }
})

test('the body schema of every operation compiles (the master compiles each at its first request)', () => {
  const v = new BodyValidator()
  const bodies = OPERATIONS.flatMap((op) => (op.body ? [op.body] : []))
  assert.ok(bodies.length > 0)
  for (const schema of bodies) assert.equal(typeof v.validator(schema), 'function')
})

test('a body is refused from its schema with the code, the field and a message that starts with the field', () => {
  const v = new BodyValidator()
  const refusal = (schema: Parameters<typeof v.check>[0], body: unknown): CloudaiError => {
    try {
      v.check(schema, body, 'a test body')
    } catch (err) {
      assert.ok(err instanceof CloudaiError)
      return err
    }
    assert.fail(`accepted ${JSON.stringify(body)}`)
  }
  const cases: [Parameters<typeof v.check>[0], unknown, string, string][] = [
    [SubmitTaskBodySchema, { command: 'true', req_cpu: -1 }, 'CLOUDAI_BAD_FIELD', 'req_cpu'],
    [SubmitTaskBodySchema, { command: 'true', cpu_required: 'two' }, 'CLOUDAI_BAD_FIELD', 'cpu_required'],
    [SubmitTaskBodySchema, { command: 'true', req_memory: null }, 'CLOUDAI_BAD_FIELD', 'req_memory'],
    [SubmitTaskBodySchema, { command: 'true', max_attempts: 1.5 }, 'CLOUDAI_BAD_FIELD', 'max_attempts'],
    [SubmitTaskBodySchema, { command: 'true', env: { 'BAD-NAME': 'x' } }, 'CLOUDAI_BAD_FIELD', 'env'],
    [SubmitTaskBodySchema, { command: 'true', target_worker_id: 'a b' }, 'CLOUDAI_BAD_WORKER_ID', 'target_worker_id'],
    [DrainBodySchema, { deadline_s: 0 }, 'CLOUDAI_BAD_FIELD', 'deadline_s'],
    [DrainBodySchema, { force: 'yes' }, 'CLOUDAI_BAD_FIELD', 'force'],
    [DrainBodySchema, { deadline: 5 }, 'CLOUDAI_BAD_REQUEST', 'deadline'],
    [EmptyBodySchema, { force: true }, 'CLOUDAI_BAD_REQUEST', 'force'],
    [RegisterWorkerBodySchema, { worker_ip: '127.0.0.1:1' }, 'CLOUDAI_BAD_WORKER_ID', 'worker_id'],
    [RegisterWorkerBodySchema, { worker_id: 'w1', worker_ip: '' }, 'CLOUDAI_BAD_ADDRESS', 'worker_ip'],
  ]
  for (const [schema, body, code, field] of cases) {
    const err = refusal(schema, body)
    assert.equal(err.code, code, JSON.stringify(body))
    assert.equal(err.details?.field, field, JSON.stringify(body))
    if (code === 'CLOUDAI_BAD_FIELD' || code === 'CLOUDAI_BAD_WORKER_ID') assert.ok(err.message.startsWith(field), err.message)
  }
  // Unknown fields of a task are ignored (CloudAI's clients send more), a drain's are not.
  assert.deepEqual(v.check(SubmitTaskBodySchema, { command: 'true', priority: 5 }, 'a task'), { command: 'true', priority: 5 })
})

test("the README's typed client: openapi-typescript generates types from the snapshot that type-check a client's use of them", async (t) => {
  const dir = tempDir(t, 'cloudai-openapi-client-')
  const out = join(dir, 'cloudai-api.d.ts')
  // The README's command, with the snapshot for the live master's URL.
  await run(process.execPath, [join(ROOT, 'node_modules', 'openapi-typescript', 'bin', 'cli.js'), 'test/snapshots/openapi.json', '-o', out], { cwd: ROOT, timeout: 60_000 })
  writeFileSync(
    join(dir, 'use.ts'),
    [
      "import type { components, paths } from './cloudai-api.js'",
      "type Workers = paths['/api/workers']['get']['responses'][200]['content']['application/json']",
      "type Submit = paths['/api/tasks']['post']['requestBody']['content']['application/json']",
      "type Refusal = paths['/api/workers/{id}']['get']['responses'][404]['content']['application/json']",
      "export const ids = (list: Workers): string[] => list.workers.map((w) => w.worker_id)",
      "export const submit: Submit = { command: 'echo hello', req_cpu: 1, env: { MODE: 'fast' } }",
      "export const code = (r: Refusal): 'CLOUDAI_BAD_WORKER_ID' | 'CLOUDAI_UNKNOWN_WORKER' | 'CLOUDAI_NOT_FOUND' => r.error.code === 'CLOUDAI_UNKNOWN_WORKER' ? r.error.code : 'CLOUDAI_NOT_FOUND'",
      "export const drained = (w: components['schemas']['WorkerView']): boolean => w.scheduling === 'drained'",
      "// @ts-expect-error: req_cpu is a number in the contract",
      "export const wrong: Submit = { command: 'x', req_cpu: 'one' }",
      '',
    ].join('\n'),
  )
  await run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', join(dir, 'use.ts')], { cwd: dir, timeout: 60_000 })
})
