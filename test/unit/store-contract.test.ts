import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { MongoClient } from 'mongodb'
import { MONGO_STORE_DEFAULTS } from '../../src/config.js'
import { isCloudaiError } from '../../src/shared/errors.js'
import type { TaskRecord, TaskStatus, WorkerRecord } from '../../src/shared/types.js'
import type { Lease, LeaseRequest } from '../../src/store/lease.js'
import { MemoryStore } from '../../src/store/memory.js'
import { MongoStore, TASKS_COLLECTION, WORKERS_COLLECTION } from '../../src/store/mongodb.js'
import { SqliteStore } from '../../src/store/sqlite/store.js'
import type { Store } from '../../src/store/store.js'
import { tempDir } from '../support/cluster.js'

// One set of cases, run against every store: what the master may rely on whichever it is given.
// MongoDB needs a server, which cannot be installed where CI runs; with MONGODB_URI set the same
// cases run against it, in a database of their own that is dropped at the end.

interface Subject {
  /** A new, empty store, closed after the test. */
  fresh(t: TestContext): Promise<Store>
  /** Another instance on the same data, for stores that persist (null for the in-memory one). */
  again: ((store: Store) => Store) | null
  /**
   * A second store on the same data, opened, with a fence of its own (closed after the test): what
   * a second master sharing the store has. SQLite: another connection on its own thread.
   */
  peer(t: TestContext, store: Store): Promise<Store>
  /** Why the fencing cases cannot run here (MongoDB without a replica set has no transactions); false: they run. */
  skipFencing?: string | false
}

const ask = (holder: string, ttlMs = 60_000): LeaseRequest => ({ holder, ttlMs, api: `http://${holder}.example:8080`, grpc: `${holder}.example:50051` })

/** Tries to take the lease until it is taken: a lapse is an event on the store's clock, not a sleep of ours. */
async function acquireOnceLapsed(store: Store, req: LeaseRequest): Promise<{ acquired: boolean; lease: Lease }> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const got = await store.acquireLease(req)
    if (got.acquired || Date.now() > deadline) return got
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Asserts that `p` rejects with CLOUDAI_STALE_EPOCH. */
async function refusedStale(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => isCloudaiError(err) && err.code === 'CLOUDAI_STALE_EPOCH', `${what} of a deposed holder is refused with CLOUDAI_STALE_EPOCH`)
}

const worker = (id: string, over: Partial<WorkerRecord> = {}): WorkerRecord => ({
  id,
  address: `10.0.0.1:${5000 + id.length}`,
  isActive: false,
  specs: null,
  usage: null,
  runningTasks: [],
  reportedAddress: null,
  registeredAt: 1_700_000_000_000 + id.length,
  connectedAt: null,
  lastHeartbeat: null,
  disconnectedAt: null,
  reconnects: 0,
  credential: null,
  ...over,
})

const fullWorker = (id: string): WorkerRecord =>
  worker(id, {
    address: '[fd00::12]:50052',
    isActive: true,
    specs: { cpu: 8, memory: 31.25, storage: 500.5, gpu: 2 },
    usage: { cpu: 12.5, memory: 40, storage: 60.125, gpu: 0 },
    runningTasks: [
      { taskId: 'task-a', cpu: 1, memory: 2.5, gpu: 0, status: 'running', attempt: 1 },
      { taskId: 'task-b', cpu: 0.5, memory: 0, gpu: 1, status: 'assigned', attempt: 3 },
    ],
    reportedAddress: '192.168.0.9:50052',
    registeredAt: 1_700_000_000_123,
    connectedAt: 1_700_000_001_456,
    lastHeartbeat: 1_700_000_002_789,
    disconnectedAt: 1_700_000_000_500,
    reconnects: 3,
    credential: { nonce: 'ZnVsbC1ub25jZQ', hash: 'e'.repeat(64), issuedAt: 1_700_000_000_100, presentedAt: 1_700_000_001_456, enforced: true, previous: null },
  })

/** A task whose history has `version` entries, the last of them in `status`. */
function task(id: string, version: number, status: TaskStatus = 'queued', over: Partial<TaskRecord> = {}): TaskRecord {
  const steps: TaskStatus[] = ['queued', 'assigned', 'running', 'completed']
  const history = Array.from({ length: version }, (_, i) => ({
    status: i === version - 1 ? status : steps[Math.min(i, steps.length - 1)]!,
    at: 1_700_000_000_000 + i * 1000,
    workerId: i === 0 ? null : 'w1',
    reason: null,
  }))
  return {
    id,
    name: `name of ${id}`,
    command: 'echo "quoted" \'and\' \\ back; exit 3',
    dockerImage: '',
    req: { cpu: 1.5, memory: 2, storage: 0, gpu: 0 },
    targetWorkerId: null,
    userId: '',
    timeoutS: 10,
    maxAttempts: 3,
    env: { A: 'b c', EMPTY: '', UNICODE: 'caf\u00e9 \u{1F680}', WITH_EQUALS: 'x=y' },
    status,
    workerId: status === 'queued' ? null : 'w1',
    attempts: status === 'queued' ? 0 : 1,
    attempt: status === 'queued' ? 0 : 1,
    submittedAt: 1_700_000_000_000 + id.length,
    assignedAt: null,
    startedAt: null,
    finishedAt: null,
    exitCode: null,
    reason: null,
    logsTail: '',
    updatedAt: 1_700_000_000_000 + version * 1000,
    history,
    ...over,
  }
}

const byId = <T extends { id: string }>(items: T[]): T[] => [...items].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))

function contract(subject: Subject): [string, (t: TestContext) => Promise<void>][] {
  const cases: [string, (t: TestContext) => Promise<void>][] = [
    [
      'an empty store loads no workers and no tasks, and empty batches are no-ops',
      async (t) => {
        const store = await subject.fresh(t)
        await store.writeWorkers({ upserts: [], deletes: [] })
        await store.writeTasks([])
        assert.deepEqual(await store.loadWorkers(), [])
        assert.deepEqual(await store.loadTasks(), [])
      },
    ],
    [
      'every worker field round-trips: nulls, specs, usage, running tasks, times to the millisecond',
      async (t) => {
        const store = await subject.fresh(t)
        const bare = worker('w-bare')
        const full = fullWorker('w-full')
        const zeros = worker('w-zeros', { specs: { cpu: 0, memory: 0, storage: 0, gpu: 0 }, usage: { cpu: 0, memory: 0, storage: 0, gpu: 0 }, registeredAt: 0 })
        await store.writeWorkers({ upserts: [bare, full, zeros], deletes: [] })
        assert.deepEqual(byId(await store.loadWorkers()), byId([bare, full, zeros]))
      },
    ],
    [
      'a worker credential round-trips (nonce, hash, times, the previous token of a rotation), is replaced whole, and none is null',
      async (t) => {
        const store = await subject.fresh(t)
        const credential = {
          nonce: 'bm9uY2Utb25l', hash: 'c'.repeat(64), issuedAt: 1_700_000_000_111, presentedAt: null, enforced: true,
          previous: { nonce: 'bm9uY2UtdHdv', hash: 'd'.repeat(64), expiresAt: 1_700_003_600_111 },
        }
        const rotating = worker('w-rotating', { credential })
        const presented = worker('w-presented', { credential: { ...credential, presentedAt: 1_700_000_000_222, previous: null } })
        const none = worker('w-none')
        await store.writeWorkers({ upserts: [rotating, presented, none], deletes: [] })
        assert.deepEqual(byId(await store.loadWorkers()), byId([rotating, presented, none]))
        // The first presentation of the new token ends the old one's grace: nothing of it lingers.
        const after = { ...rotating, credential: { ...credential, presentedAt: 1_700_000_000_333, previous: null } }
        await store.writeWorkers({ upserts: [after], deletes: [] })
        assert.deepEqual((await store.loadWorkers()).find((w) => w.id === 'w-rotating'), after)
        assert.ok(!JSON.stringify(await store.loadWorkers()).includes('cwt1_'), 'no store holds a token')
        if (subject.again) {
          const again = subject.again(store)
          await again.open()
          t.after(() => again.close())
          assert.deepEqual(byId(await again.loadWorkers()), byId([after, presented, none]))
        }
      },
    ],
    [
      'a cordon and a drain round-trip with the worker (times to the millisecond, no deadline, drained), are replaced whole, and none is absent',
      async (t) => {
        const store = await subject.fresh(t)
        const cordoned = worker('w-cordoned', { scheduling: { cordonedAt: 1_700_000_000_111, drain: null } })
        const draining = worker('w-draining', { scheduling: { cordonedAt: 1_700_000_000_222, drain: { startedAt: 1_700_000_000_333, deadline: 1_700_003_600_333, force: false, drainedAt: null } } })
        const forced = worker('w-forced', { scheduling: { cordonedAt: 1_700_000_000_444, drain: { startedAt: 1_700_000_000_444, deadline: null, force: true, drainedAt: 1_700_000_000_999 } } })
        const none = worker('w-none')
        await store.writeWorkers({ upserts: [cordoned, draining, forced, none], deletes: [] })
        assert.deepEqual(byId(await store.loadWorkers()), byId([cordoned, draining, forced, none]))
        // Drained, then uncordoned: nothing of the drain lingers.
        const drained = { ...draining, scheduling: { cordonedAt: 1_700_000_000_222, drain: { ...draining.scheduling!.drain!, drainedAt: 1_700_000_010_000 } } }
        const { scheduling: _gone, ...uncordoned } = cordoned
        await store.writeWorkers({ upserts: [drained, uncordoned], deletes: [] })
        assert.deepEqual(byId(await store.loadWorkers()), byId([uncordoned, drained, forced, none]))
        if (subject.again) {
          const again = subject.again(store)
          await again.open()
          t.after(() => again.close())
          assert.deepEqual(byId(await again.loadWorkers()), byId([uncordoned, drained, forced, none]))
        }
      },
    ],
    [
      'an upsert replaces the whole record: nothing of the previous one lingers',
      async (t) => {
        const store = await subject.fresh(t)
        await store.writeWorkers({ upserts: [fullWorker('w1')], deletes: [] })
        const replaced = worker('w1', { address: '10.9.9.9:1', reconnects: 4 })
        await store.writeWorkers({ upserts: [replaced], deletes: [] })
        assert.deepEqual(await store.loadWorkers(), [replaced])
      },
    ],
    [
      'a delete removes that worker only; deleting an unknown id is not an error',
      async (t) => {
        const store = await subject.fresh(t)
        await store.writeWorkers({ upserts: [worker('w1'), worker('w22')], deletes: [] })
        await store.writeWorkers({ upserts: [], deletes: ['w1', 'never-existed'] })
        assert.deepEqual(await store.loadWorkers(), [worker('w22')])
      },
    ],
    [
      'one batch of upserts and deletes: the last upsert of a worker wins, and a delete wins over an upsert',
      async (t) => {
        const store = await subject.fresh(t)
        await store.writeWorkers({ upserts: [worker('gone'), worker('kept'), worker('both')], deletes: [] })
        const kept = worker('kept', { isActive: true, reconnects: 2 })
        await store.writeWorkers({
          upserts: [worker('new1'), worker('kept', { reconnects: 1 }), kept, worker('both', { reconnects: 9 }), worker('new22')],
          deletes: ['gone', 'both'],
        })
        assert.deepEqual(byId(await store.loadWorkers()), byId([kept, worker('new1'), worker('new22')]))
      },
    ],
    [
      'tasks round-trip whole: history, env, requirements, nulls and text',
      async (t) => {
        const store = await subject.fresh(t)
        const queued = task('task-q', 1)
        const done = task('task-done', 4, 'completed', {
          assignedAt: 1_700_000_001_000,
          startedAt: 1_700_000_002_000,
          finishedAt: 1_700_000_003_000,
          exitCode: 0,
          reason: 'a reason with "quotes"',
          logsTail: 'line 1\nline 2 \u00e9\u00e8 \u{1F680}\n',
          targetWorkerId: 'w1',
          userId: 'alice',
          dockerImage: 'python:3.12-slim',
          timeoutS: 0,
          req: { cpu: 0.25, memory: 1.75, storage: 10, gpu: 1 },
          env: {},
        })
        await store.writeTasks([queued, done])
        assert.deepEqual(byId(await store.loadTasks()), byId([queued, done]))
      },
    ],
    [
      'a stale task write (lower or equal version) never moves a task backwards, also in a batch with fresh writes',
      async (t) => {
        const store = await subject.fresh(t)
        const t1 = task('task-1', 3, 'running')
        await store.writeTasks([t1, task('task-2', 1)])
        const t2 = task('task-2', 2, 'assigned')
        const t3 = task('task-3', 1)
        await store.writeTasks([
          task('task-1', 2, 'assigned'), // lower
          t2, // fresh
          task('task-1', 3, 'cancelled', { reason: 'same version, other content' }), // equal
          t3, // new
          task('task-1', 1), // lower
        ])
        assert.deepEqual(byId(await store.loadTasks()), [t1, t2, t3])
        // Within one batch the highest version of a task wins, wherever it sits, and of equals the first.
        const t4 = task('task-4', 2, 'assigned')
        await store.writeTasks([task('task-4', 1), t4, task('task-4', 2, 'cancelled'), task('task-4', 1, 'queued', { name: 'late' })])
        assert.deepEqual((await store.loadTasks()).find((x) => x.id === 'task-4'), t4)
        // A newer version still goes through.
        const t1done = task('task-1', 4, 'completed', { exitCode: 0 })
        await store.writeTasks([t1done])
        assert.deepEqual((await store.loadTasks()).find((x) => x.id === 'task-1'), t1done)
      },
    ],
    [
      'ping answers while the store is open',
      async (t) => {
        const store = await subject.fresh(t)
        await store.ping()
        await store.ping()
      },
    ],
    [
      'open and close are idempotent, and close before open is harmless',
      async (t) => {
        const store = await subject.fresh(t)
        await store.open()
        await store.writeWorkers({ upserts: [worker('w1')], deletes: [] })
        await store.close()
        await store.close()
        if (subject.again) {
          const other = subject.again(store)
          await other.close()
        }
      },
    ],
    [
      'a store reopened after close sees what was written, and so does a new instance on the same data',
      async (t) => {
        const store = await subject.fresh(t)
        const w = fullWorker('w1')
        const tk = task('task-1', 2, 'assigned')
        await store.writeWorkers({ upserts: [w, worker('w22')], deletes: ['w22'] })
        await store.writeTasks([tk])
        await store.close()
        await store.open()
        assert.deepEqual(await store.loadWorkers(), [w])
        assert.deepEqual(await store.loadTasks(), [tk])
        // The version rule holds across a reopen: it is kept with the data, not in the instance.
        await store.writeTasks([task('task-1', 1)])
        assert.deepEqual(await store.loadTasks(), [tk])
        await store.close()
        if (subject.again) {
          const other = subject.again(store)
          t.after(() => other.close())
          await other.open()
          assert.deepEqual(await other.loadWorkers(), [w])
          assert.deepEqual(await other.loadTasks(), [tk])
        }
      },
    ],
    [
      'deleteTasks removes the named tasks, whatever their stored state, skips ids it does not hold, and a deletion holds across a reopen',
      async (t) => {
        const store = await subject.fresh(t)
        const keep = task('task-keep', 4, 'completed')
        await store.writeTasks([task('task-a', 4, 'completed'), task('task-b', 2, 'assigned'), keep, task('task-c', 4, 'failed')])
        await store.deleteTasks([])
        // task-b: memory, which is newer, pruned it finished while the store still held it assigned.
        await store.deleteTasks(['task-a', 'task-b', 'task-never-written'])
        await store.deleteTasks(['task-c'])
        assert.deepEqual(await store.loadTasks(), [keep])
        await store.close()
        await store.open()
        assert.deepEqual(await store.loadTasks(), [keep])
      },
    ],
    [
      'deleteFinishedBefore removes finished tasks last changed before the time and nothing else: an unfinished task stays however old',
      async (t) => {
        const store = await subject.fresh(t)
        const at = 1_700_000_100_000
        const old = (id: string, status: TaskStatus, updatedAt: number): TaskRecord => task(id, 4, status, { updatedAt })
        const kept = [old('task-queued-old', 'queued', at - 90_000), old('task-running-old', 'running', at - 90_000), old('task-done-at', 'completed', at), old('task-done-new', 'cancelled', at + 5)]
        await store.writeTasks([old('task-done-old', 'completed', at - 1), old('task-failed-old', 'failed', at - 50_000), old('task-cancelled-old', 'cancelled', 0), ...kept])
        assert.equal(await store.deleteFinishedBefore(at), 3)
        assert.deepEqual(byId(await store.loadTasks()), byId(kept))
        assert.equal(await store.deleteFinishedBefore(at), 0, 'nothing left to remove')
      },
    ],
    [
      'deleteFinishedBeyond keeps the newest finished tasks by last change, whatever their order of submission or status, and removes the rest; unfinished tasks are neither removed nor counted',
      async (t) => {
        const store = await subject.fresh(t)
        const at = 1_700_000_100_000
        const fin = (id: string, status: TaskStatus, updatedAt: number, submittedAt = at - 1_000_000): TaskRecord => task(id, 4, status, { updatedAt, submittedAt })
        const unfinished = [fin('task-queued-old', 'queued', at - 90_000), fin('task-running-old', 'running', at - 80_000), fin('task-assigned-new', 'assigned', at + 90_000)]
        // Written in an order that is neither the submission order nor the finish order.
        const newest = [fin('task-c-newest', 'cancelled', at + 30, at - 5), fin('task-a-second', 'completed', at + 20, at - 900_000), fin('task-f-third', 'failed', at + 10, at - 10)]
        const older = [fin('task-z-fourth', 'completed', at, at - 1), fin('task-b-fifth', 'failed', at - 10, at - 3), fin('task-y-oldest', 'cancelled', 0, at)]
        await store.writeTasks([older[1]!, unfinished[0]!, newest[2]!, older[0]!, newest[0]!, unfinished[2]!, older[2]!, newest[1]!, unfinished[1]!])
        assert.equal(await store.deleteFinishedBeyond(10), 0, 'fewer finished than kept: nothing removed')
        assert.equal(await store.deleteFinishedBeyond(3), 3)
        assert.deepEqual(byId(await store.loadTasks()), byId([...unfinished, ...newest]))
        assert.equal(await store.deleteFinishedBeyond(3), 0, 'nothing left to remove')
        assert.equal(await store.deleteFinishedBeyond(0), 3, 'keep 0: every finished task goes')
        assert.deepEqual(byId(await store.loadTasks()), byId(unfinished))
      },
    ],
    [
      'deleteFinishedBeyond keeps exactly as many as asked when finished tasks share their time of last change',
      async (t) => {
        const store = await subject.fresh(t)
        const at = 1_700_000_100_000
        const tied = Array.from({ length: 6 }, (_, i) => task(`task-tied-${i}`, 4, i % 2 === 0 ? 'completed' : 'failed', { updatedAt: at }))
        await store.writeTasks([task('task-older', 4, 'completed', { updatedAt: at - 1 }), ...tied, task('task-newer', 4, 'cancelled', { updatedAt: at + 1 })])
        assert.equal(await store.deleteFinishedBeyond(4), 4)
        const left = await store.loadTasks()
        assert.equal(left.length, 4)
        assert.ok(left.some((x) => x.id === 'task-newer'), 'the newest is kept')
        assert.ok(!left.some((x) => x.id === 'task-older'), 'the oldest is removed')
      },
    ],
    [
      'lease: a free lease is taken at epoch 1, for ttl from now, with the holder\'s addresses, and reads back as taken',
      async (t) => {
        const store = await subject.fresh(t)
        assert.equal(await store.readLease(), null, 'no lease before the first acquire')
        const before = Date.now()
        const got = await store.acquireLease(ask('master-a', 30_000))
        assert.equal(got.acquired, true)
        assert.equal(got.lease.holder, 'master-a')
        assert.equal(got.lease.epoch, 1)
        assert.equal(got.lease.api, 'http://master-a.example:8080')
        assert.equal(got.lease.grpc, 'master-a.example:50051')
        // The store's clock, not ours: equal on one host; MongoDB's may be a little off.
        assert.ok(Math.abs(got.lease.expiresAt - (before + 30_000)) < 10_000, `expires ${got.lease.expiresAt - before} ms from now`)
        assert.deepEqual(await store.readLease(), got.lease)
      },
    ],
    [
      'lease: an acquire of a lease a live other master holds is refused, names the holder, and changes nothing',
      async (t) => {
        const store = await subject.fresh(t)
        const held = await store.acquireLease(ask('master-a'))
        const other = await subject.peer(t, store)
        const refused = await other.acquireLease(ask('master-b'))
        assert.equal(refused.acquired, false)
        assert.deepEqual(refused.lease, held.lease, 'the answer names the holder, its epoch and its addresses')
        assert.deepEqual(await store.readLease(), held.lease)
      },
    ],
    [
      'lease: once a lease has lapsed another master takes it at epoch + 1; its holder re-acquiring keeps its epoch',
      async (t) => {
        const store = await subject.fresh(t)
        const other = await subject.peer(t, store)
        assert.equal((await store.acquireLease(ask('master-a', 300))).lease.epoch, 1)
        const again = await store.acquireLease(ask('master-a', 300))
        assert.deepEqual([again.acquired, again.lease.epoch], [true, 1], 're-acquiring by the holder keeps the epoch')
        const taken = await acquireOnceLapsed(other, ask('master-b', 300))
        assert.equal(taken.acquired, true, 'taken once lapsed')
        assert.deepEqual([taken.lease.holder, taken.lease.epoch, taken.lease.api], ['master-b', 2, 'http://master-b.example:8080'])
        const back = await acquireOnceLapsed(store, ask('master-a', 60_000))
        assert.deepEqual([back.acquired, back.lease.holder, back.lease.epoch], [true, 'master-a', 3], 'every change of holder is one more')
        assert.deepEqual([(await store.acquireLease(ask('master-a'))).lease.epoch], [3])
      },
    ],
    [
      'lease: a renewal by the holder extends it at the same epoch; one by a deposed holder or at another epoch is refused and changes nothing',
      async (t) => {
        const store = await subject.fresh(t)
        const other = await subject.peer(t, store)
        const first = await store.acquireLease(ask('master-a', 300))
        assert.equal(await store.renewLease({ holder: 'master-a', epoch: 1, ttlMs: 60_000 }), true)
        const renewed = await store.readLease()
        assert.equal(renewed?.epoch, 1)
        assert.ok(renewed!.expiresAt > first.lease.expiresAt + 30_000, 'extended by the new ttl from now')
        assert.equal(await store.renewLease({ holder: 'master-a', epoch: 2, ttlMs: 60_000 }), false, 'at an epoch it does not hold')
        assert.equal(await other.renewLease({ holder: 'master-b', epoch: 1, ttlMs: 60_000 }), false, 'by a master that does not hold it')
        assert.deepEqual(await store.readLease(), renewed)
        // Deposed: master-b takes it once it lapses; master-a's renewal then changes nothing.
        assert.equal(await store.renewLease({ holder: 'master-a', epoch: 1, ttlMs: 200 }), true)
        const taken = await acquireOnceLapsed(other, ask('master-b'))
        assert.equal(taken.lease.epoch, 2)
        assert.equal(await store.renewLease({ holder: 'master-a', epoch: 1, ttlMs: 60_000 }), false, 'a deposed holder cannot renew')
        assert.deepEqual(await store.readLease(), taken.lease)
      },
    ],
    [
      'lease: a released lease is taken by another master at once, at epoch + 1; a release by anyone else changes nothing',
      async (t) => {
        const store = await subject.fresh(t)
        const other = await subject.peer(t, store)
        const held = await store.acquireLease(ask('master-a'))
        await other.releaseLease({ holder: 'master-b', epoch: 1 })
        await store.releaseLease({ holder: 'master-a', epoch: 2 })
        assert.deepEqual(await store.readLease(), held.lease, 'released only by its holder at its epoch')
        assert.equal((await other.acquireLease(ask('master-b'))).acquired, false)
        await store.releaseLease({ holder: 'master-a', epoch: 1 })
        const taken = await other.acquireLease(ask('master-b'))
        assert.deepEqual([taken.acquired, taken.lease.holder, taken.lease.epoch], [true, 'master-b', 2])
      },
    ],
    [
      'lease: bad requests are refused with CLOUDAI_BAD_FIELD (no holder, a ttl that is not a positive whole number, an epoch below 1)',
      async (t) => {
        const store = await subject.fresh(t)
        const bad = (err: unknown): boolean => isCloudaiError(err) && err.code === 'CLOUDAI_BAD_FIELD'
        await assert.rejects(store.acquireLease({ ...ask('x'), holder: '' }), bad)
        await assert.rejects(store.acquireLease(ask('x', 0)), bad)
        await assert.rejects(store.acquireLease(ask('x', 1.5)), bad)
        await assert.rejects(store.renewLease({ holder: 'x', epoch: 0, ttlMs: 1000 }), bad)
        assert.throws(() => store.fence(0), bad)
        assert.equal(await store.readLease(), null)
      },
    ],
    [
      'fencing: the writes of a deposed holder are refused with CLOUDAI_STALE_EPOCH and change nothing; the new holder\'s go through',
      async (t) => {
        const store = await subject.fresh(t)
        const other = await subject.peer(t, store)
        const a = await store.acquireLease(ask('master-a'))
        store.fence(a.lease.epoch)
        // Fenced at its own epoch, the leader writes as before.
        await store.writeWorkers({ upserts: [worker('w1'), worker('w22')], deletes: [] })
        await store.writeTasks([task('task-1', 1), task('task-done', 4, 'completed', { updatedAt: 1 }), task('task-old', 4, 'failed', { updatedAt: 2 })])
        const workersBefore = byId(await store.loadWorkers())
        const tasksBefore = byId(await store.loadTasks())
        // master-a is deposed: it released (or lapsed) and master-b took the lease.
        await store.releaseLease({ holder: 'master-a', epoch: a.lease.epoch })
        const b = await other.acquireLease(ask('master-b'))
        assert.equal(b.lease.epoch, a.lease.epoch + 1)
        await refusedStale(store.writeWorkers({ upserts: [worker('w1', { reconnects: 9 }), worker('w-new')], deletes: ['w22'] }), 'writeWorkers')
        await refusedStale(store.writeWorkers({ upserts: [worker('w1', { lastHeartbeat: 5 })], deletes: [], heartbeatsOnly: true }), 'a heartbeat write')
        await refusedStale(store.writeTasks([task('task-1', 2, 'assigned'), task('task-new', 1)]), 'writeTasks')
        await refusedStale(store.deleteTasks(['task-1']), 'deleteTasks')
        await refusedStale(store.deleteFinishedBefore(Number.MAX_SAFE_INTEGER), 'deleteFinishedBefore')
        await refusedStale(store.deleteFinishedBeyond(0), 'deleteFinishedBeyond')
        assert.deepEqual(byId(await other.loadWorkers()), workersBefore, 'no worker write of the deposed holder landed')
        assert.deepEqual(byId(await other.loadTasks()), tasksBefore, 'no task write of the deposed holder landed')
        // The new leader, fenced at its epoch, writes.
        other.fence(b.lease.epoch)
        await other.writeTasks([task('task-1', 2, 'assigned')])
        await other.writeWorkers({ upserts: [], deletes: ['w22'] })
        assert.equal(await other.deleteFinishedBeyond(1), 1)
        assert.deepEqual((await store.loadTasks()).find((x) => x.id === 'task-1'), task('task-1', 2, 'assigned'))
        assert.deepEqual(await store.loadWorkers(), [worker('w1')])
      },
    ],
    [
      'fencing: a fenced store with no lease stored refuses writes; fence(null) lifts the fence',
      async (t) => {
        const store = await subject.fresh(t)
        store.fence(1)
        await refusedStale(store.writeTasks([task('task-1', 1)]), 'a write with no lease stored')
        assert.deepEqual(await store.loadTasks(), [])
        store.fence(null)
        await store.writeTasks([task('task-1', 1)])
        assert.deepEqual(await store.loadTasks(), [task('task-1', 1)])
      },
    ],
    [
      'lease: concurrent acquires by two masters give exactly one winner, each time the lease is free',
      async (t) => {
        const store = await subject.fresh(t)
        const other = await subject.peer(t, store)
        let epoch = 0
        let holder = ''
        for (let round = 0; round < 8; round++) {
          const [x, y] = await Promise.all([store.acquireLease(ask('master-a')), other.acquireLease(ask('master-b'))])
          assert.equal([x, y].filter((r) => r.acquired).length, 1, `round ${round}: exactly one winner (${JSON.stringify([x, y])})`)
          const won = x.acquired ? x : y
          assert.deepEqual(x.lease, won.lease, 'both answers name the winner')
          assert.deepEqual(y.lease, won.lease, 'both answers name the winner')
          assert.equal(won.lease.epoch, won.lease.holder === holder ? epoch : epoch + 1)
          ;({ epoch, holder } = won.lease)
          await (x.acquired ? store : other).releaseLease({ holder, epoch })
        }
      },
    ],
  ]
  return cases
}

async function runContract(t: TestContext, subject: Subject): Promise<void> {
  for (const [name, run] of contract(subject)) await t.test(name, { skip: name.startsWith('fencing:') ? (subject.skipFencing ?? false) : false }, run)
}

test('memory store', async (t) => {
  await runContract(t, {
    async fresh(t) {
      const store = new MemoryStore()
      await store.open()
      t.after(() => store.close())
      return store
    },
    again: null,
    async peer(_t, store) {
      return (store as MemoryStore).share()
    },
  })
})

test('SQLite store', async (t) => {
  const dirs = new WeakMap<Store, string>()
  await runContract(t, {
    async fresh(t) {
      const dir = join(tempDir(t), 'data')
      const store = new SqliteStore(dir)
      dirs.set(store, dir)
      await store.open()
      t.after(() => store.close())
      return store
    },
    again: (store) => new SqliteStore(dirs.get(store)!),
    async peer(t, store) {
      const other = new SqliteStore(dirs.get(store)!)
      await other.open()
      t.after(() => other.close())
      return other
    },
  })
})

const MONGODB_URI = process.env.MONGODB_URI
const MONGO_SKIP = 'MONGODB_URI is not set: no MongoDB server on this machine; run MONGODB_URI=mongodb://127.0.0.1:27017 npm test'

test('MongoDB store', { skip: MONGODB_URI === undefined || MONGODB_URI === '' ? MONGO_SKIP : false }, async (t) => {
  const uri = MONGODB_URI!
  // One database for this run, emptied before each case and dropped at the end.
  const database = `cloudai_test_${process.pid}_${Date.now().toString(36)}`
  const admin = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 })
  await admin.connect()
  t.after(async () => {
    await admin.db(database).dropDatabase()
    await admin.close()
  })
  const config = { ...MONGO_STORE_DEFAULTS, uri, database, appName: 'cloudai-contract-test' }
  // Fenced writes are transactions, which a standalone server refuses: a replica set (even of one member) has them.
  const hello = await admin.db('admin').command({ hello: 1 })
  const replicated = typeof hello.setName === 'string' || hello.msg === 'isdbgrid'
  await runContract(t, {
    skipFencing: replicated ? false : 'this MongoDB server is not a replica set member: fenced writes need transactions (start mongod with --replSet)',
    async fresh(t) {
      await admin.db(database).dropDatabase()
      const store = new MongoStore(config)
      await store.open()
      t.after(() => store.close())
      return store
    },
    again: () => new MongoStore(config),
    async peer(t) {
      const other = new MongoStore(config)
      await other.open()
      t.after(() => other.close())
      return other
    },
  })

  await t.test('the collections are CloudAI\'s, with the indexes the master needs, and CloudAI\'s fields keep its types', async (t) => {
    await admin.db(database).dropDatabase()
    const store = new MongoStore(config)
    await store.open()
    t.after(() => store.close())
    await store.writeWorkers({ upserts: [fullWorker('w1')], deletes: [] })
    await store.writeTasks([task('task-1', 1)])
    const db = admin.db(database)
    const workerIndexes = await db.collection(WORKERS_COLLECTION).indexes()
    assert.ok(workerIndexes.some((i) => JSON.stringify(i.key) === '{"worker_id":1}' && i.unique === true), JSON.stringify(workerIndexes))
    const taskIndexes = (await db.collection(TASKS_COLLECTION).indexes()).map((i) => JSON.stringify(i.key))
    assert.ok(taskIndexes.includes('{"status":1,"submitted_at_ms":1}'), taskIndexes.join(' '))
    assert.ok(taskIndexes.includes('{"worker_id":1}'), taskIndexes.join(' '))
    assert.ok(taskIndexes.includes('{"status":1,"updated_at_ms":1}'), taskIndexes.join(' '))
    // $type checks on the server: Unix seconds as int64, as CloudAI wrote them.
    const typed = await db.collection(WORKERS_COLLECTION).countDocuments({
      worker_id: 'w1',
      worker_ip: { $type: 'string' },
      is_active: { $type: 'bool' },
      total_cpu: { $type: 'number' },
      registered_at: { $type: 'long', $eq: 1_700_000_000 },
      last_heartbeat: { $type: 'long', $eq: 1_700_000_002 },
    })
    assert.equal(typed, 1)
    // A second open of the same database finds the indexes there and leaves them be.
    const again = new MongoStore(config)
    await again.open()
    await again.close()
  })
})
