import { createRequire } from 'node:module'
import { CloudaiError } from './errors.js'

// The master's HTTP API runs on uWebSockets.js, a native addon: a build ships one binary per
// platform and Node ABI (process.versions.modules). None of the builds on npm we know of has
// binaries for Node 20, 22 and 24 that all load with glibc 2.36 (Debian 12), so cloudai installs
// two and picks one by ABI:
//   Node 20 (ABI 115): uWebSockets.js = @trufflesuite/uws-js-unofficial 20.30.0-unofficial.0
//     (uWS.js v20.30.0; its linux-x64 binary needs glibc 2.27)
//   Node 22 (ABI 127): uws-node22 = @based/uws 6.0.1 (uWS.js v20.51.0; glibc 2.27)
// The Node 24 binaries (ABI 137) of @based/uws 6.0.1, @btc-vision/uwebsockets.js 20.57.0 and
// upstream need glibc 2.38.
// Where it can, cloudai requires the binary itself rather than the package's loader: the
// trufflesuite one swaps in a slow pure-JS server (with a warning on stderr) when its binary does
// not load or UWS_USE_FALLBACK is set. An operator who asked for uWS gets uWS, or one line saying
// why not.

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
  { pkg: 'uWebSockets.js', binaryDir: 'binaries', nodeMajor: 20, minMinor: 19, abi: '115' },
  { pkg: 'uws-node22', binaryDir: null, nodeMajor: 22, minMinor: 12, abi: '127' },
]

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
