import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { api, msgHas, registerWorker, reservePort, startMaster, startWorker, tempDir, type LogLine } from '../support/cluster.js'
import { startCloudaiMaster } from '../support/cloudai-peers.js'
import { startPeerMaster } from '../support/master-peer.js'

// Fencing on the workers (issue 19): a real worker process, driven by masters played in the test
// (test/support/master-peer.ts: our proto, any master_epoch; test/support/cloudai-peers.ts:
// CloudAI's proto, which has no epoch) and by a real cloudai master. The worker runs without a
// token: callers on this machine are served, so the peers need no proof.

const STALE = [grpc.status.FAILED_PRECONDITION, 'CLOUDAI_STALE_EPOCH']
const epochOnDisk = (dataDir: string): number => (JSON.parse(readFileSync(join(dataDir, 'master-epoch.json'), 'utf8')) as { epoch: number }).epoch
const task = (id: string, command: string, epoch: number) => ({ task_id: id, command, attempt: 1, req_cpu: 0.1, master_epoch: epoch })

test('a worker refuses MasterRegister, AssignTask and CancelTask below the highest epoch it has seen (FAILED_PRECONDITION, CLOUDAI_STALE_EPOCH), changing nothing; equal and higher epochs are taken', async (t) => {
  const dataDir = tempDir(t)
  const work = tempDir(t)
  const port = await reservePort()
  const proc = await startWorker(t, 'w1', port, { dataDir })
  const worker = `127.0.0.1:${port}`
  const leader = await startPeerMaster(t, 'leader-5')
  const deposed = await startPeerMaster(t, 'deposed-4')

  assert.equal((await leader.masterRegister(worker, 5)).success, true)
  await leader.until(() => leader.registers.length === 1 && leader.beatsOf('w1') > 0, 'w1 registered and heartbeating')
  assert.equal(epochOnDisk(dataDir), 5, 'the epoch is on disk once the call is answered')
  assert.equal((await leader.call(worker, 'AssignTask', task('long', 'sleep 300', 5))).success, true)
  await leader.until(() => leader.running.get('w1')?.includes('long') === true, 'a heartbeat listing task long')

  // The deposed master (epoch 4): each call refused with the code and both epochs.
  const ran = join(work, 'ran-stale')
  for (const [method, req] of [
    ['MasterRegister', { master_id: 'deposed-4', master_address: deposed.address, master_epoch: 4 }],
    ['AssignTask', task('stale', `touch ${ran}`, 4)],
    ['CancelTask', { task_id: 'long', master_epoch: 4 }],
  ] as const) {
    const r = await deposed.refusal(worker, method, req)
    assert.deepEqual([r.code, r.cloudai], STALE, method)
    assert.match(r.details, /carries master epoch 4, but this worker has seen epoch 5/, method)
  }
  // Nothing changed: the worker still follows the leader, the stale task never ran, the long one runs.
  const beats = leader.beatsOf('w1')
  const after = join(work, 'ran-after')
  assert.equal((await leader.call(worker, 'AssignTask', task('after', `touch ${after}`, 5))).success, true, 'an equal epoch is taken')
  await leader.until(() => existsSync(after) && leader.beatsOf('w1') >= beats + 2, 'task after ran and two more heartbeats')
  assert.equal(existsSync(ran), false, 'the refused AssignTask started nothing')
  assert.deepEqual(leader.running.get('w1'), ['long'], 'the refused CancelTask cancelled nothing')
  assert.equal(deposed.registers.length, 0, 'the refused MasterRegister was not followed')
  assert.equal(proc.has(msgHas('Cancelling task long')), false)
  assert.equal(epochOnDisk(dataDir), 5)

  // A higher epoch (a newer leader's CancelTask) is taken and raises the floor: now 5 is stale.
  const newer = await startPeerMaster(t, 'leader-6')
  assert.equal((await newer.call(worker, 'CancelTask', { task_id: 'long', master_epoch: 6 })).success, true)
  assert.equal(epochOnDisk(dataDir), 6)
  await proc.waitForLog(msgHas('Cancelling task long'), 'the cancel of the higher epoch')
  const r = await leader.refusal(worker, 'AssignTask', task('late', 'true', 5))
  assert.deepEqual([r.code, r.cloudai], STALE)
  const epochLine = proc.lines.find((l: LogLine) => l.epoch === 6 && l.rpc === 'CancelTask')
  assert.ok(epochLine, 'the raise is logged with the epoch and the call')
})

test('the highest epoch survives kill -9 of the worker; a CloudAI master (no epoch: 0) is taken only before any higher one', async (t) => {
  const dataDir = tempDir(t)
  const port = await reservePort()
  let proc = await startWorker(t, 'w2', port, { dataDir })
  const worker = `127.0.0.1:${port}`
  const cloudai = await startCloudaiMaster(t)
  const register = { master_id: 'master-1', master_address: `127.0.0.1:${cloudai.port}` }

  // Nothing seen yet: CloudAI's master (it sends no epoch) drives the worker as before.
  assert.equal((await cloudai.call(worker, 'MasterRegister', register)).success, true)
  assert.equal((await cloudai.call(worker, 'AssignTask', { task_id: 'cloudai-1', command: 'true', docker_image: '', req_cpu: 0.1, req_memory: 0.1, task_name: 'x' })).success, true)
  assert.equal(existsSync(join(dataDir, 'master-epoch.json')), false, 'epoch 0 writes nothing')

  const leader = await startPeerMaster(t, 'leader-3')
  assert.equal((await leader.masterRegister(worker, 3)).success, true)
  const refusedZero = async (what: string): Promise<void> => {
    const e = await cloudai.call(worker, 'AssignTask', { task_id: 'cloudai-2', command: 'true', docker_image: '', req_cpu: 0.1, req_memory: 0.1, task_name: 'x' }).then(
      () => assert.fail(`${what}: the CloudAI master's AssignTask was taken`),
      (err: grpc.ServiceError) => err,
    )
    assert.deepEqual([e.code, e.metadata.get('cloudai-error-code')[0]], STALE, what)
  }
  await refusedZero('after epoch 3')

  // Killed at once after the answer, restarted on the same data directory: epoch 3 still holds.
  await proc.kill('SIGKILL')
  proc = await startWorker(t, 'w2', port, { dataDir, name: 'w2-again' })
  await proc.waitForLog((l) => l.epoch === 3 && msgHas('seen by an earlier run')(l), 'the epoch read back at start')
  const deposed = await startPeerMaster(t, 'deposed-2')
  const r = await deposed.refusal(worker, 'MasterRegister', { master_id: 'deposed-2', master_address: deposed.address, master_epoch: 2 })
  assert.deepEqual([r.code, r.cloudai], STALE)
  await refusedZero('after the restart')
  await assert.rejects(cloudai.call(worker, 'MasterRegister', register), (err: grpc.ServiceError) => err.code === grpc.status.FAILED_PRECONDITION)
  assert.equal((await leader.masterRegister(worker, 3)).success, true, 'the same epoch again is taken')
  await leader.until(() => leader.registers.length === 2, 'w2 registered again with leader-3')
})

test('a cloudai master\'s reconnection dial carries its epoch: a worker that has seen a higher one refuses it, and the master counts the dial rejected', async (t) => {
  const port = await reservePort()
  const address = `127.0.0.1:${port}`
  const master = await startMaster(t, { dataDir: tempDir(t) })
  await registerWorker(master.api, 'w3', address)
  const proc = await startWorker(t, 'w3', port)
  // No --master: the master's monitor dials it (MasterRegister at the epoch of its lease: 1, the
  // first holder of this data directory's lease).
  await master.proc.waitForLog((l) => l.workerId === 'w3' && String(l.msg).startsWith('Worker w3 registered and active'), 'w3 active on the master')

  const leader = await startPeerMaster(t, 'leader-1')
  assert.equal((await leader.masterRegister(address, 7)).success, true)
  await leader.until(() => leader.beatsOf('w3') > 0, 'w3 heartbeating to leader-1')
  const mark = master.proc.mark()
  const rejected = await master.proc.waitForLog((l) => l.workerId === 'w3' && l.msg === 'reconnection dial failed' && l.outcome === 'rejected', 'the re-dial of w3 rejected', { from: mark })
  assert.match(String(rejected.reason), /carries master epoch 1, but this worker has seen epoch 7: .*\(CLOUDAI_STALE_EPOCH\)$/)
  assert.equal((await api<{ is_active: boolean }>(master.api, '/api/workers/w3')).body.is_active, false)
  const beats = leader.beatsOf('w3')
  await leader.until(() => leader.beatsOf('w3') > beats, 'w3 still heartbeating to leader-1')
  assert.equal(leader.registers.length, 1, 'w3 never left leader-1')
  assert.ok(proc.has(msgHas('Refused MasterRegister from 127.0.0.1')), 'the worker logs the refusal')
})
