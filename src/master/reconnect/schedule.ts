// The per-worker re-dial schedule of the reconnection monitor: pure logic, time passed in.
//
// CloudAI's workers never dial the master: a worker that comes back waits for the master's next
// dial to it. One dial per interval (30 s) makes that wait 15 s on average. A worker that went
// inactive recently is the one most likely to come back soon (a restart, a reboot, a short network
// cut), so it is dialled often: first after about FIRST_DELAY_MS, then doubling, with jitter, up to
// about the fast cap (1.5 s), for the fast window (10 min) after it went inactive. A worker comes
// back at a uniformly random moment between two dials, so with gaps of at most the cap it is found
// half a gap later on average (p50 ≤ 1 s) and at worst one gap plus the dial later (p99 ≤ 3 s).
// After the window, and for a worker that was never connected to this master (registered offline,
// loaded from the store), only the monitor's pass dials it, once per interval; except one a load
// heard of a moment ago (a takeover, a restart), which joins as lost at the load (monitor.dialLoaded).
//
// The jitter is "equal jitter": each delay is random in [ceiling/2, ceiling]. It spreads a rack
// lost at the same moment over the budget instead of dialling it in one burst every 1.5 s, and the
// ceiling keeps the longest gap at the cap (the p99 depends on it).

export interface RedialOptions {
  /** How long after going inactive a worker is dialled often; 0: never (only the pass dials). */
  fastWindowMs: number
  /** The first re-dial after about this long (then doubling). */
  firstDelayMs?: number
  /** The longest gap between two dials within the window. */
  fastCapMs?: number
  /** The jitter's source (tests pin it). */
  random?: () => number
}

export const REDIAL_DEFAULTS = { fastWindowMs: 600_000, firstDelayMs: 250, fastCapMs: 1_500 } as const

/** The delay before the next re-dial of a worker whose `attempt`-th re-dial (from 0) is next. */
export function fastRedialDelay(attempt: number, firstDelayMs: number, capMs: number, random: () => number): number {
  const ceiling = Math.min(capMs, firstDelayMs * 2 ** Math.min(attempt, 30))
  return Math.round(ceiling / 2 + (ceiling / 2) * random())
}

interface Entry {
  lostAt: number
  attempt: number
  /** When the next re-dial is due; null while a dial to it is in flight. */
  dueAt: number | null
  /** Bumped when dueAt changes: heap entries with an older one are stale. */
  version: number
}

interface HeapItem {
  id: string
  dueAt: number
  version: number
}

/**
 * The workers inside their fast window and when each is due. A min-heap on the due time (stale
 * items skipped when they surface), so that a pass over thousands of recently lost workers costs a
 * log-time step per dial, not a scan.
 */
export class RedialSchedule {
  private readonly entries = new Map<string, Entry>()
  private readonly heap: HeapItem[] = []
  readonly fastWindowMs: number
  readonly firstDelayMs: number
  readonly fastCapMs: number
  private readonly random: () => number

  constructor(opts: RedialOptions) {
    this.fastWindowMs = opts.fastWindowMs
    this.firstDelayMs = opts.firstDelayMs ?? REDIAL_DEFAULTS.firstDelayMs
    this.fastCapMs = opts.fastCapMs ?? REDIAL_DEFAULTS.fastCapMs
    this.random = opts.random ?? Math.random
  }

  /** Workers inside their fast window. */
  get size(): number {
    return this.entries.size
  }

  has(id: string): boolean {
    return this.entries.has(id)
  }

  /** When `id` went inactive, if it is inside its fast window. */
  lostAt(id: string): number | null {
    return this.entries.get(id)?.lostAt ?? null
  }

  /** A worker went inactive at `at`: its first re-dial is due shortly. */
  lost(id: string, at: number): void {
    if (this.fastWindowMs <= 0) return
    const entry: Entry = { lostAt: at, attempt: 0, dueAt: null, version: 0 }
    this.entries.set(id, entry)
    this.due(id, entry, at + fastRedialDelay(0, this.firstDelayMs, this.fastCapMs, this.random))
  }

  /** The worker is active again, or unregistered: no more fast re-dials. */
  forget(id: string): void {
    this.entries.delete(id)
  }

  /** A dial to `id` started (by whoever): nothing is due for it until it settles. */
  dialStarted(id: string): void {
    const entry = this.entries.get(id)
    if (!entry) return
    entry.dueAt = null
    entry.version++
  }

  /**
   * A dial to `id` settled at `at` and the worker is still inactive: its next re-dial is due after
   * the next delay, or, past its window, it leaves the schedule (the pass dials it from then on).
   */
  dialSettled(id: string, at: number): void {
    const entry = this.entries.get(id)
    if (!entry) return
    if (at - entry.lostAt >= this.fastWindowMs) {
      this.entries.delete(id)
      return
    }
    entry.attempt++
    this.due(id, entry, at + fastRedialDelay(entry.attempt, this.firstDelayMs, this.fastCapMs, this.random))
  }

  /** The earliest due time (it may have passed), or null when nothing is due. */
  nextDueAt(): number | null {
    this.dropStale()
    return this.heap[0]?.dueAt ?? null
  }

  /** The most overdue worker due by `now`, taken off the schedule until its dial settles; or null. */
  takeDue(now: number): string | null {
    this.dropStale()
    const top = this.heap[0]
    if (!top || top.dueAt > now) return null
    this.pop()
    const entry = this.entries.get(top.id)!
    if (now - entry.lostAt >= this.fastWindowMs) {
      // Out of its window before this re-dial: the pass has it from now on.
      this.entries.delete(top.id)
      return this.takeDue(now)
    }
    entry.dueAt = null
    entry.version++
    return top.id
  }

  private due(id: string, entry: Entry, at: number): void {
    entry.dueAt = at
    entry.version++
    this.push({ id, dueAt: at, version: entry.version })
  }

  private dropStale(): void {
    for (;;) {
      const top = this.heap[0]
      if (!top) return
      const entry = this.entries.get(top.id)
      if (entry && entry.version === top.version && entry.dueAt === top.dueAt) return
      this.pop()
    }
  }

  private push(item: HeapItem): void {
    const h = this.heap
    h.push(item)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (h[parent]!.dueAt <= item.dueAt) break
      h[i] = h[parent]!
      i = parent
    }
    h[i] = item
  }

  private pop(): void {
    const h = this.heap
    const last = h.pop()!
    if (h.length === 0) return
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= h.length) break
      const r = l + 1
      const c = r < h.length && h[r]!.dueAt < h[l]!.dueAt ? r : l
      if (h[c]!.dueAt >= last.dueAt) break
      h[i] = h[c]!
      i = c
    }
    h[i] = last
  }
}
