import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { isLoopback, peerIp } from '../../src/shared/worker-credential.js'
import { msgHas, startMaster, startWorker, tempDir, waitUntil, type LogLine } from '../support/cluster.js'
import { createNetPair, netnsUnavailable, nsFetch, nsGrpcCall, sweepStaleNamespaces, type NetnsEnd } from '../support/netns.js'

// The network namespace harness (test/support/netns.ts) with the real CLI: a master in namespace
// A, a worker or a raw gRPC caller in namespace B, joined by a veth that the test cuts. B is not
// the master's machine, so B's worker calls carry the worker's token (issued by POST /api/workers).
// Every address used is loopback or one of the pair's two (198.18.0.0/15, inside namespaces made here).
// Skipped, with the reason, where namespaces cannot be made (not root, no iproute2, no
// CAP_SYS_ADMIN); CI runs as root and runs them.

const active = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)
const becameInactive = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} became inactive`)

/** 16 to 1024 printable characters; given in the environment, as an operator would. */
const CLUSTER_TOKEN = 'netns-test-cluster-token-0123456789'
/** Any port will do: nothing else listens in a namespace made for this test. */
const WORKER_PORT = 50052
/** Generous: two test files at a time on two cores. */
const WAIT_MS = 30_000

test('a worker in namespace B joins a master in namespace A across the veth, turns inactive when the link is cut and comes back when it is restored', async (t) => {
  const reason = await netnsUnavailable()
  if (reason !== null) {
    t.skip(reason)
    return
  }
  const pair = await createNetPair(t)
  const env = { CLOUDAI_CLUSTER_TOKEN: CLUSTER_TOKEN }
  const master = await startMaster(t, { dataDir: tempDir(t), netns: pair.a, env })
  const masterAddr = `${pair.a.ip}:${master.grpcPort}`
  assert.equal(master.proc.lines.find((l) => l.step === 6)?.advertise, masterAddr, 'the master advertises its namespace address')

  // Off the master's machine a worker needs its token: registered through the API, which shows it once.
  const workerAddr = `${pair.b.ip}:${WORKER_PORT}`
  const token = await nsRegister(pair.a, master.api, 'ns-worker', workerAddr)

  let mark = master.proc.mark()
  const worker = await startWorker(t, 'ns-worker', WORKER_PORT, { netns: pair.b, master: masterAddr, env, token })
  const joined = await master.proc.waitForLog(active('ns-worker'), 'ns-worker joined from namespace B', { from: mark, timeoutMs: WAIT_MS })
  assert.equal(joined.address, workerAddr)
  await worker.waitForLog(msgHas(`Registered with master ${masterAddr}`), 'the worker knows it is registered', { timeoutMs: WAIT_MS })
  assert.equal((await nsFetch(pair.a, `${master.api}/api/workers/ns-worker`)).body.is_active, true)

  // Cut: heartbeats stop arriving, and the (shortened, 1.5 s) heartbeat timeout marks it inactive.
  mark = master.proc.mark()
  await pair.cut()
  await master.proc.waitForLog(becameInactive('ns-worker'), 'ns-worker inactive after the cut', { from: mark, timeoutMs: WAIT_MS })
  assert.equal((await nsFetch(pair.a, `${master.api}/api/workers/ns-worker`)).body.is_active, false)

  // Restored: the worker registers again (its stream refused as inactive, or the monitor's dial).
  mark = master.proc.mark()
  await pair.restore()
  await master.proc.waitForLog(active('ns-worker'), 'ns-worker back after the restore', { from: mark, timeoutMs: WAIT_MS })
  assert.equal((await nsFetch(pair.a, `${master.api}/api/workers/ns-worker`)).body.is_active, true)

  assert.deepEqual(await worker.kill('SIGTERM'), { code: 0, signal: null })
  assert.deepEqual(await master.proc.kill('SIGTERM'), { code: 0, signal: null })
})

test('a raw gRPC call from namespace B reaches the master in A from B\'s address, not from loopback', async (t) => {
  const reason = await netnsUnavailable()
  if (reason !== null) {
    t.skip(reason)
    return
  }
  const pair = await createNetPair(t)
  const master = await startMaster(t, { dataDir: tempDir(t), netns: pair.a, env: { CLOUDAI_CLUSTER_TOKEN: CLUSTER_TOKEN } })
  const target = `${pair.a.ip}:${master.grpcPort}`

  // Without the token: refused before the service, and the refusal's log line names the peer.
  let mark = master.proc.mark()
  const refused = await nsGrpcCall(pair.b, target, 'SendHeartbeat', { worker_id: 'nobody' })
  assert.equal(refused.code, 16, `UNAUTHENTICATED: ${refused.details}`)
  const line = await master.proc.waitForLog((l) => l.code === 'CLOUDAI_UNAUTHENTICATED' && l.rpc === 'SendHeartbeat', 'the refusal logged with its peer', { from: mark })
  const ip = peerIp(String(line.peer))
  assert.equal(ip, pair.b.ip, `the master saw the call come from B (peer ${String(line.peer)})`)
  assert.equal(isLoopback(ip), false)

  // With it but no worker token: past the cluster check, and refused by the worker check, because
  // the caller is not on the master's machine (from loopback this call would reach the registry).
  const member = { 'cloudai-cluster-token': CLUSTER_TOKEN }
  mark = master.proc.mark()
  const tokenless = await nsGrpcCall(pair.b, target, 'SendHeartbeat', { worker_id: 'nobody' }, member)
  assert.equal(tokenless.code, 16, `UNAUTHENTICATED: ${tokenless.details}`)
  assert.equal(tokenless.metadata['cloudai-error-code'], 'CLOUDAI_WORKER_TOKEN_REQUIRED')
  const remote = await master.proc.waitForLog((l) => l.code === 'CLOUDAI_WORKER_TOKEN_REQUIRED' && l.rpc === 'SendHeartbeat', 'the worker-token refusal logged with its peer', { from: mark })
  assert.equal(peerIp(String(remote.peer)), pair.b.ip)

  // With both, the worker's own token: the call reaches the service and registers the worker.
  const address = `${pair.b.ip}:${WORKER_PORT}`
  const token = await nsRegister(pair.a, master.api, 'raw-b', address)
  mark = master.proc.mark()
  const registered = await nsGrpcCall(pair.b, target, 'RegisterWorker', { worker_id: 'raw-b', worker_ip: address, total_cpu: 2, total_memory: 4, total_storage: 10, total_gpu: 0 }, { ...member, authorization: `Bearer ${token}` })
  assert.equal(registered.code, 0, registered.details)
  assert.equal(registered.response.success, true)
  await master.proc.waitForLog(active('raw-b'), 'raw-b registered from B', { from: mark })
})

test('a pair\'s clean-up kills everything that runs in it and deletes both namespaces; namespaces of a dead test process are swept', async (t) => {
  const reason = await netnsUnavailable()
  if (reason !== null) {
    t.skip(reason)
    return
  }
  const pair = await createNetPair(t)
  assert.notEqual(pair.a.name, pair.b.name)
  assert.match(pair.a.name, new RegExp(`^cai-${process.pid}-\\d+-a$`))

  // Only loopback and the pair's addresses are targets; anything else is refused before a process starts.
  await assert.rejects(nsFetch(pair.a, 'http://192.0.2.1/'), /neither loopback nor an address of this test's network namespaces/)
  await assert.rejects(nsGrpcCall(pair.b, '10.0.0.1:50051', 'SendHeartbeat', {}), /neither loopback nor/)

  // A process and a grandchild in a process group of its own: both go with the namespace.
  const script = `const c = require('node:child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { detached: true, stdio: 'ignore' }); c.unref(); console.log(c.pid); setInterval(() => {}, 1000)`
  const parent = pair.run(pair.b, [process.execPath, '-e', script])
  const grandchild = await waitUntil(() => Number(parent.stdout().trim()) || false, 'the grandchild\'s pid')
  await pair.close()
  assert.deepEqual(await parent.exited, { code: null, signal: 'SIGKILL' })
  await waitUntil(() => !running(grandchild), 'the grandchild gone')
  const names = listNamespaces()
  assert.ok(!names.includes(pair.a.name) && !names.includes(pair.b.name), names.join(', '))
  assert.throws(() => pair.run(pair.a, ['true']), /closed/)
  await pair.close() // idempotent

  // A namespace named for a test process that is gone (a crashed run): swept.
  const dead = spawnSync(process.execPath, ['-e', '']).pid
  const stale = `cai-${dead}-1-a`
  execFileSync('ip', ['netns', 'add', stale])
  t.after(() => void spawnSync('ip', ['netns', 'del', stale]))
  assert.ok((await sweepStaleNamespaces()).includes(stale))
  assert.ok(!listNamespaces().includes(stale))
})

/** POST /api/workers from inside `end`; returns the worker's token (shown only in this answer). */
async function nsRegister(end: NetnsEnd, api: string, id: string, address: string): Promise<string> {
  const res = await nsFetch<{ token?: string }>(end, `${api}/api/workers`, { method: 'POST', body: { worker_id: id, worker_ip: address } })
  assert.equal(res.status, 201, res.text)
  assert.equal(typeof res.body.token, 'string', res.text)
  return res.body.token!
}

function listNamespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!).filter(Boolean)
}

/** Alive and not a zombie waiting for its reaper. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}
