import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import type { TaskRecord } from '../../src/shared/types.js'
import { StoreJournal } from '../../src/store/journal.js'
import type { MemoryStore } from '../../src/store/memory.js'
import { FlakyStore } from '../support/flaky-store.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'

const specs = { cpu: 1, memory: 1, storage: 1, gpu: 0 }
const usage = { cpu: 1, memory: 2, storage: 3, gpu: 0 }
const tick = () => new Promise((r) => setImmediate(r))

function task(id: string, status: TaskRecord['status'], version: number): TaskRecord {
  const history = Array.from({ length: version }, (_, i) => ({ status: i === version - 1 ? status : ('queued' as const), at: i, workerId: null, reason: null }))
  return {
    id, name: id, command: 'true', dockerImage: '', req: { cpu: 0, memory: 0, storage: 0, gpu: 0 }, targetWorkerId: null, userId: '', timeoutS: 0, maxAttempts: 3, env: {},
    status, workerId: null, attempts: 0, attempt: 0, submittedAt: 0, assignedAt: null, startedAt: null, finishedAt: null, exitCode: null, reason: null, logsTail: '', updatedAt: version, history,
  }
}

function setup(opts: { limit?: number } = {}) {
  const clock = new ManualClock()
  const store = new FlakyStore()
  const registry = new Registry()
  const { log, lines } = memoryLogger()
  const journal = new StoreJournal(store, registry, { log, clock, limit: opts.limit ?? 10_000, heartbeatFlushMs: 1000, retryBaseMs: 100, retryCapMs: 1000 })
  return { clock, store, registry, journal, lines }
}

/** Lets retries fire: the backoff is at most 1 s here. */
async function advance(clock: ManualClock, ms: number): Promise<void> {
  for (let t = 0; t < ms; t += 100) {
    clock.advance(100)
    await tick()
  }
}

test('heartbeats are written in batches: one write per flush interval, never one per heartbeat', async () => {
  const { clock, store, registry, journal } = setup()
  journal.start(true)
  for (let i = 0; i < 50; i++) registry.register(`w${i}`, `h:${i + 1}`, 0)
  for (let i = 0; i < 50; i++) registry.connect(`w${i}`, { specs, reportedAddress: null }, 0)
  assert.equal(await journal.sync(), true)
  const before = store.workerBatches.length
  for (let round = 0; round < 5; round++) for (let i = 0; i < 50; i++) registry.heartbeat(`w${i}`, usage, [], round)
  clock.advance(1000)
  await tick()
  await tick()
  assert.equal(store.workerBatches.length - before, 1, '250 heartbeats, one batch')
  assert.equal(store.workerBatches.at(-1)?.upserts.length, 50)
  assert.equal((await store.loadWorkers()).find((w) => w.id === 'w7')?.lastHeartbeat, 4)
  await journal.close()
  assert.equal(clock.pending, 0)
})

test('heartbeat-only changes wait for the heartbeat interval: a state change written meanwhile does not carry them, and close writes them', async () => {
  const { clock, store, registry, journal } = setup()
  journal.start(true)
  registry.register('a', 'h:1', 0)
  registry.register('b', 'h:2', 0)
  registry.connect('a', { specs, reportedAddress: null }, 1)
  registry.connect('b', { specs, reportedAddress: null }, 1)
  assert.equal(await journal.sync(), true)
  const stored = async (id: string): Promise<number | null | undefined> => (await store.loadWorkers()).find((w) => w.id === id)?.lastHeartbeat

  registry.heartbeat('a', usage, [], 5)
  registry.register('c', 'h:3', 6)
  assert.equal(await journal.sync(), true)
  assert.deepEqual(store.workerBatches.at(-1)?.upserts.map((w) => w.id), ['c'], 'the registration alone')
  assert.equal(await stored('a'), 1, 'the heartbeat waits for its interval')

  clock.advance(1000)
  await tick()
  await tick()
  assert.equal(await stored('a'), 5, 'written once the interval came round')
  assert.equal(store.workerBatches.at(-1)?.heartbeatsOnly, true)

  registry.heartbeat('b', usage, [], 7)
  registry.markInactive('a', 'heartbeat-timeout', 8)
  assert.equal(await journal.sync(), true)
  assert.equal((await store.loadWorkers()).find((w) => w.id === 'a')?.isActive, false, 'a state change is written at once')
  assert.equal(await stored('b'), 1)
  await journal.close()
  assert.equal(await stored('b'), 7, 'close writes the heartbeats still waiting')
  assert.equal(clock.pending, 0)
})

test('a large fleet\'s heartbeats go in writes of at most 1,000 workers, so other writes wait for one part, not all', async () => {
  const { clock, store, registry, journal } = setup()
  journal.start(true)
  for (let i = 0; i < 2500; i++) registry.register(`w${i}`, `h:${i + 1}`, 0)
  for (let i = 0; i < 2500; i++) registry.connect(`w${i}`, { specs, reportedAddress: null }, 0)
  assert.equal(await journal.sync(), true)
  const before = store.workerBatches.length
  for (let i = 0; i < 2500; i++) registry.heartbeat(`w${i}`, usage, [], 9)
  clock.advance(1000)
  for (let i = 0; i < 10 && store.workerBatches.length - before < 3; i++) await tick()
  assert.deepEqual(store.workerBatches.slice(before).map((b) => [b.upserts.length, b.heartbeatsOnly]), [[1000, true], [1000, true], [500, true]])
  assert.ok((await store.loadWorkers()).every((w) => w.lastHeartbeat === 9))
  await journal.close()
})

test('a write journalled while the fleet\'s heartbeats go out is written after the part under way, and its sync() resolves then, not after every part', async () => {
  const { clock, store, registry, journal } = setup()
  journal.start(true)
  for (let i = 0; i < 2500; i++) registry.register(`w${i}`, `h:${i + 1}`, 0)
  for (let i = 0; i < 2500; i++) registry.connect(`w${i}`, { specs, reportedAddress: null }, 0)
  assert.equal(await journal.sync(), true)
  let release!: () => void
  store.holdHeartbeats = new Promise((r) => (release = r))
  for (let i = 0; i < 2500; i++) registry.heartbeat(`w${i}`, usage, [], 9)
  clock.advance(1000)
  for (let i = 0; i < 10 && store.heartbeatParts < 1; i++) await tick()
  assert.equal(store.heartbeatParts, 1, 'the first of three parts is under way')

  journal.recordTask(task('t1', 'queued', 1))
  let synced: boolean | null = null
  journal.sync().then((ok) => (synced = ok), () => (synced = false))
  // The next parts wait too: only the one under way finishes.
  let releaseRest!: () => void
  const first = release
  store.holdHeartbeats = new Promise((r) => (releaseRest = r))
  first()
  for (let i = 0; i < 10 && store.heartbeatParts < 2; i++) await tick()
  await tick()
  assert.equal(synced, true, 'told once its task is written, while the second part waits')
  assert.deepEqual(store.taskBatches, [['t1:queued']])
  assert.equal(store.heartbeatParts, 2)
  releaseRest()
  store.holdHeartbeats = null
  await journal.close()
  assert.ok((await store.loadWorkers()).every((w) => w.lastHeartbeat === 9))
})

test('changes in one tick go out as one write per run of workers and of tasks, in order', async () => {
  const { store, registry, journal } = setup()
  journal.start(true)
  registry.register('a', 'h:1', 0)
  registry.register('b', 'h:2', 0)
  journal.recordTask(task('t1', 'queued', 1))
  journal.recordTask(task('t1', 'assigned', 2))
  registry.unregister('b')
  assert.equal(await journal.sync(), true)
  assert.deepEqual(store.workerBatches.map((b) => [b.upserts.map((w) => w.id), b.deletes]), [[['a'], []], [[], ['b']]])
  assert.deepEqual(store.taskBatches, [['t1:assigned']], 'one task write, with only the latest state of t1')
  await journal.close()
})

test('an outage: callers never wait, the failure is logged once, and the store catches up in order when it answers', async () => {
  const { clock, store, registry, journal, lines } = setup()
  journal.start(true)
  registry.register('keep', 'h:1', 0)
  assert.equal(await journal.sync(), true)

  store.failing = true
  registry.register('gone', 'h:2', 1)
  registry.register('new', 'h:3', 1)
  journal.recordTask(task('t1', 'queued', 1))
  assert.equal(await journal.sync(), false, 'the write failed: sync says so at once')
  assert.equal(journal.healthy, false)
  assert.equal(await journal.sync(), false, 'and does not wait while the store is down')
  registry.unregister('gone')
  registry.connect('keep', { specs, reportedAddress: null }, 2)
  registry.heartbeat('keep', usage, [], 3)
  registry.markInactive('keep', 'heartbeat-timeout', 4)
  journal.recordTask(task('t1', 'running', 3))
  await advance(clock, 5000)
  const status = journal.status()
  assert.equal(status.healthy, false)
  assert.ok(status.backlog >= 3, `backlog ${status.backlog}`)
  assert.equal(status.outages, 1)
  assert.ok(status.outageMs >= 5000)
  assert.equal(lines.filter((l) => l.level === 50).length, 1, 'the failure is logged once, not per retry')

  store.failing = false
  await advance(clock, 1100)
  assert.equal(journal.healthy, true)
  assert.equal(journal.status().backlog, 0)
  const stored = (await store.loadWorkers()).sort((a, b) => a.id.localeCompare(b.id))
  assert.deepEqual(stored, registry.list().sort((a, b) => a.id.localeCompare(b.id)), 'the store equals memory')
  assert.deepEqual(stored.map((w) => w.id), ['keep', 'new'])
  assert.deepEqual((await store.loadTasks()).map((t) => t.status), ['running'])
  assert.ok(lines.some((l) => l.msg.includes('answering again')))
  await journal.close()
  assert.equal(clock.pending, 0)
})

test('a retry under way during an outage still counts what it carries as backlog (the store holding it, then refusing it)', async () => {
  const { clock, store, registry, journal } = setup()
  journal.start(true)
  store.failing = true
  registry.register('w1', 'h:1', 0)
  registry.register('w2', 'h:2', 0)
  assert.equal(await journal.sync(), false)
  assert.equal(journal.status().backlog, 2)
  // The next retry's write waits in the store (a lock held elsewhere: SQLite's busy wait) before it fails.
  let release!: () => void
  store.holdWorkers = new Promise<void>((r) => (release = r))
  const before = store.workerBatches.length
  const failures = store.failures
  await advance(clock, 1000)
  assert.equal(journal.healthy, false)
  assert.equal(store.failures, failures, 'the retry is held in the store, not yet refused')
  assert.equal(journal.status().backlog, 2, 'the batch in the store\'s hands is still backlog')
  release()
  store.holdWorkers = null
  await tick()
  await tick()
  assert.equal(store.failures, failures + 1, 'the held retry was the one refused')
  assert.equal(journal.status().backlog, 2, 'refused: put back, still 2')
  assert.equal(store.workerBatches.length, before, 'nothing was written')
  store.failing = false
  await advance(clock, 1100)
  assert.equal(journal.healthy, true)
  assert.equal(journal.status().backlog, 0)
  await journal.close()
  assert.equal(clock.pending, 0)
})

test('a failure part way through keeps only what was not written, ahead of newer changes', async () => {
  const { clock, store, registry, journal } = setup()
  journal.start(true)
  store.failTasks = true
  registry.register('a', 'h:1', 0)
  journal.recordTask(task('t1', 'queued', 1))
  assert.equal(await journal.sync(), false)
  assert.deepEqual((await store.loadWorkers()).map((w) => w.id), ['a'], 'the worker run before the failing task run was written')
  assert.equal(journal.status().backlog, 1, 'only the task waits')
  journal.recordTask(task('t2', 'queued', 1))
  store.failTasks = false
  await advance(clock, 1100)
  assert.deepEqual(store.taskBatches, [['t1:queued', 't2:queued']])
  await journal.close()
})

test('bounded: a full journal coalesces to the latest state per worker and task, dropping nothing', async () => {
  const { clock, store, registry, journal, lines } = setup({ limit: 100 })
  journal.start(true)
  store.failing = true
  registry.register('w', 'h:1', 0)
  await journal.sync()
  for (let v = 1; v <= 1000; v++) journal.recordTask(task(`t${v % 20}`, v % 2 === 0 ? 'running' : 'assigned', v))
  for (let i = 0; i < 30; i++) registry.register(`x${i}`, `h:${i + 2}`, 0)
  const status = journal.status()
  assert.ok(status.backlog <= 100, `backlog ${status.backlog} within the limit`)
  assert.ok(lines.some((l) => l.msg.includes('coalesced')))
  store.failing = false
  await advance(clock, 1100)
  const tasks = new Map((await store.loadTasks()).map((t) => [t.id, t.history.length]))
  assert.equal(tasks.size, 20)
  for (let i = 0; i < 20; i++) assert.equal(tasks.get(`t${i}`), 1000 - ((20 - i) % 20), `t${i} holds its latest version`)
  assert.equal((await store.loadWorkers()).length, 31)
  await journal.close()
})

test('a store down at start: the journal opens it when it answers, loads it first, then writes what memory changed', async () => {
  const clock = new ManualClock()
  const store = new FlakyStore()
  const registry = new Registry()
  await store.writeWorkers({ upserts: [{ ...registry.register('old', 'h:9', 0).worker }], deletes: [] })
  registry.unregister('old')
  store.unreachable = true
  let loads = 0
  const late = new StoreJournal(store, registry, {
    log: memoryLogger().log,
    clock,
    limit: 100,
    retryBaseMs: 100,
    retryCapMs: 1000,
    onLateOpen: async () => {
      loads++
      registry.load(await store.loadWorkers())
    },
  })
  late.start(false)
  assert.equal(late.healthy, false)
  registry.register('fresh', 'h:1', 1)
  await advance(clock, 2000)
  assert.equal(loads, 0)
  store.unreachable = false
  await advance(clock, 1100)
  assert.equal(loads, 1, 'loaded once')
  assert.equal(late.healthy, true)
  assert.deepEqual(registry.list().map((w) => w.id).sort(), ['fresh', 'old'], 'memory holds both')
  assert.deepEqual((await store.loadWorkers()).map((w) => w.id).sort(), ['fresh', 'old'], 'and so does the store')
  await late.close()
  assert.equal(clock.pending, 0)
})

test('task states written at once in the same tick share one store write', async () => {
  const { store, journal } = setup()
  journal.start(true)
  await Promise.all([journal.writeTaskNow(task('t1', 'queued', 1)), journal.writeTaskNow(task('t2', 'completed', 4)), journal.writeTaskNow(task('t3', 'failed', 3))])
  assert.deepEqual(store.taskBatches, [['t1:queued', 't2:completed', 't3:failed']])
  store.failing = true
  const results = await Promise.allSettled([journal.writeTaskNow(task('t4', 'queued', 1)), journal.writeTaskNow(task('t5', 'queued', 1))])
  assert.deepEqual(results.map((r) => r.status === 'rejected' && (r.reason as { code?: string }).code), ['CLOUDAI_STORE_DEGRADED', 'CLOUDAI_STORE_DEGRADED'], 'a failed write fails every caller')
  assert.equal(store.failures, 1, 'in one attempt')
  store.failing = false
  await journal.close()
})

test('a new task is written at once, and refused with CLOUDAI_STORE_DEGRADED while the store is down', async () => {
  const { clock, store, journal } = setup()
  journal.start(true)
  await journal.writeTaskNow(task('t1', 'queued', 1))
  assert.equal((await store.loadTasks()).length, 1)
  store.failing = true
  await assert.rejects(journal.writeTaskNow(task('t2', 'queued', 1)), (e: Error & { code?: string }) => e.code === 'CLOUDAI_STORE_DEGRADED')
  assert.equal(journal.healthy, false, 'the failure puts the journal in degraded mode')
  await assert.rejects(journal.writeTaskNow(task('t3', 'queued', 1)), (e: Error & { code?: string }) => e.code === 'CLOUDAI_STORE_DEGRADED' && /not answering/.test(e.message))
  store.failing = false
  await advance(clock, 1100)
  assert.equal(journal.healthy, true, 'a ping finds the store back with nothing to write')
  await journal.close()
})

test('changes journalled in one run of microtasks, each awaiting sync(), go to the store in one write (a drain placing many tasks)', async () => {
  const { store, journal } = setup()
  journal.start(true)
  // As the task table does for each placement of a drain: journal the change, then await sync().
  const synced = Array.from({ length: 100 }, (_, i) =>
    Promise.resolve().then(() => {
      journal.recordTask(task(`t${i}`, 'assigned', 2))
      return journal.sync()
    }),
  )
  assert.deepEqual([...new Set(await Promise.all(synced))], [true])
  assert.equal(store.taskBatches.length, 1, 'one write for all of them')
  assert.equal(store.taskBatches[0]!.length, 100)
  await journal.close()
})

/**
 * Fences `store` at epoch 1 and gives a second master's handle on the same data (share()), whose
 * takeOver() deposes the first: it releases, and the second takes the lease at epoch 2.
 */
async function deposed(store: FlakyStore): Promise<{ other: MemoryStore; takeOver: () => Promise<void> }> {
  const mine = await store.acquireLease({ holder: 'master-a', ttlMs: 60_000, api: null, grpc: null })
  store.fence(mine.lease.epoch)
  const other = store.share()
  return {
    other,
    async takeOver() {
      await store.releaseLease({ holder: 'master-a', epoch: mine.lease.epoch })
      const got = await other.acquireLease({ holder: 'master-b', ttlMs: 60_000, api: null, grpc: null })
      assert.equal(got.lease.epoch, 2)
    },
  }
}

test('a write refused as stale (a deposed master) is never retried: the journal emits fenced once, drops what it holds and what comes later, counted and logged, and writes no more', async () => {
  const { clock, store, registry, journal, lines } = setup()
  const { other, takeOver } = await deposed(store)
  journal.start(true)
  registry.register('w1', 'h:1', 0)
  journal.recordTask(task('t1', 'queued', 1))
  assert.equal(await journal.sync(), true, 'fenced at its own epoch, the leader writes')
  let writes = 0
  const write = store.writeTasks.bind(store)
  store.writeTasks = async (tasks) => {
    writes++
    return write(tasks)
  }
  const events: unknown[][] = []
  journal.on('fenced', (...args) => events.push(args))
  await takeOver()
  journal.recordTask(task('t1', 'assigned', 2))
  journal.recordTask(task('t2', 'queued', 1))
  registry.connect('w1', { specs, reportedAddress: null }, 0)
  assert.equal(await journal.sync(), false, 'the write was refused')
  assert.deepEqual(events, [[1, 2, 3]], 'fenced at epoch 1, the store at 2, three changes dropped')
  assert.deepEqual(journal.fenced && { epoch: journal.fenced.epoch, current: journal.fenced.current, discarded: journal.fenced.discarded }, { epoch: 1, current: 2, discarded: 3 })
  assert.equal(writes, 1, 'one attempt')
  // Later changes are dropped and counted, nothing is retried however long, no write goes out.
  journal.recordTask(task('t3', 'queued', 1))
  journal.recordTaskRemoval('t1')
  await advance(clock, 10_000)
  assert.equal(writes, 1, 'never retried')
  assert.equal(journal.fenced?.discarded, 5)
  assert.equal(journal.removalPending('t1'), false, 'a removal dropped is not pending')
  await assert.rejects(journal.writeTaskNow(task('t4', 'queued', 1)), (e: Error & { code?: string }) => e.code === 'CLOUDAI_STALE_EPOCH')
  assert.equal(writes, 1, 'writeTaskNow does not write either')
  assert.equal(await journal.sync(), false)
  assert.ok(lines.some((l) => l.level === 50 && /refused a write of epoch 1 \(it is at epoch 2\).*dropped 3 change/.test(String(l.msg))), 'logged as an error with the count')
  assert.deepEqual((await other.loadTasks()).map((t) => `${t.id}:${t.status}`), ['t1:queued'], 'the store holds what the new leader has, no write of the deposed one')
  await journal.close()
  assert.equal(writes, 1, 'close writes nothing either')
  assert.equal(clock.pending, 0, 'no timer left')
  assert.equal(events.length, 1, 'fenced is emitted once')
})

test('a task written at once by a deposed master is refused with CLOUDAI_STALE_EPOCH, and the journal is fenced from then on', async () => {
  const { store, journal } = setup()
  const { other, takeOver } = await deposed(store)
  journal.start(true)
  await journal.writeTaskNow(task('t1', 'queued', 1))
  await takeOver()
  const fenced = new Promise<unknown[]>((resolve) => journal.once('fenced', (...args) => resolve(args)))
  await assert.rejects(journal.writeTaskNow(task('t2', 'queued', 1)), (e: Error & { code?: string; details?: Record<string, unknown> }) => e.code === 'CLOUDAI_STALE_EPOCH' && e.details?.current === 2)
  assert.deepEqual(await fenced, [1, 2, 0])
  assert.equal(journal.healthy, true, 'not an outage: nothing to retry')
  // But not a store to report healthy (/healthz, /api/status, cloudai_store_up): it drops everything.
  const status = journal.status()
  assert.equal(status.healthy, false)
  assert.match(String(status.lastError), /epoch/)
  journal.recordTask(task('t3', 'queued', 1))
  assert.equal(await journal.sync(), false)
  assert.deepEqual((await other.loadTasks()).map((t) => t.id), ['t1'])
  await journal.close()
})

test('a batch in the store\'s hands when a task written at once is refused as stale is dropped and counted, not put back: no backlog left that nothing writes', async () => {
  const { clock, store, registry, journal } = setup()
  const { other, takeOver } = await deposed(store)
  journal.start(true)
  await journal.writeTaskNow(task('t1', 'queued', 1))
  await takeOver()
  // A flush of two worker changes waits in the store (its lock held elsewhere)...
  let release!: () => void
  store.holdWorkers = new Promise<void>((r) => (release = r))
  registry.register('w1', 'h:1', 0)
  registry.register('w2', 'h:2', 0)
  const synced = journal.sync()
  await tick()
  assert.equal(journal.status().backlog, 2, 'the batch in the store\'s hands')
  // ...while a task written at once is refused: the journal is fenced with nothing else held.
  await assert.rejects(journal.writeTaskNow(task('t2', 'queued', 1)), (e: Error & { code?: string }) => e.code === 'CLOUDAI_STALE_EPOCH')
  assert.equal(journal.fenced?.discarded, 0)
  release()
  store.holdWorkers = null
  assert.equal(await synced, false, 'the held batch was refused too')
  assert.equal(journal.status().backlog, 0, 'dropped, not put back')
  assert.equal(journal.fenced?.discarded, 2, 'and counted with what the fence dropped')
  await advance(clock, 10_000)
  assert.deepEqual((await other.loadWorkers()).map((w) => w.id), [], 'nothing of the deposed master reached the store')
  await journal.close()
  assert.equal(journal.status().backlog, 0)
  assert.equal(clock.pending, 0, 'no timer left')
})
