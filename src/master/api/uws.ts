import { createRequire } from 'node:module'
import { CloudaiError } from '../../shared/errors.js'

// The master's HTTP API runs on uWebSockets.js, a native addon: a build ships one binary per
// platform and Node ABI (process.versions.modules). None of the builds on npm we know of has
// binaries for Node 20, 22 and 24 that all load with glibc 2.36 (Debian 12); cloudai picks one by ABI:
//   Node 20 (ABI 115) and Node 22 (ABI 127): uws-node22 = @based/uws 6.0.1 (uWS.js v20.51.0; its
//     linux-x64 binaries need glibc 2.27)
// The Node 24 binaries (ABI 137) of @based/uws 6.0.1, @btc-vision/uwebsockets.js 20.57.0 and
// upstream need glibc 2.38.
// Node 20 used to run on uWebSockets.js = @trufflesuite/uws-js-unofficial 20.30.0-unofficial.0
// (uWS.js v20.30.0, 2023), which is still installed for its type declarations (`import type`
// from 'uWebSockets.js'). Its HTTP parser answers no malformed request: it closes the connection
// without a word, at once for a request with both Content-Length and Transfer-Encoding or a head
// over 4 KiB that arrives in more than one read (a limit compiled in; with bytes left unread the
// close is a reset), and only at its 10 s timeout for a request line or headers it cannot parse
// (HTTP/1.0, no Host, a space before a colon). v20.51 answers those itself (400, 431, 505, with an
// HTML page) and reads its head limit from UWS_HTTP_MAX_HEADERS_SIZE (see loadUws).
// A build may name its folder of binaries (binaryDir), for cloudai to require the binary itself
// rather than the package's loader: the trufflesuite loader swaps in a slow pure-JS server (with a
// warning on stderr) when its binary does not load or UWS_USE_FALLBACK is set. An operator who asked
// for uWS gets uWS, or one line saying why not.

const require = createRequire(import.meta.url)

export type Uws = typeof import('uWebSockets.js')

/** The Node.js versions the master runs on; package.json's `engines.node` says the same. */
export const SUPPORTED_NODE = '^20.19.0 || ^22.12.0'

export interface UwsBuild {
  /** The package cloudai requires it from (an npm alias in package.json). */
  readonly pkg: 'uWebSockets.js' | 'uws-node22'
  /**
   * The package's folder of binaries, to require the binary directly; null to go through the
   * package's loader (@based/uws exports nothing else; its loader throws, it has no fallback).
   */
  readonly binaryDir: string | null
  readonly nodeMajor: number
  /** The lowest minor of that major that cloudai's other dependencies (yargs, mongodb) accept. */
  readonly minMinor: number
  readonly abi: string
}

const BUILDS: readonly UwsBuild[] = [
  { pkg: 'uws-node22', binaryDir: null, nodeMajor: 20, minMinor: 19, abi: '115' },
  { pkg: 'uws-node22', binaryDir: null, nodeMajor: 22, minMinor: 12, abi: '127' },
]

/**
 * The most of a request's head (request line and headers) uWS takes; it answers a longer one with
 * its own 431 page and closes. Well above the API's own limits (MAX_REQUEST_LINE_BYTES,
 * MAX_HEADER_BYTES in src/master/api/guard.ts), so that up to here the API sees the request and
 * answers 414 or 431 with its JSON error. uWS's default, 4 KiB, would answer a 5 KiB URL with
 * 431 instead of the API's 414. uWS keeps a head that arrives in more than one read in a buffer of
 * up to this size per connection: less than the 1 MiB of body a connection may already hold.
 */
export const UWS_MAX_HEAD_BYTES = 256 * 1024

/**
 * The uWebSockets.js build for this Node.js (pass process.versions), or CLOUDAI_UNSUPPORTED_NODE
 * naming the versions that work.
 */
export function checkNodeSupport(versions: { node: string; modules: string }): UwsBuild {
  const [major, minor] = versions.node.split('.').map(Number)
  const build = BUILDS.find((b) => b.nodeMajor === major && b.abi === versions.modules && (minor ?? -1) >= b.minMinor)
  if (build) return build
  throw new CloudaiError(
    'CLOUDAI_UNSUPPORTED_NODE',
    `the master needs Node.js 20 (20.19 or later) or 22 (22.12 or later), the versions cloudai has a native uWebSockets.js build for; this is Node.js ${versions.node}`,
  )
}

let loaded: Uws | undefined

/** Loads the native uWebSockets.js binary for this Node.js and platform, or throws why it cannot. */
export function loadUws(): Uws {
  if (loaded) return loaded
  const build = checkNodeSupport(process.versions)
  const fallbackEnv = process.env.UWS_USE_FALLBACK
  if (fallbackEnv && /^(true|1)$/i.test(fallbackEnv)) {
    throw new CloudaiError('CLOUDAI_UWS_FALLBACK', 'UWS_USE_FALLBACK is set: cloudai runs on the native uWebSockets.js build only; unset UWS_USE_FALLBACK')
  }
  try {
    require.resolve(build.pkg)
  } catch {
    throw new CloudaiError('CLOUDAI_UWS_NO_BINARY', `${build.pkg}, the uWebSockets.js build for Node.js ${build.nodeMajor}, is not installed: run \`npm ci\``)
  }
  const id = build.binaryDir === null ? build.pkg : `${build.pkg}/${build.binaryDir}/uws_${process.platform}_${process.arch}_${build.abi}.node`
  // uWS reads it once, while its binary loads (a static initializer): set before the require, and
  // set here, not taken from the operator's environment, since the API's 414 and 431 depend on it.
  process.env.UWS_HTTP_MAX_HEADERS_SIZE = String(UWS_MAX_HEAD_BYTES)
  try {
    loaded = require(id) as Uws
  } catch (err) {
    throw new CloudaiError('CLOUDAI_UWS_NO_BINARY', `uWebSockets.js has no native binary that loads on ${process.platform}-${process.arch} with Node.js ${process.versions.node}: ${loadFailure(err)}`)
  }
  return loaded
}

/** Why a binary did not load, in a few words: @based/uws wraps the loader's error in a paragraph of its own. */
function loadFailure(err: unknown): string {
  const lines = (err instanceof Error ? err.message : String(err)).split('\n').map((l) => l.trim()).filter((l) => l !== '')
  const cause = lines.find((l) => l.startsWith('Error: '))?.slice('Error: '.length) ?? lines[0] ?? 'unknown error'
  return cause.startsWith('Cannot find module') ? 'it has none for this platform' : cause
}
