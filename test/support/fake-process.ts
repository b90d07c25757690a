// Preloaded with `--import` into a CLI child, so that the master's refusals can be tested on the
// Node.js and machine at hand: CLOUDAI_TEST_NODE ("24.22.3:137") sets process.versions' node and
// modules (the ABI), CLOUDAI_TEST_ARCH process.arch.
const [node, modules] = (process.env.CLOUDAI_TEST_NODE ?? '').split(':')
if (node && modules) {
  Object.defineProperty(process, 'versions', { value: { ...process.versions, node, modules }, enumerable: true, configurable: true })
}
const arch = process.env.CLOUDAI_TEST_ARCH
if (arch) Object.defineProperty(process, 'arch', { value: arch, enumerable: true, configurable: true })
