import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import type { TaskRecord, WorkerRecord } from '../../src/shared/types.js'
import type { LeaseRequest } from '../../src/store/lease.js'
import { tempDir } from '../support/cluster.js'
import { PeerError, StorePeer } from '../support/store-peer.js'

// Issue 19: two masters on one host share a data directory (a standby beside its leader). Each
// peer here is a process of its own with its own SqliteStore, as two masters are: their locks are
// real file locks, their lease calls race for real.

const ask = (holder: string, ttlMs: number): LeaseRequest => ({ holder, ttlMs, api: `http://${holder}:8080`, grpc: `${holder}:50051` })

function task(id: string): TaskRecord {
  return {
    id, name: id, command: 'true', dockerImage: '', req: { cpu: 0, memory: 0, storage: 0, gpu: 0 }, targetWorkerId: null, userId: '', timeoutS: 0, maxAttempts: 3, env: {},
    status: 'queued', workerId: null, attempts: 0, attempt: 0, submittedAt: 1, assignedAt: null, startedAt: null, finishedAt: null, exitCode: null, reason: null, logsTail: '', updatedAt: 1,
    history: [{ status: 'queued', at: 1, workerId: null, reason: null }],
  }
}

const worker = (id: string, reconnects: number): WorkerRecord => ({
  id, address: '10.0.0.1:5000', isActive: true, specs: null, usage: null, runningTasks: [], reportedAddress: null, registeredAt: 1,
  connectedAt: null, lastHeartbeat: null, disconnectedAt: null, reconnects, credential: null,
})

async function peers(t: import('node:test').TestContext, dir: string, ...names: string[]): Promise<StorePeer[]> {
  const all = names.map((n) => new StorePeer(n, dir))
  t.after(() => Promise.all(all.map((p) => p.stop())))
  // Opened together: the second open meets the first's migration and WAL switch on a new database.
  await Promise.all(all.map((p) => p.call('open')))
  return all
}

function integrity(dir: string): string {
  const db = new Database(join(dir, 'cloudai.db'), { readonly: true })
  try {
    return db.pragma('integrity_check', { simple: true }) as string
  } finally {
    db.close()
  }
}

test('two processes on one SQLite data directory: concurrent acquires give exactly one winner every time, named to the loser', async (t) => {
  const dir = join(tempDir(t), 'data')
  const [a, b] = await peers(t, dir, 'master-a', 'master-b')
  let epoch = 0
  let holder = ''
  for (let round = 0; round < 12; round++) {
    const [x, y] = await Promise.all([a!.call('acquireLease', ask('master-a', 60_000)), b!.call('acquireLease', ask('master-b', 60_000))])
    assert.equal([x, y].filter((r) => r.acquired).length, 1, `round ${round}: exactly one winner: ${JSON.stringify([x, y])}`)
    const won = x.acquired ? x : y
    assert.deepEqual(x.lease, won.lease)
    assert.deepEqual(y.lease, won.lease)
    assert.equal(won.lease.epoch, won.lease.holder === holder ? epoch : epoch + 1, 'one more with every change of holder')
    ;({ epoch, holder } = won.lease)
    await (x.acquired ? a! : b!).call('releaseLease', { holder, epoch })
  }
  assert.equal(integrity(dir), 'ok')
})

test('two processes on one SQLite data directory: a deposed leader writing on through a takeover gets no write in after it, and the database stays whole', async (t) => {
  const dir = join(tempDir(t), 'data')
  const [leader, standby] = await peers(t, dir, 'leader', 'standby')
  // A short lease the leader never renews: it lapses while the leader is busy writing (a pause).
  const first = await leader!.call('acquireLease', ask('leader', 400))
  assert.equal(first.lease.epoch, 1)
  await leader!.call('fence', 1)

  let takenAt: number | null = null
  const writes: { id: string; sentAt: number; ok: boolean; code: string | null }[] = []
  const writing = (async () => {
    for (let i = 0; ; i++) {
      const id = `task-leader-${i}`
      // A task write and a worker write in turn, each recorded as a write of its own.
      const sentAt = Date.now()
      const call = i % 2 === 0 ? leader!.call('writeTasks', [task(id)]) : leader!.call('writeWorkers', { upserts: [worker('w-leader', i)], deletes: [] })
      try {
        await call
        writes.push({ id, sentAt, ok: true, code: null })
      } catch (err) {
        writes.push({ id, sentAt, ok: false, code: err instanceof PeerError ? err.code : null })
      }
      // Until the deposed leader has been refused a few times after the takeover.
      if (takenAt !== null && writes.filter((w) => w.sentAt > takenAt! && !w.ok).length >= 5) return
      if (i > 100_000) throw new Error('the standby never took over')
    }
  })()
  // The standby asks for the lease over and over while the leader writes, as its loop does.
  let refusals = 0
  for (;;) {
    const got = await standby!.call('acquireLease', ask('standby', 60_000))
    if (got.acquired) {
      takenAt = Date.now()
      assert.equal(got.lease.epoch, 2)
      break
    }
    refusals++
    assert.equal(got.lease.holder, 'leader', 'a refusal names the holder')
    await new Promise((r) => setTimeout(r, 5))
  }
  await standby!.call('fence', 2)
  await standby!.call('writeTasks', [task('task-standby')])
  await writing

  const accepted = writes.filter((w) => w.ok)
  const late = writes.filter((w) => w.sentAt > takenAt!)
  assert.ok(refusals > 0 && accepted.length > 0, `the leader wrote (${accepted.length}) while the standby was refused (${refusals})`)
  assert.deepEqual(late.filter((w) => w.ok), [], 'no write sent after the takeover was accepted')
  assert.ok(late.some((w) => w.code === 'CLOUDAI_STALE_EPOCH'), `refused as stale: ${JSON.stringify(late.slice(0, 3))}`)
  // What the store holds is exactly what it acknowledged: each accepted task write, no refused one.
  const stored = (await standby!.call('loadTasks')).map((x) => x.id).sort()
  const acknowledged = [...accepted.filter((w) => Number(w.id.split('-').pop()) % 2 === 0).map((w) => w.id), 'task-standby'].sort()
  assert.deepEqual(stored, acknowledged)
  const lastWorker = accepted.filter((w) => Number(w.id.split('-').pop()) % 2 === 1).pop()
  const workers = await standby!.call('loadWorkers')
  assert.deepEqual(workers.map((w) => w.reconnects), lastWorker ? [Number(lastWorker.id.split('-').pop())] : [], 'the stored worker is the last acknowledged write of it')
  await leader!.stop()
  await standby!.stop()
  assert.equal(integrity(dir), 'ok')
})
