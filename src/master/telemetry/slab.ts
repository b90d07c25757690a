// Where lanes live: a few large SharedArrayBuffers ("chunks") of LANES_PER_CHUNK lanes each, grown a
// chunk at a time and reused lane by lane. Opening a lane is clearing a few KiB and handing out an
// index; a telemetry thread gets each chunk once (through workerData, or a message when the slab
// grows), not a buffer per lane.
//
// The next chunk is added when the current one is half used, and the threads fault its pages in
// (prefault()) as soon as they get it: a page's first write costs a page fault, ~10 µs, which would
// otherwise land on the main thread when it opens the lane or writes its first heartbeat.
import { Lane, laneBytes, type LaneLayout } from './lane.js'

export const LANES_PER_CHUNK = 256

export class LaneSlab {
  readonly chunks: SharedArrayBuffer[] = []
  private readonly lanes: Lane[] = []
  /**
   * Freed lanes, oldest first. A lane's thread may still be draining it when it is freed (it checks
   * the lane's owner before it starts, not at every sample), so a lane is reused only once that
   * thread has finished a drain round since: `rounds` reads the thread's count, `fence` is the count
   * when the lane was freed. No clock: a stalled thread (a long GC, a loaded machine) or a clock jump
   * cannot make a lane change hands under it.
   */
  private readonly free: { index: number; fence: number; rounds: () => number }[] = []
  private readonly stride: number

  constructor(
    readonly layout: LaneLayout,
    /** Called when a chunk is added, before any of its lanes is handed out. */
    private readonly onChunk: (index: number, buffer: SharedArrayBuffer) => void,
  ) {
    this.stride = laneBytes(layout)
  }

  /** Lanes handed out so far, in use or free (the slab's size). */
  get size(): number {
    return this.lanes.length
  }

  get bytes(): number {
    return this.chunks.length * LANES_PER_CHUNK * this.stride
  }

  /** Adds a chunk (the hub adds the first one before its threads start, so that they get it at once). */
  grow(): void {
    const buffer = new SharedArrayBuffer(LANES_PER_CHUNK * this.stride)
    this.chunks.push(buffer)
    this.onChunk(this.chunks.length - 1, buffer)
  }

  /** A lane not in use: a freed one its thread is done with, else the next one (adding a chunk when needed). */
  allocate(): number {
    const oldest = this.free[0]
    if (oldest && oldest.rounds() !== oldest.fence) {
      this.free.shift()
      return oldest.index
    }
    const index = this.lanes.length
    const chunk = Math.floor(index / LANES_PER_CHUNK)
    while (chunk >= this.chunks.length) this.grow()
    // Half of the last chunk used: the next one now, so that its pages are in before it is needed.
    if (chunk === this.chunks.length - 1 && index % LANES_PER_CHUNK === LANES_PER_CHUNK / 2) this.grow()
    this.lanes.push(new Lane({ buffer: this.chunks[chunk]!, byteOffset: (index % LANES_PER_CHUNK) * this.stride, layout: this.layout }))
    return index
  }

  /** @param rounds the drain rounds of the thread that hosted the lane (its queue's count) */
  release(index: number, rounds: () => number): void {
    this.lane(index).free()
    this.free.push({ index, fence: rounds(), rounds })
  }

  lane(index: number): Lane {
    return this.lanes[index]!
  }
}

const PAGE_WORDS = 1024 // int32 words in a 4 KiB page

/**
 * Faults every page of a chunk in, from a telemetry thread. An atomic add of 0 writes without
 * changing anything, so it is safe on lanes already in use.
 */
export function prefault(buffer: SharedArrayBuffer): void {
  const words = new Int32Array(buffer)
  for (let i = 0; i < words.length; i += PAGE_WORDS) Atomics.add(words, i, 0)
}

/** The lane at `index` of a slab whose chunks are `chunks` (a thread's side); null if its chunk has not arrived. */
export function laneIn(chunks: readonly (SharedArrayBuffer | undefined)[], layout: LaneLayout, index: number): Lane | null {
  const buffer = chunks[Math.floor(index / LANES_PER_CHUNK)]
  if (!buffer) return null
  return new Lane({ buffer, byteOffset: (index % LANES_PER_CHUNK) * laneBytes(layout), layout })
}
