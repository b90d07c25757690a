import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from '../../src/master/registry.js'
import { MemoryStore } from '../../src/store/memory.js'
import type { WorkerChanges } from '../../src/store/store.js'
import { StoreWriter } from '../../src/store/writer.js'
import { ManualClock } from '../support/clock.js'
import { memoryLogger } from '../support/log.js'

const specs = { cpu: 1, memory: 1, storage: 1, gpu: 0 }
const usage = { cpu: 1, memory: 2, storage: 3, gpu: 0 }

/** The in-memory store, recording each batch and able to fail on demand (an outage). */
class RecordingStore extends MemoryStore {
  readonly batches: WorkerChanges[] = []
  failing = false
  override async writeWorkers(changes: WorkerChanges): Promise<void> {
    if (this.failing) throw new Error('disk on fire')
    this.batches.push(structuredClone(changes))
    await super.writeWorkers(changes)
  }
}

const tick = () => new Promise((r) => setImmediate(r))

test('heartbeats are written in batches: one write per flush interval, never one per heartbeat', async () => {
  const clock = new ManualClock()
  const store = new RecordingStore()
  const registry = new Registry()
  const writer = new StoreWriter(store, registry, { log: memoryLogger().log, clock, heartbeatFlushMs: 1000 })
  writer.start()
  for (let i = 0; i < 50; i++) registry.register(`w${i}`, `h:${i + 1}`, 0)
  for (let i = 0; i < 50; i++) registry.connect(`w${i}`, { specs, reportedAddress: null }, 0)
  await tick()
  await tick()
  const before = store.batches.length
  for (let round = 0; round < 5; round++) for (let i = 0; i < 50; i++) registry.heartbeat(`w${i}`, usage, [], round)
  clock.advance(1000)
  await tick()
  assert.equal(store.batches.length - before, 1, '250 heartbeats, one batch')
  assert.equal(store.batches.at(-1)?.upserts.length, 50)
  await writer.close()
})

test('a failing store is retried; what changed meanwhile is written when it answers, latest state wins', async () => {
  const clock = new ManualClock()
  const store = new RecordingStore()
  const registry = new Registry()
  const { log, lines } = memoryLogger()
  const writer = new StoreWriter(store, registry, { log, clock, retryBaseMs: 100, retryCapMs: 1000 })
  writer.start()
  registry.register('keep', 'h:1', 0)
  assert.equal(await writer.flush(), true)

  store.failing = true
  registry.register('gone', 'h:2', 1)
  registry.register('new', 'h:3', 1)
  assert.equal(await writer.flush(), false)
  registry.unregister('gone')
  registry.connect('keep', { specs, reportedAddress: null }, 2)
  registry.markInactive('keep', 'heartbeat-timeout', 3)
  for (let i = 0; i < 5; i++) {
    clock.advance(1000)
    await tick()
  }
  assert.equal(writer.status().healthy, false)
  assert.equal(lines.filter((l) => l.level === 50).length, 1, 'the failure is logged once')

  store.failing = false
  clock.advance(1000)
  await tick()
  await tick()
  assert.equal(writer.status().healthy, true)
  const stored = (await store.loadWorkers()).sort((a, b) => a.id.localeCompare(b.id))
  assert.deepEqual(stored, registry.list().sort((a, b) => a.id.localeCompare(b.id)))
  assert.deepEqual(stored.map((w) => w.id), ['keep', 'new'])
  assert.ok(lines.some((l) => l.msg.includes('answering again')))
  await writer.close()
  assert.equal(clock.pending, 0)
})
