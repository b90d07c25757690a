// Preloaded with `--import` into a master or worker child (NODE_OPTIONS), so that a test can make
// a fault escape inside the real process: on SIGUSR2, CLOUDAI_TEST_FAULT=rejection leaves a
// rejected promise unhandled, =exception throws outside any try. Nothing of cloudai's code knows
// of it; cloudai's own code has no such path (the lint in `npm test` sees to that).
const kind = process.env.CLOUDAI_TEST_FAULT
if (kind === 'rejection' || kind === 'exception') {
  process.on('SIGUSR2', () => {
    const err = new Error(`fault injected by the test (${kind})`)
    if (kind === 'rejection') {
      // eslint-disable-next-line @typescript-eslint/no-floating-promises -- the unhandled rejection is the point: it is what this preload exists to produce
      Promise.reject(err)
    } else {
      setImmediate(() => {
        throw err
      })
    }
  })
}
