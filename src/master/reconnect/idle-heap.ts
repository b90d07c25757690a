// A dial thread's heap after a burst. Thousands of dials at once (a fleet registered through the
// API, a pass over thousands of inactive workers) promote their channels and sockets to the old
// generation while they wait on their deadlines; once the burst is over the thread allocates
// nothing, and V8 collects only when something is allocated. So the heap it grew stays resident
// for as long as the thread is idle: after 10,000 workers registered through the API, the two dial
// threads held 32 and 50 MiB, 6 to 10 KiB per worker beside the main thread's 17 KiB of heap.
//
// A collection alone does not give it back: the few objects that live on (the thread's modules,
// its TLS context) are spread over every page, and a page is released only when it is empty. A
// compacting one does: in a probe of that shape, old space went from 40.5 MiB committed to 5 and
// the thread's RSS from 106 to 64 MiB. So a thread that did a burst and then has nothing in flight
// for IDLE_MS compacts its heap once: a few ms of the thread's own time, at the dial threads'
// lowered priority, never the main thread's. A thread that keeps dialling (inactive workers
// re-dialled every second) is never idle that long, and is left to V8.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

/** Nothing in flight for this long after a burst: the thread compacts. */
export const IDLE_MS = 2000
/** Dials since the last compaction that make a burst worth compacting after. */
export const BURST_DIALS = 256

/**
 * A compacting full collection of this thread's heap, or null where the runtime refuses (the heap
 * is then left to V8). A worker thread cannot be started with --expose-gc (Worker refuses V8
 * flags), so the flag is on only while one context that has `gc` is made (jest-leak-detector does
 * the same): no other context gets it. V8 compacts only the pages it deems fragmented enough, and
 * never all of them on request, so --compact-on-every-full-gc is on for the one collection. Both
 * flags are the process's, and read when a context is made or a collection starts: a collection
 * of another thread's that starts within those few milliseconds compacts too, and is only slower.
 */
export function compactingCollector(): (() => void) | null {
  let gc: unknown
  try {
    setFlagsFromString('--expose-gc')
    gc = runInNewContext('gc')
  } catch {
    return null
  } finally {
    setFlagsFromString('--no-expose-gc')
  }
  if (typeof gc !== 'function') return null
  const collect = gc as () => void
  return () => {
    // V8 picks the pages to evacuate from the live bytes its last marking found: a first
    // collection finds them, the compacting one then moves what lives on out of the sparse pages.
    collect()
    setFlagsFromString('--compact-on-every-full-gc')
    try {
      collect()
    } finally {
      setFlagsFromString('--no-compact-on-every-full-gc')
    }
  }
}

/** Counts a thread's batches in flight, and compacts its heap once it is idle after a burst. */
export class IdleHeap {
  private inFlight = 0
  private dialsSinceCompaction = 0
  private timer: NodeJS.Timeout | null = null
  /** Compactions done (tests). */
  compactions = 0

  constructor(
    private readonly compact: (() => void) | null = compactingCollector(),
    private readonly idleMs = IDLE_MS,
    private readonly burstDials = BURST_DIALS,
  ) {}

  /** A batch of `dials` started on this thread. */
  begin(dials: number): void {
    this.inFlight++
    this.dialsSinceCompaction += dials
    if (this.timer) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }

  /** A batch ended: each begin() is followed by one end(). */
  end(): void {
    this.inFlight--
    if (this.inFlight > 0 || this.compact === null || this.dialsSinceCompaction < this.burstDials || this.timer) return
    // Unref'd: a pool being closed does not wait for it.
    this.timer = setTimeout(() => {
      this.timer = null
      if (this.inFlight > 0) return
      this.dialsSinceCompaction = 0
      this.compactions++
      this.compact?.()
    }, this.idleMs).unref()
  }
}
