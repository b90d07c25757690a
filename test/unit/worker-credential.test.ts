import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { inspect } from 'node:util'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { CloudaiError } from '../../src/shared/errors.js'
import { assignSubject, bearerOf, isLoopback, MasterKey, masterProof, matchMasterProof, peerIp, PROOF_MAX_SKEW_MS, ProofReplayGuard, tokenHash, validateToken, verifyMasterProof } from '../../src/shared/worker-credential.js'
import { tempDir } from '../support/cluster.js'

test('a token is derived from the master key, the worker id and a random nonce; the store keeps only the nonce and a hash', () => {
  const key = MasterKey.generate()
  const a = key.issue('w1', 1000)
  const b = key.issue('w1', 2000)
  assert.match(a.token, /^cwt1_[A-Za-z0-9_-]{43}$/)
  assert.notEqual(a.token, b.token, 'a new nonce, a new token')
  assert.equal(key.tokenFor('w1', a.stored.nonce), a.token, 'the master can recompute it')
  assert.notEqual(key.tokenFor('w2', a.stored.nonce), a.token, 'bound to the worker id')
  assert.notEqual(MasterKey.generate().tokenFor('w1', a.stored.nonce), a.token, 'and to the key')
  assert.equal(a.stored.hash, tokenHash(a.token))
  assert.ok(!JSON.stringify(a.stored).includes(a.token.slice(5)), 'nothing stored is the token')
  assert.equal(validateToken(a.token), a.token)
  assert.equal(JSON.stringify({ key }), '{"key":"<master key>"}', 'the key never shows in a dump')
  assert.equal(inspect({ key }), '{ key: MasterKey { <secret> } }')
  for (const bad of ['', 'cwt1_short', `cwt2_${'a'.repeat(43)}`, `cwt1_${'a'.repeat(42)}!`, 42]) assert.throws(() => validateToken(bad), (e: CloudaiError) => e.code === 'CLOUDAI_BAD_CONFIG')
})

test('a stored credential is not trusted for its hash: the key recomputes it, and says when the store disagreed', () => {
  const key = MasterKey.generate()
  const { token, stored } = key.issue('w1', 0)
  assert.deepEqual(key.rehash('w1', stored), { credential: stored, changed: false })
  // Someone who can write the store puts the hash of a token of their own there.
  const forged = { ...stored, hash: tokenHash('cwt1_' + 'A'.repeat(43)) }
  const back = key.rehash('w1', forged)
  assert.equal(back.changed, true)
  assert.equal(back.credential.hash, tokenHash(token), "the worker's real token still works; the forged one does not")
  const withPrevious = { ...stored, previous: { nonce: 'n2', hash: '0'.repeat(64), expiresAt: 1 } }
  const again = key.rehash('w1', withPrevious)
  assert.equal(again.changed, true)
  assert.equal(again.credential.previous!.hash, tokenHash(key.tokenFor('w1', 'n2')))
})

test('the master key file is created once with mode 0600 and read back; a damaged one is refused', (t) => {
  const dir = tempDir(t)
  const path = join(dir, 'sub', 'master.key')
  const first = MasterKey.loadOrCreate(path)
  assert.equal(first.created, true)
  assert.equal(statSync(path).mode & 0o777, 0o600)
  const again = MasterKey.loadOrCreate(path)
  assert.equal(again.created, false)
  assert.equal(again.key.tokenFor('w1', 'n'), first.key.tokenFor('w1', 'n'))
  assert.match(readFileSync(path, 'utf8'), /^[0-9a-f]{64}\n$/)
  writeFileSync(path, 'garbage')
  assert.throws(() => MasterKey.loadOrCreate(path), (e: CloudaiError) => e.code === 'CLOUDAI_BAD_CONFIG' && /not 64 hex characters/.test(e.message))
})

const CREDENTIAL_MODULE = new URL('../../src/shared/worker-credential.js', import.meta.url).href

/**
 * `threads` threads that each wait at one barrier, then call MasterKey.loadOrCreate(path) at the
 * same moment, once per path: what each got (the key's fingerprint and whether it created it, or
 * its error), per path.
 */
async function raceLoadOrCreate(paths: string[], threads: number): Promise<{ fp?: string; created?: boolean; err?: string }[][]> {
  const script = `
    const { parentPort, workerData } = require('node:worker_threads')
    import(workerData.module).then(({ MasterKey }) => {
      const gate = new Int32Array(workerData.gate)
      const out = []
      for (let i = 0; i < workerData.paths.length; i++) {
        // Everyone arrives, the last one opens the gate for round i.
        if (Atomics.add(gate, 1, 1) === workerData.threads * (i + 1) - 1) { Atomics.store(gate, 0, i + 1); Atomics.notify(gate, 0) }
        while (Atomics.load(gate, 0) < i + 1) Atomics.wait(gate, 0, i)
        try {
          const r = MasterKey.loadOrCreate(workerData.paths[i])
          out.push({ fp: r.key.tokenFor('fp', 'fp'), created: r.created })
        } catch (err) { out.push({ err: err.message }) }
      }
      parentPort.postMessage(out)
    })`
  const gate = new SharedArrayBuffer(8)
  const results = await Promise.all(Array.from({ length: threads }, () => new Promise<{ fp?: string; created?: boolean; err?: string }[]>((resolve, reject) => {
    const w = new Worker(script, { eval: true, workerData: { module: CREDENTIAL_MODULE, gate, paths, threads } })
    w.once('message', resolve)
    w.once('error', reject)
  })))
  return paths.map((_, i) => results.map((r) => r[i]!))
}

test('masters creating one master key at the same moment all get the same whole key: exactly one creates it, none reads it half-written', async (t) => {
  const dir = tempDir(t)
  const paths = Array.from({ length: 150 }, (_, i) => join(dir, `round-${i}`, 'master.key'))
  const rounds = await raceLoadOrCreate(paths, 4)
  for (const [i, round] of rounds.entries()) {
    const errors = round.filter((r) => r.err !== undefined).map((r) => r.err)
    assert.deepEqual(errors, [], `round ${i}: no master failed`)
    assert.equal(new Set(round.map((r) => r.fp)).size, 1, `round ${i}: one key for all`)
    assert.equal(round.filter((r) => r.created).length, 1, `round ${i}: created once`)
    assert.deepEqual(readdirSync(join(dir, `round-${i}`)), ['master.key'], `round ${i}: no temporary file left`)
  }
})

test("the master's proof holds only for its token, worker, method, subject and time", () => {
  const key = MasterKey.generate()
  const { token, stored } = key.issue('w1', 0)
  const other = key.issue('w2', 0).token
  const now = 1_800_000_000_000
  const proof = masterProof(token, 'w1', 'AssignTask', 'task-1/1', now)
  assert.equal(verifyMasterProof(token, 'w1', 'AssignTask', 'task-1/1', [proof], now), true)
  assert.equal(verifyMasterProof(token, 'w1', 'AssignTask', 'task-1/1', [proof], now + PROOF_MAX_SKEW_MS), true)
  assert.equal(verifyMasterProof(token, 'w1', 'AssignTask', 'task-1/1', [proof], now + PROOF_MAX_SKEW_MS + 1), false, 'too old')
  assert.equal(verifyMasterProof(token, 'w1', 'AssignTask', 'task-2/1', [proof], now), false, 'another task')
  assert.equal(verifyMasterProof(token, 'w1', 'CancelTask', 'task-1/1', [proof], now), false, 'another method')
  assert.equal(verifyMasterProof(token, 'w2', 'AssignTask', 'task-1/1', [proof], now), false, 'another worker')
  assert.equal(verifyMasterProof(token, 'w1', 'AssignTask', 'task-1/1', [masterProof(other, 'w1', 'AssignTask', 'task-1/1', now)], now), false, "another worker's token")
  assert.equal(verifyMasterProof(token, 'w1', 'AssignTask', 'task-1/1', ['v1.x.y', 'nonsense', 7], now), false)
  // During a rotation the master sends one proof per live token; the worker takes any that is its own.
  const rotated = { ...key.issue('w1', now).stored, previous: { nonce: stored.nonce, hash: stored.hash, expiresAt: now + 1000 } }
  const proofs = key.proofs('w1', rotated, 'CancelTask', 'task-1', now)
  assert.equal(proofs.length, 2)
  assert.equal(verifyMasterProof(token, 'w1', 'CancelTask', 'task-1', proofs, now), true, 'the old token, within its grace')
  assert.equal(verifyMasterProof(token, 'w1', 'CancelTask', 'task-1', [proofs.join(', ')], now), true, 'as HTTP/2 hands over repeated metadata: joined with ", "')
  assert.equal(key.proofs('w1', rotated, 'CancelTask', 'task-1', now + 1000).length, 1, 'after the grace only the new one')
})

test('bearer metadata and loopback peers', () => {
  const md = (...values: string[]) => {
    const m = new grpc.Metadata()
    for (const v of values) m.add('authorization', v)
    return m
  }
  assert.deepEqual(bearerOf(md()), { kind: 'none' })
  assert.deepEqual(bearerOf(md('Bearer abc')), { kind: 'token', token: 'abc' })
  assert.deepEqual(bearerOf(md('Basic abc')), { kind: 'malformed' })
  assert.deepEqual(bearerOf(md('Bearer a', 'Bearer b')), { kind: 'malformed' })
  assert.equal(peerIp('127.0.0.1:5000'), '127.0.0.1')
  assert.equal(peerIp('ipv4:10.1.2.3:5000'), '10.1.2.3')
  assert.equal(peerIp('[::1]:5000'), '::1')
  assert.equal(peerIp('[::ffff:127.0.0.1]:5000'), '::ffff:127.0.0.1')
  // What grpc-js' getPeer() really says for IPv6 peers: no brackets.
  assert.equal(peerIp('::1:47320'), '::1')
  assert.equal(peerIp('::ffff:127.0.0.1:47320'), '::ffff:127.0.0.1')
  assert.equal(peerIp('fe80::1:5000'), 'fe80::1')
  assert.equal(peerIp('unix:/x'), null)
  for (const ip of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopback(ip), true, ip)
  for (const ip of ['10.0.0.1', '::ffff:10.0.0.1', '::2', 'fe80::1', '0.0.0.0', null]) assert.equal(isLoopback(ip), false, String(ip))
})

test('each proof counts once; the replay guard forgets only what is too old to count anyway', () => {
  const guard = new ProofReplayGuard(3)
  const now = 1_800_000_000_000
  assert.equal(guard.take('n1', now, now), true)
  assert.equal(guard.take('n1', now, now + 1), false, 'a replay')
  assert.equal(guard.take('n2', now, now), true)
  // Past the skew the nonce is forgotten, and the proof is refused for its age instead.
  assert.equal(guard.take('n1', now, now + PROOF_MAX_SKEW_MS + 1), true)
  // Full of nonces still within the skew: a new proof is refused, no live nonce forgotten.
  const full = new ProofReplayGuard(2)
  assert.equal(full.take('a', now, now), true)
  assert.equal(full.take('b', now, now), true)
  assert.equal(full.take('c', now, now), false)
  assert.equal(full.take('a', now, now), false, 'still remembered')
  const key = MasterKey.generate()
  const { token } = key.issue('w1', 0)
  const a = masterProof(token, 'w1', 'CancelTask', 't', now)
  const b = masterProof(token, 'w1', 'CancelTask', 't', now)
  assert.notEqual(a, b, 'a fresh nonce every time')
  assert.equal(matchMasterProof(token, 'w1', 'CancelTask', 't', [a], now)?.nonce, a.split('.')[2])
})

test('an AssignTask proof is bound to what runs: image, command, environment (in any order), timeout, resources', () => {
  const base = { task_id: 'task-1', attempt: 2, docker_image: '', command: 'echo hi', env: { B: '2', A: '1' }, timeout_ms: 0, req_cpu: 1, req_memory: 0.5, req_storage: 0, req_gpu: 0 }
  const s = assignSubject(base)
  assert.match(s, /^task-1\/2\/[A-Za-z0-9_-]{43}$/)
  assert.equal(assignSubject({ ...base, env: { A: '1', B: '2' } }), s, 'the order of the environment does not matter')
  for (const changed of [{ command: 'id' }, { docker_image: 'alpine' }, { env: { A: '1' } }, { timeout_ms: 5 }, { req_cpu: 2 }, { attempt: 3 }, { task_id: 'task-2' }]) {
    assert.notEqual(assignSubject({ ...base, ...changed }), s, JSON.stringify(changed))
  }
})

test('proof nonces from the pooled draw: each one new, across refills of the pool, and each proof verifies', () => {
  const token = 'cwt1_' + 'a'.repeat(43)
  const now = Date.now()
  const nonces = new Set<string>()
  // 600 proofs: more than two fills of the pool (256 nonces each).
  for (let i = 0; i < 600; i++) {
    const proof = masterProof(token, 'w1', 'AssignTask', `task-${i}/1`, now)
    const nonce = proof.split('.')[2]!
    assert.match(nonce, /^[A-Za-z0-9_-]{16}$/)
    nonces.add(nonce)
    assert.ok(verifyMasterProof(token, 'w1', 'AssignTask', `task-${i}/1`, [proof], now), `proof ${i} verifies`)
  }
  assert.equal(nonces.size, 600, 'no nonce handed out twice')
})
