import { CloudaiError } from '../shared/errors.js'

// Splits a `master>` prompt line into words the way a POSIX shell does (without expansions), so
// that a line typed at the prompt means what it would mean after `cloudai`:
//   task submit --name "nightly build" -- 'make test | tee out.log'
// gives [task, submit, --name, nightly build, --, make test | tee out.log].
//
// - Blanks (spaces, tabs, newlines) separate words.
// - '...' keeps everything inside as it is.
// - "..." keeps everything inside except that a backslash escapes " \ $ ` and a newline.
// - A backslash outside quotes keeps the next character as it is.
// - Quoted and unquoted parts next to each other make one word: a"b c"d is `ab cd`; "" is an empty word.
// Nothing is expanded: $HOME, *, ~ and ; are ordinary characters here (the task's shell sees them).

const BLANK = /[ \t\r\n]/
const ESCAPABLE_IN_DOUBLE = new Set(['"', '\\', '$', '`', '\n'])

/** @throws CLOUDAI_BAD_REQUEST for an unterminated quote or a trailing backslash. */
export function splitWords(line: string): string[] {
  const words: string[] = []
  let word = ''
  // A word has started even if it is still empty: '' and "" are words.
  let inWord = false
  let i = 0
  while (i < line.length) {
    const c = line[i]!
    if (BLANK.test(c)) {
      if (inWord) words.push(word)
      word = ''
      inWord = false
      i++
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1)
      if (end < 0) throw unterminated('single', i)
      word += line.slice(i + 1, end)
      inWord = true
      i = end + 1
    } else if (c === '"') {
      const open = i
      i++
      for (;;) {
        if (i >= line.length) throw unterminated('double', open)
        const d = line[i]!
        if (d === '"') break
        if (d === '\\' && i + 1 < line.length && ESCAPABLE_IN_DOUBLE.has(line[i + 1]!)) {
          // A backslash-newline is a line continuation: both disappear.
          if (line[i + 1] !== '\n') word += line[i + 1]
          i += 2
        } else {
          word += d
          i++
        }
      }
      inWord = true
      i++
    } else if (c === '\\') {
      if (i + 1 >= line.length) throw new CloudaiError('CLOUDAI_BAD_REQUEST', 'the line ends with a backslash: escape it as \\\\ or quote it')
      if (line[i + 1] !== '\n') {
        word += line[i + 1]
        inWord = true
      }
      i += 2
    } else {
      word += c
      inWord = true
      i++
    }
  }
  if (inWord) words.push(word)
  return words
}

function unterminated(kind: 'single' | 'double', at: number): CloudaiError {
  return new CloudaiError('CLOUDAI_BAD_REQUEST', `the ${kind} quote at column ${at + 1} is not closed`)
}
