import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { api, msgHas, registerWorker, reservePort, runCli, startMaster, startWorker, tempDir } from '../support/cluster.js'
import { startPeerMaster } from '../support/master-peer.js'

// `cloudai worker --master a,b` (issue 19): a real worker process joins whichever master of its
// list leads and follows takeovers by itself. Standbys are played by gRPC peers in the test
// (test/support/master-peer.ts: UNAVAILABLE, CLOUDAI_NOT_LEADER, the leader in LEADER_GRPC_METADATA);
// leaders by real cloudai masters where the test needs no epoch, by peers where it does.

const JOIN_FLAGS = ['--reconnect-interval', '0', '--dial-timeout', '1s', '--heartbeat-timeout', '1500ms', '--shutdown-grace', '2s']
const activeOn = (id: string) => (l: { workerId?: unknown; msg: string }): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)

test('--master a,b with a down: the worker joins b, a real cloudai master', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: JOIN_FLAGS })
  const port = await reservePort()
  await registerWorker(master.api, 'w1', `127.0.0.1:${port}`)
  // Nothing listens on 127.0.0.2: that address refuses at once.
  const down = `127.0.0.2:${await reservePort()}`
  const b = `127.0.0.1:${master.grpcPort}`
  const proc = await startWorker(t, 'w1', port, { master: `${down},${b}` })
  await proc.waitForLog(msgHas(`Joining whichever of masters ${down}, ${b} leads`), 'the list said at start')
  await master.proc.waitForLog(activeOn('w1'), 'w1 active on b')
  assert.equal((await api<{ is_active: boolean }>(master.api, '/api/workers/w1')).body.is_active, true)
  await proc.waitForLog(msgHas(`Registered with master ${b}`), 'the worker says where it is')
})

test('a standby refuses as not leader and names the leader: the worker tries that one next, not the rest of its list', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: JOIN_FLAGS })
  const leader = `127.0.0.1:${master.grpcPort}`
  const standby = await startPeerMaster(t, 'standby')
  standby.stepDown(leader)
  const other = await startPeerMaster(t, 'other')
  const port = await reservePort()
  await registerWorker(master.api, 'w2', `127.0.0.1:${port}`)
  const proc = await startWorker(t, 'w2', port, { master: `${standby.address},${other.address},${leader}` })
  await master.proc.waitForLog(activeOn('w2'), 'w2 active on the leader')
  assert.equal(standby.refusals, 1, 'the standby was asked once')
  assert.equal(other.registers.length, 0, 'the address between them was skipped: the standby named the leader')
  await proc.waitForLog(msgHas(`Master ${standby.address} is a standby, not the leader: trying the leader ${leader} next`), 'the standby said once')

  // A standby naming a leader outside the list: that address is never dialled; the list goes on.
  const port2 = await reservePort()
  await registerWorker(master.api, 'w2b', `127.0.0.1:${port2}`)
  const stranger = await startPeerMaster(t, 'stranger')
  const misleading = await startPeerMaster(t, 'misleading')
  misleading.stepDown(stranger.address)
  const proc2 = await startWorker(t, 'w2b', port2, { master: `${misleading.address},${leader}` })
  await master.proc.waitForLog(activeOn('w2b'), 'w2b active on the leader')
  assert.equal(stranger.registers.length + stranger.refusals, 0, 'the leader named outside the list was not dialled')
  await proc2.waitForLog(msgHas(`it names the leader ${stranger.address}, which is not one of --master`), 'said why')
})

test('the worker follows MasterRegister of another master of its list at a higher epoch, refuses a lower one and any master outside the list', async (t) => {
  const a = await startPeerMaster(t, 'a')
  const b = await startPeerMaster(t, 'b')
  const c = await startPeerMaster(t, 'c')
  const port = await reservePort()
  const worker = `127.0.0.1:${port}`
  const proc = await startWorker(t, 'w3', port, { master: `${a.address},${b.address}` })
  await a.until(() => a.registers.length === 1 && a.beatsOf('w3') > 0, 'w3 joined a, the first of its list')
  assert.equal((await a.masterRegister(worker, 1)).success, true, 'its own master at epoch 1')

  // b took over (epoch 2): its MasterRegister is followed; heartbeats go to b from then on.
  assert.equal((await b.masterRegister(worker, 2)).success, true)
  await b.until(() => b.registers.length === 1 && b.beatsOf('w3') > 0, 'w3 registered with b and heartbeating')
  const onA = a.beatsOf('w3')
  const onB = b.beatsOf('w3')
  await b.until(() => b.beatsOf('w3') >= onB + 3, 'three more heartbeats to b')
  assert.equal(a.beatsOf('w3'), onA, 'none to a any more')

  // a, deposed, calls again with its old epoch: refused, and the worker stays with b.
  const stale = await a.refusal(worker, 'MasterRegister', { master_id: 'a', master_address: a.address, master_epoch: 1 })
  assert.deepEqual([stale.code, stale.cloudai], [grpc.status.FAILED_PRECONDITION, 'CLOUDAI_STALE_EPOCH'])
  // c is not in the list: refused whatever its epoch, and its epoch is not taken.
  const wrong = await c.refusal(worker, 'MasterRegister', { master_id: 'c', master_address: c.address, master_epoch: 9 })
  assert.deepEqual([wrong.code, wrong.cloudai], [grpc.status.PERMISSION_DENIED, 'CLOUDAI_WRONG_MASTER'])
  assert.match(wrong.details, new RegExp(`follows only the masters it was started with \\(--master ${a.address},${b.address}\\)`))
  assert.equal((await b.masterRegister(worker, 2)).success, true, 'epoch 2 still the highest: c changed nothing')
  assert.equal(a.registers.length + c.registers.length, 1, 'only the first join went to a, none to c')
  assert.ok(proc.has(msgHas(`Master epoch 2 seen (MasterRegister from ${b.address})`)))
})

test('when its master steps down or stops answering, the worker goes through its list again and joins the leader by itself', async (t) => {
  const a = await startPeerMaster(t, 'a')
  const b = await startPeerMaster(t, 'b')
  b.stepDown(a.address)
  const port = await reservePort()
  const proc = await startWorker(t, 'w4', port, { master: `${b.address},${a.address}` })
  await a.until(() => a.registers.length === 1 && a.beatsOf('w4') > 0, 'w4 joined a (b is a standby naming a)')

  // a steps down and b leads: a ends the heartbeat stream as a standby, naming b.
  b.role = 'leader'
  a.stepDown(b.address)
  await b.until(() => b.registers.length === 1 && b.beatsOf('w4') > 0, 'w4 followed the takeover to b')

  // b dies (kill -9 as far as the worker can tell: every connection cut) and a leads again.
  a.role = 'leader'
  const mark = proc.mark()
  await b.close()
  await a.until(() => a.registers.length === 2 && a.beatsOf('w4') > 0, 'w4 back on a')
  await proc.waitForLog(msgHas(`Registered with master ${a.address}`), 'the worker says so', { from: mark })
})

test('with every master of its list a standby, the worker backs off once per round through the list (no tight loop) and joins as soon as one leads', async (t) => {
  const a = await startPeerMaster(t, 'a')
  const b = await startPeerMaster(t, 'b')
  // During an election each may still name the other: the hints alone would send it round and round.
  a.stepDown(b.address)
  b.stepDown(a.address)
  const port = await reservePort()
  const proc = await startWorker(t, 'w6', port, { master: `${a.address},${b.address}` })
  const refusals = (): number[] => [...a.refusedAt, ...b.refusedAt].sort((x, y) => x - y)
  await a.until(() => refusals().length >= 8, 'eight refusals')
  const times = refusals().slice(0, 8)
  const gaps = times.slice(1).map((at, i) => at - times[i]!)
  // Two tries a round, then the backoff (at least 100 ms at --join-max-backoff 500ms): 3 of the 7 gaps.
  assert.ok(gaps.filter((g) => g >= 90).length >= 3, `gaps between refusals: ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`)
  assert.equal(proc.lines.filter((l) => l.level === 30 && msgHas('is a standby, not the leader')(l)).length, 1, 'said once at info, then at debug')

  b.role = 'leader'
  await b.until(() => b.registers.length === 1 && b.beatsOf('w6') > 0, 'w6 joined b once it leads')
})

test('a bad --master list is refused at start with exit 2 and the reason', async () => {
  for (const [list, says] of [
    ['127.0.0.1:50051,', /^error: --master address 2 of 2 is empty/m],
    ['127.0.0.1:50051,127.0.0.1:50051', /^error: --master lists 127\.0\.0\.1:50051 twice$/m],
    ['127.0.0.1:50051,nope', /^error: --master address 2 of 2 "nope" must be host:port/m],
  ] as const) {
    const r = await runCli(['worker', '--id', 'w5', '--host', '127.0.0.1', '--port', '0', '--master', list])
    assert.equal(r.code, 2, list)
    assert.match(r.stderr, says, list)
  }
})
