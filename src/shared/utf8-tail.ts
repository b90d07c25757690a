/**
 * The end of `text` that fits in `maxBytes` of UTF-8, cut on a character boundary (a character
 * that would be cut in half is left out). Binary output can decode to more bytes than it was.
 */
export function utf8Tail(text: string, maxBytes: number): string {
  // A string of n UTF-16 units is at most 3n bytes: most tails need no encoding at all.
  if (text.length * 3 <= maxBytes) return text
  const buf = Buffer.from(text, 'utf8')
  if (buf.length <= maxBytes) return text
  let start = buf.length - maxBytes
  while (start < buf.length && (buf[start]! & 0xc0) === 0x80) start++
  return buf.subarray(start).toString('utf8')
}
