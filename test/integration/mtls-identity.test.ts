import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { CloudaiError } from '../../src/shared/errors.js'
import { MasterKey } from '../../src/shared/worker-credential.js'
import { startAgent } from '../support/agent.js'
import { makeTestCa, tlsArgs, type IssuedCert, type TestCa } from '../support/ca.js'
import { api, FAST_MASTER_FLAGS, msgHas, registerWorker, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine } from '../support/cluster.js'
import { RawClient } from '../support/grpc-client.js'
import { memoryLogger } from '../support/log.js'

// Issue 15, mTLS as a second way: with --tls-ca, a client certificate whose URI SAN is
// spiffe://cloudai/worker/<id> is worker <id>'s credential, and one naming spiffe://cloudai/master
// the master's. Real gRPC servers on 127.0.0.1 (a master process, worker processes and in-process
// agents), raw clients presenting the certificates an attacker or a worker would hold. Every wait
// is on a log line, the API or a file.

const MASTER_ID = 'spiffe://cloudai/master'
const W = (id: string): string => `spiffe://cloudai/worker/${id}`

const active = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)
const running = (id: string, worker: string) => (l: LogLine): boolean => l.taskId === id && l.msg.startsWith(`Task ${id} assigned to worker ${worker} and running`)

interface WorkerJson {
  is_active: boolean
  last_heartbeat: string | null
  credential: { presented_at: string | null; required: boolean } | null
}

const workerOf = async (base: string, id: string): Promise<WorkerJson> => (await api<WorkerJson>(base, `/api/workers/${id}`)).body

async function submit(base: string, body: object): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

/** A raw client presenting `cert` and trusting the CA. */
const client = (t: Parameters<typeof tempDir>[0], address: string, ca: TestCa, cert: IssuedCert): RawClient => new RawClient(t, address, { caPath: ca.caPath, ...cert })
const tlsOf = (ca: TestCa, cert: IssuedCert) => ({ certPath: cert.certPath, keyPath: cert.keyPath, caPath: ca.caPath })

test('mTLS on the master: a certificate naming spiffe://cloudai/worker/w1 is w1\'s credential, and only w1\'s', async (t) => {
  const ca = makeTestCa(tempDir(t, 'cloudai-ca-'))
  const masterCert = ca.issue('master', { uris: [MASTER_ID] })
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, ...tlsArgs(ca, masterCert)] })
  const masterAddr = `127.0.0.1:${master.grpcPort}`
  const [p1, p2, p3] = [await reservePort(), await reservePort(), await reservePort()]
  // Registered by the operator, which issues tokens; none of them is given to a worker here.
  await registerWorker(master.api, 'w1', `127.0.0.1:${p1}`)
  const t2 = await registerWorker(master.api, 'w2', `127.0.0.1:${p2}`)
  await registerWorker(master.api, 'w3', `127.0.0.1:${p3}`)
  const w1Cert = ca.issue('w1', { uris: [W('w1')] })
  const worker = await startWorker(t, 'w1', p1, { master: masterAddr, args: tlsArgs(ca, w1Cert) })
  const asW1 = client(t, masterAddr, ca, w1Cert)

  await t.test('a worker with a certificate for w1 and no token registers and heartbeats as w1, and counts as presented', async () => {
    await master.proc.waitForLog(active('w1'), 'w1 active, by its certificate')
    await master.proc.waitForLog((l) => l.workerId === 'w1' && msgHas('arrive on a stream')(l), 'its heartbeats on a stream')
    const first = (await workerOf(master.api, 'w1')).last_heartbeat
    await waitUntil(async () => (await workerOf(master.api, 'w1')).last_heartbeat !== first, 'a later heartbeat')
    const seen = await workerOf(master.api, 'w1')
    assert.equal(seen.credential?.required, true, 'the certificate counts as presented')
    assert.equal(seen.credential?.presented_at, null, 'its token never was')
    // The master's calls (its certificate) and the worker's result (its own) go through.
    const echo = await submit(master.api, { command: 'echo over-mtls', target_worker_id: 'w1' })
    await master.proc.waitForLog(taskFinished(echo), 'the task finished')
    const done = (await api(master.api, `/api/tasks/${echo}`)).body
    assert.deepEqual([done.status, done.logs], ['completed', 'over-mtls\n'])
    // As w1 it is w1: a result still counts only for an attempt the master gave w1.
    const nap = await submit(master.api, { command: 'sleep 60', target_worker_id: 'w1' })
    await master.proc.waitForLog(running(nap, 'w1'), 'the nap runs on w1')
    const stale = await asW1.call<{ success: boolean; message: string }>('ReportTaskCompletion', { task_id: nap, worker_id: 'w1', status: 'completed', logs: 'FORGED', attempt: 7 })
    assert.match(stale.message, /^ignored/)
    assert.equal((await api(master.api, `/api/tasks/${nap}`)).body.status, 'running')
    assert.equal((await api(master.api, `/api/tasks/${nap}`, { method: 'DELETE' })).status, 200)
    await worker.waitForLog((l) => l.msg.startsWith(`Cancelling task ${nap}`), 'w1 takes the master\'s cancel')
  })

  await t.test('that certificate cannot act as w2: RegisterWorker, both heartbeats and completions are refused, with w2\'s token too', async () => {
    const wrong = (r: { code: grpc.status; cloudai: string }, what: string): void => assert.deepEqual([r.code, r.cloudai], [grpc.status.PERMISSION_DENIED, 'CLOUDAI_WRONG_WORKER'], what)
    const register2 = { worker_id: 'w2', worker_ip: `127.0.0.1:${p2}`, total_cpu: 64, total_memory: 64, total_storage: 1, total_gpu: 0 }
    wrong(await asW1.refusal('RegisterWorker', register2), 'RegisterWorker')
    wrong(await asW1.refusal('RegisterWorker', register2, { token: t2 }), 'RegisterWorker with w2\'s token: two workers named')
    const beat2 = { worker_id: 'w2', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] }
    wrong(await asW1.refusal('SendHeartbeat', beat2), 'SendHeartbeat')
    const streamed = await asW1.stream([beat2])
    assert.deepEqual([streamed.code, streamed.metadata.get('cloudai-error-code')[0]], [grpc.status.PERMISSION_DENIED, 'CLOUDAI_WRONG_WORKER'], 'StreamHeartbeats')
    wrong(await asW1.refusal('ReportTaskCompletion', { task_id: `task-${randomUUID()}`, worker_id: 'w2', status: 'completed', logs: 'FORGED', attempt: 1 }), 'ReportTaskCompletion')
    assert.equal((await workerOf(master.api, 'w2')).is_active, false, 'w2 never registered')
  })

  await t.test('a certificate naming no worker (none, the master\'s) and no token: the token rules', async () => {
    // From this machine: any worker that never presented a credential, and not w1 any more.
    const asPlain = client(t, masterAddr, ca, ca.issue('plain'))
    const asMaster = client(t, masterAddr, ca, masterCert)
    const register1 = { worker_id: 'w1', worker_ip: `127.0.0.1:${p1}`, total_cpu: 1e6, total_memory: 1, total_storage: 1, total_gpu: 0 }
    for (const [who, raw] of [['no SPIFFE ID', asPlain], ['the master\'s certificate', asMaster]] as const) {
      const r = await raw.refusal('RegisterWorker', register1)
      assert.deepEqual([r.code, r.cloudai], [grpc.status.UNAUTHENTICATED, 'CLOUDAI_WORKER_TOKEN_REQUIRED'], who)
    }
    const quick = await asPlain.call('RegisterWorker', { worker_id: 'w3', worker_ip: `127.0.0.1:${p3}`, total_cpu: 1, total_memory: 1, total_storage: 1, total_gpu: 0 })
    assert.equal(quick.success, true, 'w3 never presented one: the quick start rule')
  })
})

test('mTLS on the worker: the master\'s certificate drives it as the master\'s proof does; a worker\'s certificate drives no other worker', async (t) => {
  const ca = makeTestCa(tempDir(t, 'cloudai-ca-'))
  const certs = { master: ca.issue('master', { uris: [MASTER_ID] }), w1: ca.issue('w1', { uris: [W('w1')] }), plain: ca.issue('plain') }
  const dir = tempDir(t)
  const task = (name: string) => ({ task_id: `task-${randomUUID()}`, command: `touch ${join(dir, name)}`, attempt: 1, docker_image: '', req_cpu: 0, req_memory: 0, req_gpu: 0 })
  // w2 has no token: before certificates named anyone, every caller on its machine drove it.
  const w2 = await startAgent(t, { id: 'w2', tls: tlsOf(ca, ca.issue('w2', { uris: [W('w2')] })) })
  const at2 = `127.0.0.1:${w2.port}`
  // w3 has a token: the master's certificate stands in for the proof; nothing else does.
  const { token } = MasterKey.generate().issue('w3', Date.now())
  const w3 = await startAgent(t, { id: 'w3', token, tls: tlsOf(ca, ca.issue('w3', { uris: [W('w3')] })) })
  const at3 = `127.0.0.1:${w3.port}`

  await t.test('a client with w1\'s certificate calling AssignTask, CancelTask or MasterRegister on another worker is refused, from loopback too', async () => {
    const w1On2 = client(t, at2, ca, certs.w1)
    const evil = task('pwned-by-w1-on-w2')
    const byW1 = await w1On2.refusal('AssignTask', evil)
    assert.deepEqual([byW1.code, byW1.cloudai], [grpc.status.UNAUTHENTICATED, 'CLOUDAI_MASTER_PROOF_REQUIRED'])
    assert.match(byW1.details, /comes from worker w1 \(its certificate names spiffe:\/\/cloudai\/worker\/w1\), not from a master/)
    assert.equal((await w1On2.refusal('CancelTask', { task_id: evil.task_id })).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
    assert.equal((await w1On2.refusal('MasterRegister', { master_id: 'rogue', master_address: '127.0.0.1:1' })).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED')
    for (const [who, cert] of [['w1', certs.w1], ['plain', certs.plain]] as const) {
      assert.equal((await client(t, at3, ca, cert).refusal('AssignTask', task(`pwned-by-${who}`))).cloudai, 'CLOUDAI_MASTER_PROOF_REQUIRED', `${who} on w3`)
    }
  })

  await t.test('a client with the master\'s certificate and no proof calling AssignTask is accepted, by a worker without a token and by one with', async () => {
    assert.equal((await client(t, at2, ca, certs.master).call('AssignTask', task('on-w2'))).success, true)
    assert.equal((await client(t, at3, ca, certs.master).call('AssignTask', task('on-w3'))).success, true)
    await waitUntil(() => existsSync(join(dir, 'on-w2')) && existsSync(join(dir, 'on-w3')), 'the master\'s tasks ran on w2 and w3')
  })

  // By the time the master's tasks ran, a refused one would have too.
  for (const name of ['pwned-by-w1-on-w2', 'pwned-by-w1', 'pwned-by-plain']) assert.equal(existsSync(join(dir, name)), false, `${name}: no refused AssignTask ran`)
})

test('mTLS: a worker whose certificate names it joins only a master whose certificate names spiffe://cloudai/master; a certificate naming another worker does not start', async (t) => {
  const ca = makeTestCa(tempDir(t, 'cloudai-ca-'))
  // The master's certificate is good for its address, signed by the cluster's CA, and names nobody.
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, ...tlsArgs(ca, ca.issue('master-without-id'))] })
  const masterAddr = `127.0.0.1:${master.grpcPort}`
  await registerWorker(master.api, 'w1', `127.0.0.1:${await reservePort()}`)
  const w1Cert = ca.issue('w1', { uris: [W('w1')] })
  const { log, lines } = memoryLogger('debug')
  await startAgent(t, { id: 'w1', masters: [masterAddr], tls: tlsOf(ca, w1Cert) }, log)
  const failed = await waitUntil(() => lines.find((l) => l.level === 40 && String(l.msg).startsWith('RegisterWorker failed')), 'the worker does not take it for its master')
  assert.match(String(failed.msg), /names no cloudai SPIFFE ID, not spiffe:\/\/cloudai\/master/)
  assert.equal((await workerOf(master.api, 'w1')).is_active, false)
  assert.equal(master.proc.has(active('w1')), false)

  await assert.rejects(startAgent(t, { id: 'w9', tls: tlsOf(ca, w1Cert) }), (err: unknown) => {
    assert.ok(err instanceof CloudaiError)
    assert.equal(err.code, 'CLOUDAI_BAD_CONFIG')
    assert.match(err.message, /--tls-cert names spiffe:\/\/cloudai\/worker\/w1, but this is worker w9/)
    return true
  })
})
