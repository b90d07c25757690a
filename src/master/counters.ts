// The layout of the master's hot counters: one SharedArrayBuffer, shared by the main thread, the
// dial pool's threads and the telemetry threads. Whichever thread does the work bumps the counter
// with Atomics; nothing is posted per increment. /metrics and the bench suite read the same memory
// through CounterReader.
//
// Slots are Uint32 and wrap at 2^32: Atomics.add on a Uint32Array is allocation-free (a BigInt64
// slot would allocate a BigInt per add). The reader turns wrapping slots into monotonic totals by
// adding each delta modulo 2^32, and is polled often enough that no slot wraps twice in between.

/** Plain counters, one Uint32 slot each. */
export const C = {
  DIAL_ATTEMPTS: 0,
  DIAL_SUCCESS: 1,
  DIAL_REJECTED: 2,
  DIAL_REFUSED: 3,
  DIAL_TIMEOUT: 4,
  DIAL_CANCELLED: 5,
  DIAL_ERROR: 6,
  HEARTBEATS_RECEIVED: 7,
  HEARTBEATS_REFUSED: 8,
  HEARTBEATS_PROCESSED: 9,
  HEARTBEATS_DROPPED: 10,
  HEARTBEAT_STREAMS_OPENED: 11,
  HEARTBEAT_STREAMS_ENDED: 12,
  HEARTBEAT_STREAMS_BROKEN: 13,
  TELEMETRY_THREAD_RESTARTS: 14,
  RECONNECTS: 15,
  FIRST_CONNECTS: 16,
  WS_OPENED: 17,
  WS_REFUSED_FULL: 18,
  WS_BAD_MESSAGES: 19,
  WS_SLOW_CLOSED: 20,
  WS_TELEMETRY_DROPPED: 21,
  HTTP_UNAUTHORIZED: 22,
  HTTP_BODY_TOO_LARGE: 23,
  WS_MESSAGE_TOO_LARGE: 24,
  HTTP_REFUSED_FRAMING: 25,
  HTTP_REFUSED_URI_TOO_LONG: 26,
  HTTP_REFUSED_HEADERS_TOO_LARGE: 27,
  HTTP_REFUSED_HOST: 28,
  HTTP_REFUSED_ORIGIN: 29,
  HTTP_REFUSED_MEDIA_TYPE: 30,
  /** gRPC connections accepted (below --grpc-max-connections). */
  GRPC_CONNECTIONS_ACCEPTED: 31,
  GRPC_REFUSED_MAX_CONNECTIONS: 32,
  GRPC_REFUSED_PREFACE_TIMEOUT: 33,
  GRPC_REFUSED_BAD_PREFACE: 34,
  GRPC_REFUSED_TLS_HANDSHAKE: 35,
  /** Task ids heartbeats listed as running that this master never assigned to that worker. */
  HEARTBEAT_UNKNOWN_TASKS: 36,
  /** CancelTask calls sent because a heartbeat listed a task that is no longer the worker's. */
  STALE_TASK_CANCELS: 37,
  /** GET /api/tasks/{id}/logs readers refused because MAX_LOG_READERS were served. */
  LOG_READERS_REFUSED: 38,
  /** Workers the heartbeat timeout marked inactive (src/master/liveness.ts). */
  HEARTBEAT_TIMEOUTS: 39,
} as const

export type CounterName = keyof typeof C
const COUNTER_SLOTS = 48

/** Latency histograms: fixed upper bounds (inclusive, Prometheus `le`), plus +Inf. */
export const HISTOGRAMS = {
  /** One MasterRegister dial, start to answer, in ms. */
  dialMs: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000],
  /** A worker's disconnection (inactive) to its reconnection (active again), in ms. */
  reconnectMs: [100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 900_000, 3_600_000],
  /** Operator registration to the worker's first RegisterWorker, in ms. */
  firstConnectMs: [100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 900_000, 3_600_000],
  /** A heartbeat's arrival on the main thread to the end of its processing on a telemetry thread, in µs. */
  // Threads drain on a 250 ms tick: the buckets are finest from 10 ms to 1 s, where the delays are.
  heartbeatDelayUs: [50, 500, 5000, 10_000, 25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 500_000, 1_000_000, 2_500_000],
} as const satisfies Record<string, readonly number[]>

export type HistogramName = keyof typeof HISTOGRAMS
const HISTOGRAM_NAMES = Object.keys(HISTOGRAMS) as HistogramName[]
// Per histogram: one slot per bound, one for +Inf, then count and sum (in the histogram's unit).
const HISTOGRAM_STRIDE = 16

function histogramBase(name: HistogramName): number {
  return COUNTER_SLOTS + HISTOGRAM_NAMES.indexOf(name) * HISTOGRAM_STRIDE
}

const TOTAL_SLOTS = COUNTER_SLOTS + HISTOGRAM_NAMES.length * HISTOGRAM_STRIDE

/**
 * The writer's side: a view over the shared buffer. Created once on the main thread; threads build
 * their own view from `buffer` (SharedArrayBuffers cross postMessage and workerData by reference).
 */
export class Counters {
  readonly buffer: SharedArrayBuffer
  private readonly slots: Uint32Array

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(TOTAL_SLOTS * 4)
    if (this.buffer.byteLength !== TOTAL_SLOTS * 4) throw new Error(`counter buffer has ${this.buffer.byteLength} bytes, this build's layout needs ${TOTAL_SLOTS * 4}`)
    this.slots = new Uint32Array(this.buffer)
  }

  add(counter: number, n = 1): void {
    Atomics.add(this.slots, counter, n)
  }

  /** Records one observation: its bucket, the count and the sum (rounded to whole units). */
  observe(name: HistogramName, value: number): void {
    const bounds = HISTOGRAMS[name]
    const base = histogramBase(name)
    let i = 0
    while (i < bounds.length && value > bounds[i]!) i++
    Atomics.add(this.slots, base + i, 1)
    Atomics.add(this.slots, base + bounds.length + 1, 1)
    Atomics.add(this.slots, base + bounds.length + 2, value > 0 ? Math.round(value) >>> 0 : 0)
  }

  /** Raw slot value (wrapping); CounterReader is the way to read totals. */
  raw(slot: number): number {
    return Atomics.load(this.slots, slot)
  }
}

export interface HistogramSnapshot {
  bounds: readonly number[]
  /** Cumulative counts per bound (Prometheus `le`), the last one for +Inf. */
  cumulative: number[]
  count: number
  sum: number
}

/**
 * The reader's side, on the main thread: monotonic totals from wrapping slots. `poll()` must run
 * more often than any slot can wrap (the master polls every few seconds; a slot wraps after 2^32
 * increments); every read polls first.
 */
export class CounterReader {
  private readonly last: Uint32Array
  private readonly totals: Float64Array

  constructor(private readonly counters: Counters) {
    this.last = new Uint32Array(TOTAL_SLOTS)
    this.totals = new Float64Array(TOTAL_SLOTS)
  }

  poll(): void {
    for (let i = 0; i < TOTAL_SLOTS; i++) {
      const now = this.counters.raw(i)
      this.totals[i]! += (now - this.last[i]!) >>> 0
      this.last[i] = now
    }
  }

  get(counter: CounterName): number {
    this.poll()
    return this.totals[C[counter]]!
  }

  /** Every plain counter at once (one poll). */
  all(): Record<CounterName, number> {
    this.poll()
    const out = {} as Record<CounterName, number>
    for (const [name, slot] of Object.entries(C) as [CounterName, number][]) out[name] = this.totals[slot]!
    return out
  }

  histogram(name: HistogramName): HistogramSnapshot {
    this.poll()
    const bounds = HISTOGRAMS[name]
    const base = histogramBase(name)
    const cumulative: number[] = []
    let running = 0
    for (let i = 0; i <= bounds.length; i++) {
      running += this.totals[base + i]!
      cumulative.push(running)
    }
    return { bounds, cumulative, count: this.totals[base + bounds.length + 1]!, sum: this.totals[base + bounds.length + 2]! }
  }
}

/** The dial outcome's counter. */
export const DIAL_OUTCOME_COUNTER = {
  success: C.DIAL_SUCCESS,
  rejected: C.DIAL_REJECTED,
  refused: C.DIAL_REFUSED,
  timeout: C.DIAL_TIMEOUT,
  cancelled: C.DIAL_CANCELLED,
  error: C.DIAL_ERROR,
} as const
