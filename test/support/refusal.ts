import assert from 'node:assert/strict'
import { CloudaiError } from '../../src/shared/errors.js'

/** For assert.throws: a CloudaiError with `code` whose message names every one of `mentions`. */
export function refused(code: string, ...mentions: string[]) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof CloudaiError, String(err))
    assert.equal(err.code, code, err.message)
    for (const m of mentions) assert.ok(err.message.includes(m), `${JSON.stringify(m)} in ${err.message}`)
    return true
  }
}

/** The stable code `fn` refuses with; throws if it accepts, or throws anything but a CloudaiError. */
export function codeOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof CloudaiError) return err.code
    throw err
  }
  throw new Error('accepted')
}
