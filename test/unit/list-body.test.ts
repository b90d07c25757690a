import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setImmediate as turn } from 'node:timers/promises'
import { CHUNK_BYTES, type ListBody, ListBodyWriter, listBodyText, type StreamTarget, TURN_BYTES } from '../../src/master/api/list-body.js'

/**
 * uWS's side of a streamed answer, as its HttpResponse behaves: tryEnd takes what the socket has
 * room for (`room`, null: all) and says whether it took the chunk whole and whether the response is
 * complete; getWriteOffset counts the body bytes taken; onWritable's handler runs when room is made.
 */
class Socket implements StreamTarget {
  readonly received: Buffer[] = []
  offset = 0
  calls = 0
  complete = false
  private handler: ((offset: number) => boolean) | null = null

  constructor(private room: number | null = null) {}

  cork(cb: () => void): this {
    cb()
    return this
  }

  tryEnd(chunk: Uint8Array, total: number): [boolean, boolean] {
    assert.equal(this.complete, false, 'no write after the response is complete')
    this.calls++
    const bytes = Buffer.from(chunk)
    const taken = this.room === null ? bytes.length : Math.min(this.room, bytes.length)
    if (this.room !== null) this.room -= taken
    this.received.push(bytes.subarray(0, taken))
    this.offset += taken
    this.complete = this.offset === total
    return [taken === bytes.length, this.complete]
  }

  getWriteOffset(): number {
    return this.offset
  }

  onWritable(handler: (offset: number) => boolean): this {
    this.handler = handler
    return this
  }

  /** The client read `bytes`: room for as much, and uWS calls the handler until it takes its chunk. */
  drain(bytes: number | null): void {
    this.room = bytes === null ? null : (this.room ?? 0) + bytes
    this.handler?.(this.offset)
  }

  get text(): string {
    return Buffer.concat(this.received).toString('utf8')
  }
}

function body(items: string[]): ListBody {
  const open = '{"workers":['
  const close = ']}'
  return { open, items, close, bytes: Buffer.byteLength(open + items.join(',') + close) }
}

const items = (n: number, size = 700): string[] => Array.from({ length: n }, (_, i) => JSON.stringify({ worker_id: `w${i}`, pad: 'x'.repeat(size) }))

/** `outcome.err` is undefined until the writer reports. */
function write(socket: Socket, b: ListBody): { finished: Promise<Error | null>; writer: ListBodyWriter; outcome: { err?: Error | null } } {
  const outcome: { err?: Error | null } = {}
  let settle!: (err: Error | null) => void
  const finished = new Promise<Error | null>((resolve) => (settle = resolve))
  const writer = new ListBodyWriter(socket, b, (err) => {
    outcome.err = err
    settle(err)
  })
  writer.start()
  return { finished, writer, outcome }
}

test('a long list goes out byte for byte over several turns of the loop, no more than a turn\'s share at a time', async () => {
  const b = body(items(8000))
  assert.ok(b.bytes > 4 * TURN_BYTES)
  const socket = new Socket()
  const { finished } = write(socket, b)
  // The first turn stops at its share: the rest waits for later turns, other work runs between.
  assert.ok(socket.offset >= TURN_BYTES && socket.offset < TURN_BYTES + CHUNK_BYTES + 1024, `first turn wrote ${socket.offset}`)
  assert.equal(socket.complete, false)
  await turn()
  assert.ok(socket.offset < 2 * (TURN_BYTES + CHUNK_BYTES + 1024), `two turns wrote ${socket.offset}`)
  assert.equal(await finished, null)
  assert.equal(socket.complete, true)
  assert.equal(socket.text, listBodyText(b))
  assert.deepEqual(JSON.parse(socket.text).workers.length, 8000)
})

test('a client that reads slowly holds the rest back, and the list resumes from the very byte the socket stopped at', async () => {
  const b = body(items(1000))
  const socket = new Socket(100_000)
  const { outcome } = write(socket, b)
  for (let i = 0; i < 5; i++) await turn()
  // Only what the socket took: no more is rendered or buffered while the client does not read.
  assert.equal(socket.offset, 100_000)
  const callsWhileFull = socket.calls
  for (let i = 0; i < 5; i++) await turn()
  assert.equal(socket.calls, callsWhileFull, 'nothing is written while the socket is full')
  while (outcome.err === undefined) {
    socket.drain(37_123) // odd sizes: chunks cut in the middle, UTF-8 or not
    await turn()
  }
  assert.equal(outcome.err, null)
  assert.equal(socket.text, listBodyText(b))
})

test('multi-byte characters are counted in bytes, and an empty list is its brackets', async () => {
  const unicode = body(['{"reason":"connexion refusée — 拒绝"}', '{"x":"ü"}', '{"y":"🙂"}'])
  const s1 = new Socket(7)
  const w1 = write(s1, unicode)
  while (!s1.complete) {
    s1.drain(5)
    await turn()
  }
  assert.equal(await w1.finished, null)
  assert.equal(s1.text, listBodyText(unicode))
  const empty = body([])
  const s2 = new Socket()
  assert.equal(await write(s2, empty).finished, null)
  assert.equal(s2.text, '{"workers":[]}')
})

test('the connection going away stops the writer: nothing more is written', async () => {
  const socket = new Socket()
  const { writer } = write(socket, body(items(4000)))
  const calls = socket.calls
  writer.stop()
  for (let i = 0; i < 5; i++) await turn()
  assert.equal(socket.calls, calls)
  assert.equal(socket.complete, false)
})

test('a list whose parts do not add up to the bytes it announced ends with an error, not a hung client', async () => {
  const b = body(items(3))
  const socket = new Socket()
  const err = await write(socket, { ...b, bytes: b.bytes + 1 }).finished
  assert.match(String(err), /announced/)
  const short = await write(new Socket(), { ...b, bytes: b.bytes - 1 }).finished
  assert.match(String(short), /announced/)
})
