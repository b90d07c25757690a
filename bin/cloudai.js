#!/usr/bin/env node
// Below Node.js 20.19 nothing of cloudai runs (yargs and mongodb need it; yargs fails with a stack
// trace): say so in one line. The master checks its own, narrower range (src/master/api/uws.ts).
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 20 || (major === 20 && minor < 19)) {
  process.stderr.write(
    `error: cloudai needs Node.js 20.19 or later, and its master 20 or 22 (22.12 or later), the versions cloudai has a native uWebSockets.js build for; this is Node.js ${process.versions.node} (CLOUDAI_UNSUPPORTED_NODE)\n`,
  )
  process.exit(1)
}
// The CLI is compiled TypeScript; `npm ci` (prepare) and `npm start` (prestart) build it.
import('../dist/src/cli/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli')) {
    process.stderr.write('cloudai is not built yet: run `npm run build` (npm ci does it for you)\n')
    process.exit(2)
  }
  throw err
})
