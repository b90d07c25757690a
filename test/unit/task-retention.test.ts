import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseTaskInput } from '../../src/master/task-input.js'
import { TaskPruner } from '../../src/master/task-retention.js'
import { TaskTable } from '../../src/master/tasks.js'
import { Registry } from '../../src/master/registry.js'
import type { TaskRecord, TaskStatus } from '../../src/shared/types.js'
import { StoreJournal } from '../../src/store/journal.js'
import { FlakyStore } from '../support/flaky-store.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'

// The task table's indexes (counts, lists, snapshots, finish order) and retention, on a clock the
// test moves by hand, over the real journal and the in-memory store.

const strict = { acceptWhileDegraded: false }
const DAY = 86_400_000
const STATUSES: readonly TaskStatus[] = ['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled']
const FINAL = new Set<TaskStatus>(['completed', 'failed', 'cancelled'])

function setup(opts: { retentionMs?: number; maxFinished?: number; outputTailBytes?: number } = {}) {
  const clock = new ManualClock()
  const store = new FlakyStore()
  const journal = new StoreJournal(store, new Registry(), { log: memoryLogger('silent').log, limit: 100_000, retryBaseMs: 10, retryCapMs: 20 })
  journal.start(true)
  const table = new TaskTable(journal, () => clock.now(), { retentionMs: opts.retentionMs ?? DAY, maxFinished: opts.maxFinished ?? 1000, outputTailBytes: opts.outputTailBytes ?? 64 * 1024 })
  journal.on('tasks-written', (ids) => table.markDurable(ids))
  return { clock, store, journal, table }
}

/** A small deterministic PRNG (mulberry32): the same sequence on every run. */
function prng(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** What a scan over every task says: the reference the indexes must agree with. */
function scanCounts(all: TaskRecord[]): Record<TaskStatus, number> {
  const c = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>
  for (const t of all) c[t.status]++
  return c
}

const newestFirst = (a: TaskRecord, b: TaskRecord): number => b.submittedAt - a.submittedAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

async function finish(table: TaskTable, id: string, to: TaskStatus = 'completed'): Promise<void> {
  assert.ok(await table.transition(id, 'assigned', { workerId: 'w1', attempt: 1 }, null))
  assert.ok(await table.transition(id, to, { exitCode: 0 }, to === 'completed' ? null : 'x'))
}

test('counts, pages of the task list, the unfinished tasks and the newest finished equal a fresh scan through a random sequence of transitions', async (t) => {
  const { clock, journal, table } = setup({ maxFinished: 40, retentionMs: 30_000 })
  t.after(() => journal.close())
  const random = prng(16)
  const moves: Partial<Record<TaskStatus, TaskStatus[]>> = { queued: ['assigned', 'cancelled', 'failed'], assigned: ['running', 'queued', 'completed', 'failed', 'cancelled'], running: ['queued', 'completed', 'failed', 'cancelled'] }
  for (let step = 0; step < 600; step++) {
    // Several tasks share a submission time now and then: the list breaks ties by id.
    if (random() < 0.7) clock.advance(Math.floor(random() * 400))
    const live = [...table.values()].filter((x) => !FINAL.has(x.status))
    if (live.length === 0 || random() < 0.3) {
      await table.submit(parseTaskInput({ command: 'true' }), strict)
    } else {
      const task = live[Math.floor(random() * live.length)]!
      const options = moves[task.status]!
      const to = options[Math.floor(random() * options.length)]!
      assert.ok(await table.transition(task.id, to, to === 'assigned' ? { workerId: `w${step % 3}`, attempt: task.attempt + 1 } : {}, null))
    }
    if (step % 50 === 49) table.prune()
    const all = [...table.values()]
    assert.deepEqual(table.counts(), scanCounts(all), `counts at step ${step}`)
    if (step % 20 !== 0) continue
    for (const status of [undefined, ...STATUSES]) {
      const matching = all.filter((x) => status === undefined || x.status === status).sort(newestFirst)
      for (const [offset, limit] of [[0, 5], [3, 7], [0, 1000], [matching.length, 10]] as const) {
        const page = table.list({ status, offset, limit })
        assert.equal(page.total, matching.length, `total of ${status ?? 'all'} at step ${step}`)
        assert.deepEqual(page.tasks.map((x) => x.id), matching.slice(offset, offset + limit).map((x) => x.id), `page ${offset}+${limit} of ${status ?? 'all'} at step ${step}`)
      }
    }
    const unfinished = all.filter((x) => !FINAL.has(x.status)).sort((a, b) => -newestFirst(a, b))
    assert.deepEqual(table.unfinished().map((x) => x.id), unfinished.map((x) => x.id))
    const finished = all.filter((x) => FINAL.has(x.status)).sort((a, b) => b.updatedAt - a.updatedAt)
    assert.deepEqual(table.recentlyFinished(10).map((x) => x.updatedAt), finished.slice(0, 10).map((x) => x.updatedAt))
  }
  assert.ok(table.counts().completed > 0 && table.counts().queued > 0, 'the sequence visited every kind of state')
})

test('a finished task is removed from memory and the store once its retention has passed, not before; an unfinished one never', async (t) => {
  const { clock, store, journal, table } = setup({ retentionMs: 60_000 })
  t.after(() => journal.close())
  const done = await table.submit(parseTaskInput({ command: 'true' }), strict)
  const old = await table.submit(parseTaskInput({ command: 'sleep 1000' }), strict)
  assert.ok(await table.transition(old.id, 'assigned', { workerId: 'w1', attempt: 1 }, null))
  await finish(table, done.id)
  clock.advance(59_999)
  assert.deepEqual(table.prune(), [], 'not yet: 1 ms short of its retention')
  assert.equal(table.get(done.id)?.status, 'completed')
  clock.advance(1)
  assert.deepEqual(table.prune(), [done.id])
  assert.equal(table.get(done.id), undefined)
  assert.deepEqual(table.counts(), { queued: 0, assigned: 1, running: 0, completed: 0, failed: 0, cancelled: 0 })
  assert.deepEqual(table.list({ offset: 0, limit: 10 }).tasks.map((x) => x.id), [old.id])
  assert.ok(await journal.sync())
  assert.deepEqual((await store.loadTasks()).map((x) => x.id), [old.id], 'the store no longer holds it')
  clock.advance(365 * DAY)
  assert.deepEqual(table.prune(), [], 'an assigned task is kept however old')
  assert.equal(table.get(old.id)?.status, 'assigned')
})

test('past --max-finished-tasks the oldest finished go first, by when they finished, not when they were submitted', async (t) => {
  const { clock, store, journal, table } = setup({ maxFinished: 3 })
  t.after(() => journal.close())
  const ids: string[] = []
  for (let i = 0; i < 5; i++) ids.push((await table.submit(parseTaskInput({ command: 'true' }), strict)).id)
  const queued = await table.submit(parseTaskInput({ command: 'true' }), strict)
  // Finished in the order 4, 2, 0, 3, 1.
  for (const i of [4, 2, 0, 3, 1]) {
    clock.advance(1000)
    await finish(table, ids[i]!, i % 2 === 0 ? 'completed' : 'failed')
  }
  assert.deepEqual(table.prune().sort(), [ids[4]!, ids[2]!].sort())
  assert.deepEqual(new Set([...table.values()].map((x) => x.id)), new Set([ids[0]!, ids[3]!, ids[1]!, queued.id]))
  assert.deepEqual(table.recentlyFinished(10).map((x) => x.id), [ids[1]!, ids[3]!, ids[0]!])
  assert.ok(await journal.sync())
  assert.equal((await store.loadTasks()).length, 4)
})

test('a prune while the store is down takes effect in memory at once and in the store once it answers', async (t) => {
  const { clock, store, journal, table } = setup({ retentionMs: 1000 })
  t.after(() => journal.close())
  const a = await table.submit(parseTaskInput({ command: 'true' }), strict)
  const b = await table.submit(parseTaskInput({ command: 'true' }), strict)
  // A final state is in the store before it is in memory (TaskTable.settle), so both are there.
  await finish(table, a.id)
  await finish(table, b.id)
  store.failing = true
  clock.advance(1000)
  assert.deepEqual(table.prune().sort(), [a.id, b.id].sort())
  assert.equal(table.size, 0)
  assert.equal(await journal.sync(), false, 'the removals could not be written')
  assert.equal((await store.loadTasks()).length, 2, 'the store still holds both while it fails')
  const recovered = new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  store.failing = false
  await recovered
  assert.deepEqual(await store.loadTasks(), [])
})

test('tasks loaded from a store that still holds them (a store that answered late) stay pruned while their removal is journalled', async (t) => {
  const { clock, store, journal, table } = setup({ retentionMs: 1000, maxFinished: 1 })
  t.after(() => journal.close())
  const a = await table.submit(parseTaskInput({ command: 'true' }), strict)
  const b = await table.submit(parseTaskInput({ command: 'true' }), strict)
  const c = await table.submit(parseTaskInput({ command: 'sleep 60' }), strict)
  await finish(table, a.id)
  clock.advance(10)
  await finish(table, b.id)
  // The store is unreachable now: a is pruned past --max-finished-tasks, in memory only.
  store.failing = true
  assert.deepEqual(table.prune(), [a.id])
  assert.equal(journal.removalPending(a.id), true)
  assert.equal(journal.removalPending(b.id), false)
  assert.equal(await journal.sync(), false, 'the removal could not be written')
  // What loadLate loads: everything the store holds (its reads answer; only writes fail here).
  const held = await store.loadTasks()
  assert.deepEqual(held.map((x) => x.id).sort(), [a.id, b.id, c.id].sort(), 'the store still holds the pruned task')
  assert.equal(table.load(held), 0, 'nothing new: a stays pruned, b and c are in memory')
  assert.equal(table.get(a.id), undefined)
  assert.deepEqual(table.counts(), { queued: 1, assigned: 0, running: 0, completed: 1, failed: 0, cancelled: 0 })

  const recovered = new Promise<void>((resolve) => journal.once('recovered', () => resolve()))
  store.failing = false
  await recovered
  assert.equal(journal.removalPending(a.id), false, 'written: no longer pending')
  assert.deepEqual((await store.loadTasks()).map((x) => x.id).sort(), [b.id, c.id].sort())
})

test('the pruner prunes at start (tasks loaded past their retention) and on its timer, and stops with close()', async (t) => {
  const { clock, journal, table } = setup({ retentionMs: 10_000 })
  t.after(() => journal.close())
  const at = clock.now()
  const record = (id: string, status: TaskStatus, updatedAt: number): TaskRecord => ({
    ...parseTaskInput({ command: 'true' }),
    id, status, workerId: null, attempts: 1, attempt: 1, submittedAt: updatedAt - 5, assignedAt: null, startedAt: null, finishedAt: updatedAt, exitCode: 0, reason: null,
    logsTail: '', updatedAt, history: [{ status: 'queued', at: updatedAt - 5, workerId: null, reason: null }, { status, at: updatedAt, workerId: null, reason: null }],
  })
  table.load([record('task-old', 'completed', at - 20_000), record('task-recent', 'cancelled', at - 1000), record('task-queued', 'queued', at - 99_000)])
  const pruner = new TaskPruner({ tasks: table, retentionMs: 10_000, log: memoryLogger('silent').log, clock })
  pruner.start()
  assert.deepEqual([...table.values()].map((x) => x.id).sort(), ['task-queued', 'task-recent'])
  clock.advance(9000)
  assert.equal(table.get('task-recent')?.status, 'cancelled')
  clock.advance(2500)
  assert.equal(table.get('task-recent'), undefined, 'a tick after its retention removed it')
  pruner.close()
  assert.equal(clock.pending, 0, 'no timer left')
})

test('the master keeps only the end of a task\'s output, cut on a character boundary, in memory and in the store; a longer stored tail is cut when loaded', async (t) => {
  const { store, journal, table } = setup({ outputTailBytes: 1024 })
  t.after(() => journal.close())
  const task = await table.submit(parseTaskInput({ command: 'true' }), strict)
  assert.ok(await table.transition(task.id, 'assigned', { workerId: 'w1', attempt: 1 }, null))
  const output = `${'x'.repeat(5000)}${'é🚀'.repeat(300)}end\n`
  assert.ok(await table.transition(task.id, 'completed', { logsTail: output, exitCode: 0 }, null))
  const kept = table.get(task.id)!.logsTail
  assert.ok(Buffer.byteLength(kept) <= 1024 && Buffer.byteLength(kept) > 1016, `${Buffer.byteLength(kept)} bytes kept`)
  assert.ok(output.endsWith(kept), 'the end of the output')
  assert.ok(!kept.includes('\ufffd'), 'no character cut in half')
  assert.equal((await store.loadTasks())[0]!.logsTail, kept)

  const other = new TaskTable(journal, Date.now, { retentionMs: DAY, maxFinished: 10, outputTailBytes: 2048 })
  other.load([{ ...table.get(task.id)!, id: 'task-long', logsTail: output }])
  assert.ok(Buffer.byteLength(other.get('task-long')!.logsTail) <= 2048)
})
