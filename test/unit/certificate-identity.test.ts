import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { Registry } from '../../src/master/registry.js'
import { WorkerAuth, type WorkerCallSource } from '../../src/master/worker-auth.js'
import { certificateIdentity, identityOfSubjectAltName, subjectAltNames } from '../../src/shared/certificate-identity.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { AUTHORIZATION_METADATA, MASTER_PROOF_METADATA, MasterKey } from '../../src/shared/worker-credential.js'
import { MasterCheck } from '../../src/worker/master-auth.js'
import { makeTestCa } from '../support/ca.js'
import { tempDir } from '../support/cluster.js'
import { memoryLogger } from '../support/log.js'
import { refused } from '../support/refusal.js'

// mTLS identities without traffic: what a certificate's URI SANs name (real certificates, made by
// openssl as an operator would), and the master's and the worker's decisions for a call that
// carries one. Calls are plain objects with the shape grpc-js gives them (getAuthContext), so
// peers off this machine ('10.0.0.5:1234') can be tried here.

const REMOTE = '10.0.0.5:1234'
const LOOPBACK = '127.0.0.1:40000'
const W = (id: string): string => `spiffe://cloudai/worker/${id}`
const MASTER = 'spiffe://cloudai/master'

test('a subjectAltName names a worker or the master only by exactly one well-formed cloudai SPIFFE ID', () => {
  const cases: [string | undefined, ReturnType<typeof identityOfSubjectAltName>][] = [
    [`URI:${W('w1')}, DNS:localhost, IP Address:127.0.0.1`, { role: 'worker', workerId: 'w1' }],
    [`DNS:m.example, URI:${MASTER}`, { role: 'master' }],
    [`URI:${W('a.B_c-9')}`, { role: 'worker', workerId: 'a.B_c-9' }],
    // Several, or the master and a worker: nobody.
    [`URI:${W('w1')}, URI:${W('w2')}`, null],
    [`URI:${MASTER}, URI:${W('w1')}`, null],
    [`URI:${W('w1')}, URI:${W('w1')}`, null],
    // Not an id, not one of the two forms, not the canonical spelling: nobody, and they count.
    [`URI:${W('a/b')}`, null],
    [`URI:${W('')}`, null],
    [`URI:${W('x'.repeat(65))}`, null],
    [`URI:${W('w1')}?x=1`, null],
    ['URI:spiffe://cloudai/masters', null],
    ['URI:SPIFFE://cloudai/worker/w1', null],
    [`URI:SPIFFE://CLOUDAI/worker/w2, URI:${W('w1')}`, null],
    // Other trust domains and schemes are someone else's: left alone.
    [`URI:spiffe://example.org/worker/w2, URI:https://cloudai/worker/w3, URI:${W('w1')}`, { role: 'worker', workerId: 'w1' }],
    // Only a URI SAN counts.
    [`DNS:${W('w1')}`, null],
    ['DNS:localhost, IP Address:127.0.0.1', null],
    [undefined, null],
    // What Node prints for a value it had to escape is one entry, never split into two.
    [`URI:"spiffe://a\\u002c URI:${W('w2')}"`, null],
    [`URI:"spiffe://a\\u002c URI:${W('w2')}", URI:${W('w1')}`, { role: 'worker', workerId: 'w1' }],
    // Not in Node's form: nobody.
    [`URI:"${W('w1')}`, null],
    [`URI:${W('w1')},URI:${W('w2')}`, null],
  ]
  for (const [text, expected] of cases) assert.deepEqual(identityOfSubjectAltName(text), expected, String(text))
  assert.deepEqual(subjectAltNames(`URI:"a\\u002c b", IP Address:10.0.0.1`), [{ type: 'URI', value: 'a, b' }, { type: 'IP Address', value: '10.0.0.1' }])
})

test('certificates made with openssl: a worker\'s, the master\'s, one with two workers, one hiding a second URI in a comma', (t) => {
  const ca = makeTestCa(tempDir(t, 'cloudai-ca-'))
  const der = (uris: string[], name: string): Buffer => new X509Certificate(readFileSync(ca.issue(name, { uris }).certPath)).raw
  assert.deepEqual(certificateIdentity(der([W('w1')], 'w1')), { role: 'worker', workerId: 'w1' })
  assert.deepEqual(certificateIdentity(der([MASTER], 'master')), { role: 'master' })
  assert.equal(certificateIdentity(der([W('w1'), W('w2')], 'two')), null)
  assert.equal(certificateIdentity(der([], 'plain')), null)
  const hiding = der([`spiffe://a, URI:${W('w2')}`], 'hiding')
  assert.match(new X509Certificate(hiding).subjectAltName ?? '', /^URI:"spiffe:\/\/a\\u002c URI:spiffe:\/\/cloudai\/worker\/w2"/, 'Node escapes it')
  assert.equal(certificateIdentity(hiding), null)
  // PEM as well as DER (a process's own --tls-cert); garbage names nobody.
  assert.deepEqual(certificateIdentity(readFileSync(ca.issue('w3', { uris: [W('w3')] }).certPath, 'utf8')), { role: 'worker', workerId: 'w3' })
  assert.equal(certificateIdentity(Buffer.from('not a certificate')), null)
})

/** DER certificates of one CA: w1's, the master's, one with no SPIFFE ID, one naming two workers. */
function certificates(t: Parameters<typeof tempDir>[0]) {
  const ca = makeTestCa(tempDir(t, 'cloudai-ca-'))
  const der = (name: string, uris: string[]): Buffer => new X509Certificate(readFileSync(ca.issue(name, { uris }).certPath)).raw
  return { w1: der('w1', [W('w1')]), w2: der('w2', [W('w2')]), master: der('master', [MASTER]), plain: der('plain', []), two: der('two', [W('w1'), W('w2')]) }
}

/** A call as grpc-js hands it over: metadata, peer, and the verified client certificate (getAuthContext). */
function tlsCall(peer: string, cert: Buffer | null, opts: { token?: string; proofs?: string[] } = {}): WorkerCallSource {
  const metadata = new grpc.Metadata()
  if (opts.token !== undefined) metadata.set(AUTHORIZATION_METADATA, `Bearer ${opts.token}`)
  for (const p of opts.proofs ?? []) metadata.add(MASTER_PROOF_METADATA, p)
  return { metadata, getPeer: () => peer, getAuthContext: () => (cert ? { transportSecurityType: 'ssl', sslPeerCertificate: { raw: cert } } : {}) }
}


function master(certs: boolean) {
  const { log } = memoryLogger('silent')
  const key = MasterKey.generate()
  const registry = new Registry()
  const tokens = new Map<string, string>()
  for (const id of ['w1', 'w2', 'w3']) {
    registry.register(id, `10.0.0.9:${id.slice(1)}`, 0, () => {
      const issued = key.issue(id, 0)
      tokens.set(id, issued.token)
      return issued.stored
    })
  }
  return { auth: new WorkerAuth({ registry, mode: 'token', certificates: certs, log }), registry, tokens }
}

test('master: a certificate naming w1 identifies w1 from anywhere, only as w1, and counts as presented; the token rules apply to certificates that name no worker', (t) => {
  const c = certificates(t)
  const { auth, registry, tokens } = master(true)
  const events: string[] = []
  registry.on('worker-credential', (w, meta) => events.push(`${w.id}:${meta.change}`))

  const id = auth.identify('RegisterWorker', tlsCall(REMOTE, c.w1))
  assert.deepEqual(id, { how: 'certificate', workerId: 'w1' })
  for (const rpc of ['RegisterWorker', 'SendHeartbeat', 'StreamHeartbeats', 'ReportTaskCompletion']) auth.authorize(rpc, id, 'w1', tlsCall(REMOTE, c.w1))
  for (const rpc of ['RegisterWorker', 'SendHeartbeat', 'StreamHeartbeats', 'ReportTaskCompletion']) {
    assert.throws(() => auth.authorize(rpc, id, 'w2', tlsCall(REMOTE, c.w1)), refused('CLOUDAI_WRONG_WORKER', 'spiffe://cloudai/worker/w1', 'cannot act as worker w2'), rpc)
  }
  // Presented: from now on w1 needs a credential, from loopback too; its token is untouched.
  const cred = registry.get('w1')!.credential!
  assert.equal(cred.enforced, true)
  assert.equal(cred.presentedAt, null, 'the token itself was not presented')
  assert.deepEqual(events, ['w1:certificate'])
  auth.identify('SendHeartbeat', tlsCall(REMOTE, c.w1))
  assert.deepEqual(events, ['w1:certificate'], 'said once')
  const loop = auth.identify('RegisterWorker', tlsCall(LOOPBACK, null))
  assert.throws(() => auth.authorize('RegisterWorker', loop, 'w1', tlsCall(LOOPBACK, null)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED', 'w1 has presented its token or its certificate', 'spiffe://cloudai/worker/w1'))
  auth.authorize('RegisterWorker', loop, 'w3', tlsCall(LOOPBACK, null))

  // The master's certificate, one naming two workers, one naming nobody: no worker identity.
  for (const [what, cert] of [['master', c.master], ['two workers', c.two], ['no SPIFFE ID', c.plain]] as const) {
    assert.throws(() => auth.identify('RegisterWorker', tlsCall(REMOTE, cert)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED', 'no certificate naming a worker', 'spiffe://cloudai/worker/<id>'), what)
    const fromHere = auth.identify('RegisterWorker', tlsCall(LOOPBACK, cert))
    assert.deepEqual(fromHere, { how: 'loopback', workerId: null }, what)
    assert.throws(() => auth.authorize('RegisterWorker', fromHere, 'w1', tlsCall(LOOPBACK, cert)), refused('CLOUDAI_WORKER_TOKEN_REQUIRED'), what)
    assert.equal(auth.identify('RegisterWorker', tlsCall(REMOTE, cert, { token: tokens.get('w2') })).workerId, 'w2', `${what}, with w2's token`)
  }
})

test('master: a token and a certificate must name the same worker; a wrong token is refused whatever the certificate', (t) => {
  const c = certificates(t)
  const { auth, tokens } = master(true)
  assert.throws(() => auth.identify('RegisterWorker', tlsCall(REMOTE, c.w1, { token: tokens.get('w2') })), refused('CLOUDAI_WRONG_WORKER', 'token of worker w2', 'certificate of worker w1'))
  assert.throws(() => auth.identify('SendHeartbeat', tlsCall(LOOPBACK, c.w2, { token: tokens.get('w1') })), refused('CLOUDAI_WRONG_WORKER'))
  const both = auth.identify('RegisterWorker', tlsCall(REMOTE, c.w1, { token: tokens.get('w1') }))
  assert.equal(both.how, 'token')
  assert.equal(both.workerId, 'w1')
  assert.throws(() => auth.identify('RegisterWorker', tlsCall(REMOTE, c.w1, { token: `cwt1_${'A'.repeat(43)}` })), refused('CLOUDAI_WORKER_TOKEN_INVALID'))
})

test('master: without --tls-ca certificates are not looked at; nor is a context that is not TLS', (t) => {
  const c = certificates(t)
  const { auth, registry } = master(false)
  assert.throws(() => auth.identify('RegisterWorker', tlsCall(REMOTE, c.w1)), (err: unknown) => {
    assert.equal((err as CloudaiError).code, 'CLOUDAI_WORKER_TOKEN_REQUIRED')
    assert.ok(!(err as Error).message.includes('certificate'), 'no certificate to suggest')
    return true
  })
  assert.deepEqual(auth.identify('RegisterWorker', tlsCall(LOOPBACK, c.w1)), { how: 'loopback', workerId: null })
  assert.equal(registry.get('w1')!.credential!.enforced, false)
  const on = master(true).auth
  const notTls: WorkerCallSource = { ...tlsCall(REMOTE, null), getAuthContext: () => ({ sslPeerCertificate: { raw: c.w1 } }) }
  assert.throws(() => on.identify('RegisterWorker', notTls), refused('CLOUDAI_WORKER_TOKEN_REQUIRED'))
})

test('worker: the master\'s certificate is served as its proof is, with a token or without; a worker\'s certificate is not the master\'s, from loopback too', (t) => {
  const c = certificates(t)
  const { log } = memoryLogger('silent')
  const key = MasterKey.generate()
  const mine = key.issue('w1', 0)
  const now = 1_800_000_000_000
  const tokenless = new MasterCheck({ workerId: 'w1', token: null, mode: 'proof', certificates: true, log })
  const withToken = new MasterCheck({ workerId: 'w1', token: mine.token, mode: 'proof', certificates: true, log, now: () => now })
  for (const check of [tokenless, withToken]) {
    for (const [method, subject] of [['MasterRegister', '10.0.0.5:50051'], ['AssignTask', 'task-1/1'], ['CancelTask', 'task-1']] as const) check.check(method, subject, tlsCall(REMOTE, c.master))
    for (const peer of [REMOTE, LOOPBACK]) {
      for (const cert of [c.w1, c.w2]) {
        assert.throws(() => check.check('AssignTask', 'task-1/1', tlsCall(peer, cert)), refused('CLOUDAI_MASTER_PROOF_REQUIRED', 'not from a master', 'spiffe://cloudai/master'), peer)
      }
    }
  }
  // Certificates that name nobody: the proof rules, as without TLS.
  for (const cert of [c.plain, c.two]) {
    tokenless.check('AssignTask', 'task-1/1', tlsCall(LOOPBACK, cert))
    assert.throws(() => tokenless.check('AssignTask', 'task-1/1', tlsCall(REMOTE, cert)), refused('CLOUDAI_MASTER_PROOF_REQUIRED', 'spiffe://cloudai/master'))
    assert.throws(() => withToken.check('AssignTask', 'task-1/1', tlsCall(LOOPBACK, cert)), refused('CLOUDAI_MASTER_PROOF_REQUIRED'))
  }
  // A valid proof is the master's whatever certificate carries it.
  withToken.check('AssignTask', 'task-1/1', tlsCall(REMOTE, c.w2, { proofs: key.proofs('w1', mine.stored, 'AssignTask', 'task-1/1', now) }))
  // Without --tls-ca: certificates are not looked at.
  const off = new MasterCheck({ workerId: 'w1', token: null, mode: 'proof', log })
  assert.throws(() => off.check('AssignTask', 'task-1/1', tlsCall(REMOTE, c.master)), refused('CLOUDAI_MASTER_PROOF_REQUIRED'))
  off.check('AssignTask', 'task-1/1', tlsCall(LOOPBACK, c.w2))
})
