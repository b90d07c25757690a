import assert from 'node:assert/strict'
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { Outbox } from '../../src/worker/outbox.js'
import { tempDir } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'

test("results left by an earlier run are loaded with CloudAI's status words; an unreadable one is moved aside", (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, 'outbox'))
  const base = { worker_id: 'w1', logs: 'out\n', attempt: 1, finished_at: 1 }
  // Written before the worker sent CloudAI's words: "completed" goes out as "success".
  writeFileSync(join(dir, 'outbox', 'task-old@1.json'), JSON.stringify({ ...base, task_id: 'task-old', status: 'completed' }))
  writeFileSync(join(dir, 'outbox', 'task-fail@1.json'), JSON.stringify({ ...base, task_id: 'task-fail', status: 'failed', finished_at: 2 }))
  writeFileSync(join(dir, 'outbox', 'task-odd@1.json'), JSON.stringify({ ...base, task_id: 'task-odd', status: 'finished' }))
  const { log, lines } = memoryLogger()
  const outbox = new Outbox(dir, log)
  assert.equal(outbox.open(), 2)
  assert.deepEqual(outbox.list().map((r) => [r.task_id, r.status]), [['task-old', 'success'], ['task-fail', 'failed']])
  assert.deepEqual(readdirSync(join(dir, 'outbox')).sort(), ['task-fail@1.json', 'task-odd@1.json.bad', 'task-old@1.json'])
  assert.ok(lines.some((l) => l.msg.startsWith('Outbox file task-odd@1.json is unreadable')))
})
