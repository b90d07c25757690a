#!/usr/bin/env node
// The CLI is compiled TypeScript; `npm ci` (prepare) and `npm start` (prestart) build it.
import('../dist/src/cli/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli')) {
    process.stderr.write('cloudai is not built yet: run `npm run build` (npm ci does it for you)\n')
    process.exit(2)
  }
  throw err
})
