// A dial thread's heap after a burst. Thousands of dials at once (a fleet registered through the
// API, a pass over thousands of inactive workers) promote their channels and sockets to the old
// generation while they wait on their deadlines; once the burst is over the thread allocates
// nothing, and V8 starts a collection only when something is allocated. Measured after 10,000
// workers registered through the API: the two dial threads' heaps stayed at 32 and 50 MiB, about
// 8 KiB per worker between them. With the threads waiting on their event loop (not blocked in
// Atomics.wait, where no timer of theirs runs), 5,000 registrations still left 30 and 43 MiB there
// at the end of the run, with no collection meanwhile: V8's own memory reducer did not take it back.
//
// A collection alone does not give it back either (after one, 13 MiB of it was live): the few
// objects that live on are spread over every page, and a page is released only when it is empty.
// A compacting collection does. So a thread whose old space grew by GROWTH_BYTES since its last
// compaction, and which then has nothing in flight for IDLE_MS, compacts once: after the 10,000
// registrations the threads' heaps were 21.5 and 23 MiB. A thread that dials all the time (inactive
// workers re-dialled every second) is never idle that long, and one whose passes leave its heap
// where it was is left alone.
//
// V8 decides which pages to move, and compacts all of them only under --compact-on-every-full-gc,
// a flag of the process, not of the thread: it is on only for the one collection. Another thread's
// collection that starts within those milliseconds compacts too (a longer pause of that thread,
// once); the dial threads take turns through `lock`, so that none turns the flag off under
// another's collection. The collection's parallel work runs on V8's platform threads, which keep
// the process's priority, not the dial threads' lowered one.
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

/** Nothing in flight for this long: the thread looks at its heap. */
export const IDLE_MS = 2000
/**
 * Old space grown this much since the thread's last compaction (or its start): worth giving back.
 * The old space, not the whole heap: the young generation is committed up to its cap (8 MiB) by
 * any burst and is not what a compaction gives back.
 */
export const GROWTH_BYTES = 8 * 1024 * 1024

const COMPACT_FLAG = '--compact-on-every-full-gc'

/** Whether node was started with `flag`, in either spelling (V8 takes `_` for `-`): then it is left as it is. */
function startedWith(flag: string): boolean {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((given) => given.replaceAll('_', '-') === flag)
}

/** This thread's old space, committed bytes: what a burst grows and a compaction gives back. */
export function oldSpaceBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_size ?? 0
}

/**
 * V8's collector for this thread. A worker thread cannot be started with --expose-gc (Worker
 * refuses V8 flags), so, unless node was started with it, the flag is on while one context that
 * has `gc` is made (jest-leak-detector does the same), then off: no other context gets it. Null
 * where the runtime refuses.
 */
function collector(): (() => void) | null {
  const own = (globalThis as { gc?: unknown }).gc
  if (typeof own === 'function') return own as () => void
  let gc: unknown = null
  try {
    setFlagsFromString('--expose-gc')
    gc = runInNewContext('gc')
  } catch {
    gc = null
  } finally {
    setFlagsFromString('--no-expose-gc')
  }
  return typeof gc === 'function' ? (gc as () => void) : null
}

/**
 * A compacting full collection of this thread's heap, taken in turns with the other dial threads
 * through `lock` (one Int32 of a SharedArrayBuffer, 0 when free). 'busy' when another thread holds
 * the lock (try again later), 'unavailable' when the runtime refuses (it never will).
 */
export function compactingCollector(lock: Int32Array): () => 'compacted' | 'busy' | 'unavailable' {
  let gc: (() => void) | null | undefined
  const flagGiven = startedWith(COMPACT_FLAG)
  return () => {
    if (Atomics.compareExchange(lock, 0, 0, 1) !== 0) return 'busy'
    try {
      gc ??= collector()
      if (gc === null) return 'unavailable'
      // V8 picks the pages to move from the live bytes its last marking found: a first
      // collection finds them, the compacting one then empties the sparse pages.
      gc()
      if (flagGiven) {
        gc()
      } else {
        setFlagsFromString(COMPACT_FLAG)
        try {
          gc()
        } finally {
          setFlagsFromString('--no-compact-on-every-full-gc')
        }
      }
      return 'compacted'
    } finally {
      Atomics.store(lock, 0, 0)
    }
  }
}

/** Counts a thread's batches in flight, and compacts its heap once it is idle after it grew. */
export class IdleHeap {
  private inFlight = 0
  private timer: NodeJS.Timeout | null = null
  private baseline: number
  private gaveUp = false
  /** Compactions done (tests). */
  compactions = 0

  constructor(
    private readonly compact: () => 'compacted' | 'busy' | 'unavailable',
    /** The old space's committed bytes now. */
    private readonly heapBytes: () => number = oldSpaceBytes,
    private readonly idleMs = IDLE_MS,
    private readonly growthBytes = GROWTH_BYTES,
  ) {
    this.baseline = heapBytes()
  }

  /** A batch started on this thread. */
  begin(): void {
    this.inFlight++
    if (this.timer) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }

  /** A batch ended: each begin() is followed by one end(). */
  end(): void {
    if (this.inFlight > 0) this.inFlight--
    if (this.inFlight === 0) this.arm()
  }

  private arm(): void {
    if (this.timer || this.gaveUp) return
    // Unref'd: a pool being closed does not wait for it.
    this.timer = setTimeout(() => this.look(), this.idleMs).unref()
  }

  private look(): void {
    this.timer = null
    if (this.inFlight > 0 || this.heapBytes() - this.baseline < this.growthBytes) return
    let outcome: ReturnType<typeof this.compact>
    try {
      outcome = this.compact()
    } catch {
      // A collection that throws is V8's business, not the dials': the heap is left to V8.
      outcome = 'unavailable'
    }
    if (outcome === 'busy') return this.arm()
    if (outcome === 'unavailable') {
      this.gaveUp = true
      return
    }
    this.compactions++
    this.baseline = this.heapBytes()
  }
}
