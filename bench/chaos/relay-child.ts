// Entry of the relay process inside the partition's namespace a (see relay.ts):
//   node relay-child.js <listen> <target> [<listen> <target> ...]
// endpoints as tcp:<host>:<port> or unix:<path>. Prints "relaying" once every pair listens.
import { parseEndpoint, startRelay } from './relay.js'

const args = process.argv.slice(2)
if (args.length === 0 || args.length % 2 !== 0) {
  process.stderr.write('usage: relay-child <listen> <target> [<listen> <target> ...]\n')
  process.exit(2)
}
for (let i = 0; i < args.length; i += 2) await startRelay(parseEndpoint(args[i]!), parseEndpoint(args[i + 1]!))
process.stdout.write('relaying\n')
