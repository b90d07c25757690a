import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { CloudaiError } from '../../src/shared/errors.js'
import { MASTER_PROOF_METADATA, MasterKey, assignSubject, masterProof, type CallSource } from '../../src/shared/worker-credential.js'
import type { WorkerConfig } from '../../src/config.js'
import { MasterCheck } from '../../src/worker/master-auth.js'
import { startAgent } from '../support/agent.js'
import { tempDir, waitUntil } from '../support/cluster.js'
import { RawClient } from '../support/grpc-client.js'
import { memoryLogger } from '../support/log.js'

// Who may drive a worker: MasterRegister, AssignTask and CancelTask. The decision without traffic
// (peers off this machine as strings), then a real worker agent on 127.0.0.1 called by a raw
// client with and without the master's proof.

const REMOTE = '10.0.0.5:1234'

function source(peer: string, proofs: string[] = []): CallSource {
  const metadata = new grpc.Metadata()
  for (const p of proofs) metadata.add(MASTER_PROOF_METADATA, p)
  return { metadata, getPeer: () => peer }
}

const proofRequired = (...mentions: string[]) => (err: unknown): boolean => {
  assert.ok(err instanceof CloudaiError, String(err))
  assert.equal(err.code, 'CLOUDAI_MASTER_PROOF_REQUIRED', err.message)
  assert.equal(err.grpcStatus, grpc.status.UNAUTHENTICATED)
  for (const m of mentions) assert.ok(err.message.includes(m), `${m} in ${err.message}`)
  return true
}

test('a worker without a token serves its master\'s calls only from loopback, and says the ways out; with --master-auth none, from anywhere, warned every minute', (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] })
  const { log, lines } = memoryLogger('debug')
  const check = new MasterCheck({ workerId: 'w1', token: null, mode: 'proof', log })
  check.check('AssignTask', 'task-1/1', source('127.0.0.1:5000'))
  check.check('CancelTask', 'task-1', source('[::1]:5000'))
  assert.throws(() => check.check('AssignTask', 'task-1/1', source(REMOTE)), proofRequired('--token', '--master-auth none', '10.0.0.5'))
  assert.throws(() => check.check('MasterRegister', '10.0.0.5:50051', source('10.0.0.5:999')))
  assert.equal(lines.filter((l) => String(l.msg).startsWith('Refused ')).length, 1, 'once a minute per address')

  const none = new MasterCheck({ workerId: 'w1', token: null, mode: 'none', log })
  none.check('AssignTask', 'task-1/1', source(REMOTE))
  none.start()
  t.mock.timers.tick(60_000)
  none.close()
  t.mock.timers.tick(120_000)
  assert.equal(lines.filter((l) => l.level === 40 && String(l.msg).startsWith('--master-auth none')).length, 2, 'at start and once a minute, until close()')
})

test('a worker with a token serves only calls with its master\'s proof, from anywhere: not another worker\'s, not one made from the store, not one for another call', () => {
  const { log } = memoryLogger('silent')
  const key = MasterKey.generate()
  const mine = key.issue('w1', 0)
  const other = key.issue('w2', 0)
  const now = 1_800_000_000_000
  const check = new MasterCheck({ workerId: 'w1', token: mine.token, mode: 'proof', log, now: () => now })
  check.check('AssignTask', 'task-1/1', source(REMOTE, key.proofs('w1', mine.stored, 'AssignTask', 'task-1/1', now)))
  for (const [what, proofs] of [
    ['none', []],
    ['another worker\'s token', [masterProof(other.token, 'w1', 'AssignTask', 'task-1/1', now)]],
    ['the stored hash', [masterProof(mine.stored.hash, 'w1', 'AssignTask', 'task-1/1', now)]],
    ['the stored nonce', [masterProof(mine.stored.nonce, 'w1', 'AssignTask', 'task-1/1', now)]],
    ['another task', [masterProof(mine.token, 'w1', 'AssignTask', 'task-2/1', now)]],
    ['another attempt', [masterProof(mine.token, 'w1', 'AssignTask', 'task-1/2', now)]],
    ['another method', [masterProof(mine.token, 'w1', 'CancelTask', 'task-1/1', now)]],
    ['too old', [masterProof(mine.token, 'w1', 'AssignTask', 'task-1/1', now - 6 * 60_000)]],
  ] as const) {
    assert.throws(() => check.check('AssignTask', 'task-1/1', source('127.0.0.1:1', [...proofs])), proofRequired(), what)
  }
})

interface Agent {
  client: RawClient
  dir: string
  key: MasterKey
  token: string
  stored: ReturnType<MasterKey['issue']>['stored']
  lines: { level: number; msg: string; [k: string]: unknown }[]
}

async function agentWithToken(t: TestContext, over: Partial<WorkerConfig> = {}): Promise<Agent> {
  const { log, lines } = memoryLogger('debug')
  const key = MasterKey.generate()
  const { token, stored } = key.issue('w1', Date.now())
  const dir = tempDir(t)
  const agent = await startAgent(t, { id: 'w1', token, ...over }, log)
  return { client: new RawClient(t, `127.0.0.1:${agent.port}`), dir, key, token, stored, lines }
}

const task = (id: string, command: string, attempt = 1) => ({ task_id: id, command, attempt, docker_image: '', req_cpu: 0, req_memory: 0, req_gpu: 0 })

test('AssignTask and CancelTask to a worker with a token: refused without a valid proof, so nothing runs or stops; served with it', async (t) => {
  const a = await agentWithToken(t)
  const proofFor = (method: 'AssignTask' | 'CancelTask', subject: string) => ({ proofs: a.key.proofs('w1', a.stored, method, subject, Date.now()) })
  const otherToken = a.key.issue('w2', 0).token

  const pwned = join(a.dir, 'pwned')
  const evil = task(`task-${randomUUID()}`, `touch ${pwned}`)
  for (const creds of [{}, { proofs: [masterProof(otherToken, 'w1', 'AssignTask', assignSubject(evil), Date.now())] }, { proofs: [masterProof(a.stored.hash, 'w1', 'AssignTask', assignSubject(evil), Date.now())] }, { token: a.token }]) {
    const r = await a.client.refusal('AssignTask', evil, creds)
    assert.equal(r.code, grpc.status.UNAUTHENTICATED)
    assert.equal(r.cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
  }
  // A proof for one task does not carry another's command.
  const legit = task(`task-${randomUUID()}`, `touch ${join(a.dir, 'legit')}`)
  assert.equal((await a.client.refusal('AssignTask', { ...evil, task_id: legit.task_id }, proofFor('AssignTask', assignSubject(evil)))).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
  // Nor does the master's proof for this very task carry another command, image or environment.
  const legitProof = proofFor('AssignTask', assignSubject(legit))
  for (const changed of [{ command: `touch ${pwned}` }, { docker_image: 'alpine' }, { env: { LD_PRELOAD: '/tmp/x.so' } }, { req_cpu: 64 }]) {
    assert.equal((await a.client.refusal('AssignTask', { ...legit, ...changed }, legitProof)).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED', JSON.stringify(changed))
  }

  // The master's own call runs; by the time its file is there, a refused one would have run too.
  assert.equal((await a.client.call('AssignTask', legit, legitProof)).success, true)
  await waitUntil(() => existsSync(join(a.dir, 'legit')), 'the assigned task ran')
  assert.equal(existsSync(pwned), false, 'no refused AssignTask ran anything')
  // A proof counts once: sent again (by whoever saw it on its way), it is refused.
  const replay = await a.client.refusal('AssignTask', legit, legitProof)
  assert.equal(replay.cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
  assert.match(replay.details, /taken before/)

  // During a rotation the master sends a proof per live token (two metadata values, which HTTP/2
  // hands over joined): the worker still on its old token takes the one that is its own.
  const rotated = { ...a.key.issue('w1', Date.now()).stored, previous: { nonce: a.stored.nonce, hash: a.stored.hash, expiresAt: Date.now() + 60_000 } }
  const during = task(`task-${randomUUID()}`, `touch ${join(a.dir, 'during')}`)
  const both = a.key.proofs('w1', rotated, 'AssignTask', assignSubject(during), Date.now())
  assert.equal(both.length, 2)
  assert.equal((await a.client.call('AssignTask', during, { proofs: both })).success, true)
  await waitUntil(() => existsSync(join(a.dir, 'during')), 'the task assigned during a rotation ran')

  const nap = task(`task-${randomUUID()}`, 'sleep 30')
  assert.equal((await a.client.call('AssignTask', nap, proofFor('AssignTask', assignSubject(nap)))).success, true)
  const cancelRefused = await a.client.refusal('CancelTask', { task_id: nap.task_id }, { proofs: [masterProof(otherToken, 'w1', 'CancelTask', nap.task_id, Date.now())] })
  assert.equal(cancelRefused.cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
  assert.equal(a.lines.some((l) => String(l.msg).startsWith(`Cancelling task ${nap.task_id}`)), false, 'still running')
  const cancelled = await a.client.call<{ success: boolean; message: string }>('CancelTask', { task_id: nap.task_id }, proofFor('CancelTask', nap.task_id))
  assert.deepEqual(cancelled, { success: true, message: 'cancelling', held_attempt: 0 })
  assert.ok(!a.lines.some((l) => JSON.stringify(l).includes(a.token)), 'the worker never logs its token')
})

test('MasterRegister to a worker with a token needs the proof; a worker started with --master follows no other master', async (t) => {
  const a = await agentWithToken(t)
  const register = (address: string) => ({ master_id: 'evil', master_address: address })
  const r = await a.client.refusal('MasterRegister', register('127.0.0.1:1'))
  assert.equal(r.code, grpc.status.UNAUTHENTICATED)
  assert.equal(a.lines.some((l) => String(l.msg).startsWith('MasterRegister from')), false, 'it did not try to follow')
  // With the proof it follows (and says it cannot reach that master: nothing listens there).
  const ack = await a.client.call<{ success: boolean; message: string }>('MasterRegister', register('127.0.0.1:1'), { proofs: a.key.proofs('w1', a.stored, 'MasterRegister', '127.0.0.1:1', Date.now()) })
  assert.equal(ack.success, false)
  assert.match(ack.message, /could not register with 127\.0\.0\.1:1/)

  // Pinned: even a valid proof for another address is refused (PERMISSION_DENIED), and so is a
  // tokenless worker's loopback caller.
  const pinned = await agentWithToken(t, { masters: ['127.0.0.1:2'] })
  const wrong = await pinned.client.refusal('MasterRegister', register('127.0.0.1:3'), { proofs: pinned.key.proofs('w1', pinned.stored, 'MasterRegister', '127.0.0.1:3', Date.now()) })
  assert.deepEqual([wrong.code, wrong.cloudai], [grpc.status.PERMISSION_DENIED, 'CLOUDAI_WRONG_MASTER'])
  assert.match(wrong.details, /follows only the master it was started with \(--master 127\.0\.0\.1:2\)/)
  const tokenless = await startAgent(t, { id: 'w3', masters: ['127.0.0.1:2'] })
  const raw = new RawClient(t, `127.0.0.1:${tokenless.port}`)
  assert.equal((await raw.refusal('MasterRegister', register('127.0.0.1:3'))).cloudai, 'CLOUDAI_WRONG_MASTER')
})

test('--master-auth none: a worker with a token serves a master that sends no proof (CloudAI\'s), and warns', async (t) => {
  const a = await agentWithToken(t, { masterAuth: 'none' })
  assert.ok(a.lines.some((l) => l.level === 40 && String(l.msg).startsWith('--master-auth none')))
  const run = task(`task-${randomUUID()}`, `touch ${join(a.dir, 'ran')}`)
  assert.equal((await a.client.call('AssignTask', run)).success, true)
  await waitUntil(() => existsSync(join(a.dir, 'ran')), 'the task ran')
})
