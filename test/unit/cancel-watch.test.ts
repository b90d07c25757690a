import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Worker } from 'node:worker_threads'
import { CANCEL_GENERATION, CancelWatch, cancelFlagsBuffer } from '../../src/master/reconnect/cancel-watch.js'

// Cancellation of dials through shared memory: a flag per dial and one generation word that the
// canceller bumps and notifies, so a thread keeps one waiter for all of its dials.

/** What the main thread's CancelSlots does to cancel a slot. */
function cancel(flags: Int32Array, slot: number): void {
  Atomics.store(flags, slot, 1)
  Atomics.add(flags, CANCEL_GENERATION, 1)
  Atomics.notify(flags, CANCEL_GENERATION)
}

test('a cancel aborts only the dial of its slot; the others stay watched and a later cancel reaches them', async () => {
  const flags = cancelFlagsBuffer()
  const watch = new CancelWatch(flags)
  const aborted: number[] = []
  const woke = (n: number): Promise<void> => new Promise((resolve) => {
    const check = (): void => (aborted.length >= n ? resolve() : void setImmediate(check))
    check()
  })
  for (const slot of [1, 2, 3]) watch.watch(slot, () => aborted.push(slot))
  cancel(flags, 2)
  await woke(1)
  assert.deepEqual(aborted, [2])
  cancel(flags, 3)
  await woke(2)
  assert.deepEqual(aborted, [2, 3])
})

test('a slot already cancelled aborts at once; an unwatched slot is not aborted by its cancel', async () => {
  const flags = cancelFlagsBuffer()
  const watch = new CancelWatch(flags)
  const aborted: number[] = []
  cancel(flags, 5)
  watch.watch(5, () => aborted.push(5))
  assert.deepEqual(aborted, [5])
  const unwatch = watch.watch(6, () => aborted.push(6))
  unwatch()
  watch.watch(7, () => aborted.push(7))
  cancel(flags, 6)
  cancel(flags, 7)
  await new Promise<void>((resolve) => {
    const check = (): void => (aborted.length >= 2 ? resolve() : void setImmediate(check))
    check()
  })
  assert.deepEqual(aborted, [5, 7])
})

test('one cancel wakes the waiter on another thread, which aborts that dial only', async (t) => {
  const flags = cancelFlagsBuffer()
  const url = new URL('../../src/master/reconnect/cancel-watch.js', import.meta.url).href
  const worker = new Worker(`
    const { workerData, parentPort } = require('node:worker_threads')
    // A waiter does not keep a thread alive (a dial thread lives on the pool's port): this does.
    setInterval(() => {}, 1000)
    import(workerData.url).then(({ watchFor }) => {
      const w = watchFor(workerData.flags)
      for (const slot of [10, 11]) w.watch(slot, () => parentPort.postMessage(slot))
      parentPort.postMessage('watching')
    })
  `, { eval: true, workerData: { url, flags } })
  t.after(() => worker.terminate())
  const messages: unknown[] = []
  let next: (() => void) | null = null
  worker.on('message', (m) => {
    messages.push(m)
    next?.()
  })
  const until = (n: number): Promise<void> => new Promise((resolve) => {
    next = () => messages.length >= n && resolve()
    next()
  })
  await until(1)
  cancel(flags, 11)
  await until(2)
  assert.deepEqual(messages, ['watching', 11])
})
