import assert from 'node:assert/strict'
import { test } from 'node:test'
import { CloudaiError } from '../../src/shared/errors.js'
import { parseResultStatus, resultStatusWord } from '../../src/shared/result-status.js'

test("TaskResult.status: CloudAI's words and ours, in any case; anything else is refused with CLOUDAI_BAD_FIELD", () => {
  const cases: [string, string][] = [
    ['success', 'completed'], ['SUCCESS', 'completed'], ['Success', 'completed'], ['completed', 'completed'],
    ['failed', 'failed'], ['failure', 'failed'], ['Error', 'failed'], ['FAILED', 'failed'],
    ['cancelled', 'cancelled'], ['Cancelled', 'cancelled'], ['canceled', 'cancelled'],
  ]
  for (const [word, status] of cases) assert.equal(parseResultStatus(word), status, word)
  for (const bad of ['', 'ok', 'done', 'running', 'success ', 'x'.repeat(100), undefined, null, 0, {}]) {
    assert.throws(() => parseResultStatus(bad), (e: CloudaiError) => e instanceof CloudaiError && e.code === 'CLOUDAI_BAD_FIELD', String(bad))
  }
})

test("a worker sends CloudAI's words, which a CloudAI master and ours both read back to the same status", () => {
  assert.deepEqual(['completed', 'failed', 'cancelled'].map((s) => resultStatusWord(s as 'completed')), ['success', 'failed', 'cancelled'])
  for (const s of ['completed', 'failed', 'cancelled'] as const) assert.equal(parseResultStatus(resultStatusWord(s)), s)
})
