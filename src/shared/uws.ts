import { createRequire } from 'node:module'
import { CloudaiError } from './errors.js'

// The uWebSockets.js build we can install here (@trufflesuite/uws-js-unofficial, aliased as
// uWebSockets.js) silently swaps in a slow pure-JS server when its native binary fails to load, or
// when UWS_USE_FALLBACK is set. We refuse to run on it: an operator who asked for uWS gets uWS.

const require = createRequire(import.meta.url)

export type Uws = typeof import('uWebSockets.js')

let loaded: Uws | undefined

export function loadUws(): Uws {
  if (loaded) return loaded
  const fallbackPath = require.resolve('uWebSockets.js/dist/index.js')
  const fallbackEnv = process.env.UWS_USE_FALLBACK
  if (fallbackEnv && /^(true|1)$/i.test(fallbackEnv)) {
    throw new CloudaiError('CLOUDAI_UWS_FALLBACK', 'UWS_USE_FALLBACK is set: cloudai needs the native uWebSockets.js build; unset UWS_USE_FALLBACK')
  }
  const uws = require('uWebSockets.js') as Uws
  if (require.cache[fallbackPath]) {
    throw new CloudaiError(
      'CLOUDAI_UWS_FALLBACK',
      `uWebSockets.js could not load its native binary for ${process.platform}-${process.arch} (Node ABI ${process.versions.modules}) and fell back to its pure-JS implementation; ` +
        'cloudai refuses to run on it. Reinstall with `npm ci` on a supported Node.js (20.x) and platform.',
    )
  }
  loaded = uws
  return uws
}
