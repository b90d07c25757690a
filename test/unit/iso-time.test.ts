import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isoTime } from '../../src/shared/iso-time.js'

const reference = (ms: number): string => new Date(ms).toISOString()

test('isoTime writes what toISOString writes, at the edges of a second, a minute, a day and a leap year', () => {
  const edges = [
    0, -0, 1, 9, 10, 99, 100, 999, 1000, 59_999, 60_000, 60_001,
    Date.UTC(2024, 1, 29, 23, 59, 59, 999), Date.UTC(2024, 2, 1), Date.UTC(2026, 11, 31, 23, 59, 59, 999), Date.UTC(2027, 0, 1),
    Date.UTC(9999, 11, 31, 23, 59, 59, 999),
  ]
  for (const ms of edges) assert.equal(isoTime(ms), reference(ms), String(ms))
})

test('isoTime agrees with toISOString over random times, in minutes that share a cache slot', () => {
  let seed = 7
  // A 32-bit LCG (Math.imul keeps the product exact), its top 31 bits.
  const next = (): number => ((seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) >>> 1)
  const base = Date.UTC(2026, 11, 2)
  for (let i = 0; i < 20_000; i++) {
    // Within a few days of now, and anywhere in 1970..9999: slots are reused by far-apart minutes.
    const ms = i % 2 === 0 ? base + (next() % (3 * 86_400_000)) : Math.floor((next() / 2 ** 31) * 253_402_300_799_999)
    assert.equal(isoTime(ms), reference(ms), String(ms))
    // The minute 256 minutes on lands in the same slot: it must not be read as this one.
    assert.equal(isoTime(ms + 256 * 60_000), reference(ms + 256 * 60_000))
    assert.equal(isoTime(ms), reference(ms))
  }
})

test('isoTime takes the Date path for what its fast path does not cover, errors included', () => {
  for (const ms of [-1, -86_400_001, 1.5, Date.UTC(2026, 0, 1) + 0.25, 253_402_300_800_000, 8.64e15]) assert.equal(isoTime(ms), reference(ms), String(ms))
  assert.throws(() => isoTime(Number.NaN), RangeError)
  assert.throws(() => isoTime(8.64e15 + 1), RangeError)
})
