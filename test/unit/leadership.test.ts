import assert from 'node:assert/strict'
import { mock, test, type TestContext } from 'node:test'
import { Leadership, leaseTtlMs } from '../../src/master/leadership.js'
import { MemoryStore } from '../../src/store/memory.js'
import type { LeaseStore } from '../../src/store/lease.js'
import { memoryLogger } from '../support/log.js'

// The master's side of the lease (src/master/leadership.ts) against the memory store's lease, on
// mocked time: Date (the store's clock) and setTimeout move together, by hand.

const RENEW = 100
const TIMEOUT = 1000

/** Lets promises settle between timer steps (setImmediate is not mocked). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

async function advance(ms: number, step = 10, each?: () => void): Promise<void> {
  for (let done = 0; done < ms; done += step) {
    mock.timers.tick(Math.min(step, ms - done))
    await settle()
    each?.()
  }
}

/** The store's lease, with renewals the test can hold back (a stalled store, a paused link). */
class HeldRenewals implements LeaseStore {
  holding = false
  private held: (() => void)[] = []
  constructor(readonly store: MemoryStore) {}
  acquireLease: LeaseStore['acquireLease'] = (req) => this.store.acquireLease(req)
  renewLease: LeaseStore['renewLease'] = async (req) => {
    if (this.holding) await new Promise<void>((resolve) => this.held.push(resolve))
    return this.store.renewLease(req)
  }
  releaseLease: LeaseStore['releaseLease'] = (req) => this.store.releaseLease(req)
  readLease: LeaseStore['readLease'] = () => this.store.readLease()
  fence: LeaseStore['fence'] = (epoch) => this.store.fence(epoch)
  letGo(): void {
    this.holding = false
    for (const r of this.held.splice(0)) r()
  }
}

function leadership(t: TestContext, lease: LeaseStore, masterId: string): Leadership {
  const l = new Leadership({ lease, masterId, renewMs: RENEW, timeoutMs: TIMEOUT, log: memoryLogger('silent').log, now: () => Date.now(), address: () => ({ api: `http://${masterId}:8080`, grpc: `${masterId}:50051` }) })
  t.after(() => l.close())
  return l
}

function mockTime(t: TestContext): void {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 })
  t.after(() => mock.timers.reset())
}

test('the lease TTL in the store is never shorter than the lease timeout, so the store lets it lapse only after its holder stopped', () => {
  for (const timeout of [300, 1000, 5000, 60_000, 600_000]) {
    assert.ok(leaseTtlMs(timeout) > timeout, `${timeout}ms`)
    // ...and not so much longer that a takeover after a crash waits noticeably more.
    assert.ok(leaseTtlMs(timeout) <= timeout * 1.01 + 20, `${timeout}ms`)
  }
})

test('a leader whose renewals get no answer stops leading once the lease timeout has passed since it sent the last successful one, and says so once', async (t) => {
  mockTime(t)
  const lease = new HeldRenewals(new MemoryStore())
  const a = leadership(t, lease, 'm-a')
  const lost: string[] = []
  a.on('lost', (why) => lost.push(why))
  assert.equal((await a.acquire()).acquired, true)
  assert.equal(a.epoch, 1)
  // The first renewal is sent at +100 ms and answered: the deadline is +1100 ms.
  await advance(RENEW)
  const sentAt = Date.now()
  lease.holding = true
  await advance(TIMEOUT - 20)
  assert.equal(a.leading, true, 'still inside its timeout')
  await advance(20 + 10)
  assert.ok(Date.now() >= sentAt + TIMEOUT)
  assert.equal(a.leading, false)
  assert.equal(lost.length, 1)
  assert.match(lost[0]!, /not renewed within --lease-timeout/)
  // A renewal that comes back now changes nothing: past the deadline the leader has stopped.
  lease.letGo()
  await advance(RENEW * 3)
  assert.equal(a.leading, false)
  assert.equal(lost.length, 1)
})

test('the timeout is checked on every read: after a pause the first read says "not leading" even before any timer ran', async (t) => {
  mockTime(t)
  const a = leadership(t, new MemoryStore(), 'm-a')
  await a.acquire()
  // Date moves on without the timers running (a SIGSTOP), as a callback of I/O sees it.
  mock.timers.setTime(Date.now() + TIMEOUT + 1)
  let lostFirst = false
  a.on('lost', () => (lostFirst = true))
  assert.equal(a.leading, false)
  assert.equal(lostFirst, true, 'lost was emitted synchronously, before the read returned')
})

test('a renewal the store refuses (another master took the lease) deposes the leader at once', async (t) => {
  mockTime(t)
  const store = new MemoryStore()
  const a = leadership(t, store, 'm-a')
  await a.acquire()
  // Another master takes the lease the way a standby does once it lapsed.
  const lapse = await store.readLease()
  await store.releaseLease({ holder: 'm-a', epoch: lapse!.epoch })
  await store.share().acquireLease({ holder: 'm-b', ttlMs: 5000, api: null, grpc: null })
  const lost: string[] = []
  a.on('lost', (why) => lost.push(why))
  await advance(RENEW + 10)
  assert.equal(a.leading, false)
  assert.match(lost[0]!, /refused the renewal/)
})

test('a standby takes the lease at the next epoch only after the stalled leader has stopped: never two leaders', async (t) => {
  mockTime(t)
  const store = new MemoryStore()
  const held = new HeldRenewals(store)
  const a = leadership(t, held, 'm-a')
  const b = leadership(t, store.share(), 'm-b')
  await a.acquire()
  const acquired: number[] = []
  b.on('acquired', (epoch) => acquired.push(epoch))
  b.waitForLease()
  await advance(RENEW * 3)
  assert.deepEqual(acquired, [], 'the standby waits while the leader renews')
  assert.deepEqual(b.leader(), { epoch: 1, api: 'http://m-a:8080', grpc: 'm-a:50051', holder: 'm-a' })
  held.holding = true
  await advance(TIMEOUT * 3, 5, () => assert.ok(!(a.leading && b.leading), `two leaders at ${Date.now()}`))
  assert.deepEqual(acquired, [2])
  assert.equal(b.leading, true)
  assert.equal(a.leading, false)
  // The stalled renewal comes back: refused (epoch 1 is no longer the lease's), nothing changes.
  held.letGo()
  await advance(RENEW)
  assert.equal(b.leading, true)
  assert.equal(a.leading, false)
})

test('release lets a standby take over at its next poll, without waiting for the lease to lapse', async (t) => {
  mockTime(t)
  const store = new MemoryStore()
  const a = leadership(t, store, 'm-a')
  const b = leadership(t, store.share(), 'm-b')
  await a.acquire()
  b.waitForLease()
  await advance(RENEW * 2)
  await a.release()
  assert.equal(a.leading, false)
  await advance(RENEW + 10)
  assert.equal(b.leading, true)
  assert.equal(b.epoch, 2)
})

test('a standby never takes a live lease held in its own --master-id (another process with the same id)', async (t) => {
  mockTime(t)
  const store = new MemoryStore()
  const a = leadership(t, store, 'm-same')
  const b = leadership(t, store.share(), 'm-same')
  await a.acquire()
  b.waitForLease()
  await advance(RENEW * 5)
  assert.equal(b.leading, false)
  assert.equal(a.leading, true)
})
