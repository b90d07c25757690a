import { createInterface } from 'node:readline'
import type { MasterControl } from '../master/control.js'
import { formatError, formatRegistered, formatStatus, formatUnregistered, formatWorkers } from './format.js'

// The interactive `master> ` prompt: a second front end of MasterControl next to the REST API,
// printing what the CLI prints. A failing command prints its error and the prompt goes on.

export const PROMPT = 'master> '

export interface PromptOptions {
  control: MasterControl
  input: NodeJS.ReadableStream
  output: NodeJS.WritableStream
  /** Called once when the operator leaves: `exit`, `quit`, Ctrl-D or Ctrl-C. Not called by close(). */
  onExit: () => void
}

export interface Prompt {
  /** Stops reading input (the owner is shutting down for another reason). */
  close(): void
}

const HELP = `commands:
  status                      workers, active and inactive counts, monitor and store state
  workers                     the worker table
  register <id> <host:port>   register a worker; it may be offline (the master keeps dialling it)
  unregister <id>             forget a worker and stop dialling it
  help                        this list
  exit, quit                  shut the master down (Ctrl-D does too)`

export function startPrompt(opts: PromptOptions): Prompt {
  const { control, input, output, onExit } = opts
  const tty = output as NodeJS.WritableStream & { isTTY?: boolean; hasColors?: () => boolean }
  const color = tty.isTTY === true && typeof tty.hasColors === 'function' && tty.hasColors()
  const rl = createInterface({ input, output, prompt: PROMPT })
  let ended = false
  // Commands run one at a time in the order typed; async ones (register) finish before the next.
  let queue: Promise<void> = Promise.resolve()
  const enqueue = (step: () => void | Promise<void>): void => {
    queue = queue.then(step).catch((err: unknown) => write(formatError(err)))
  }

  function write(text: string): void {
    try {
      output.write(`${text}\n`)
    } catch {
      // The output went away (terminal closed); there is nobody left to tell.
    }
  }

  function prompt(): void {
    if (!ended) rl.prompt()
  }

  function end(notify: boolean): void {
    if (ended) return
    ended = true
    rl.close()
    if (!notify) return
    try {
      onExit()
    } catch (err) {
      write(formatError(err))
    }
  }

  async function run(line: string): Promise<void> {
    if (ended) return
    const [command, ...args] = line.trim().split(/\s+/).filter((w) => w.length > 0)
    switch (command?.toLowerCase()) {
      case undefined:
        break
      case 'help':
      case '?':
        write(HELP)
        break
      case 'status':
        write(formatStatus(control.status()))
        break
      case 'workers':
        write(formatWorkers(control.listWorkers(), { now: Date.now(), color }))
        break
      case 'register':
        if (args.length !== 2) {
          write('usage: register <id> <host:port>')
          break
        }
        write(formatRegistered(await control.registerWorker({ worker_id: args[0], worker_ip: args[1] })))
        break
      case 'unregister':
        if (args.length !== 1) {
          write('usage: unregister <id>')
          break
        }
        write(formatUnregistered(await control.unregisterWorker(args[0]!)))
        break
      case 'exit':
      case 'quit':
        end(true)
        return
      default:
        write(`unknown command ${JSON.stringify(command)}: type help for the list of commands`)
    }
  }

  rl.on('line', (line) => {
    enqueue(async () => {
      try {
        await run(line)
      } catch (err) {
        write(formatError(err))
      }
      prompt()
    })
  })
  // Ctrl-D and Ctrl-C leave the cursor after the prompt: end that line before the shutdown logs.
  const leave = (): void => {
    if (ended) return
    write('')
    end(true)
  }
  // Ctrl-D ends the input; after queued commands it means exit. close() also lands here: end()
  // has run by then and this does nothing.
  rl.on('close', () => enqueue(leave))
  // On a terminal readline takes Ctrl-C itself instead of raising SIGINT: treat it as exit, the
  // same graceful shutdown as the signal, at once rather than after a command that hangs.
  rl.on('SIGINT', leave)

  prompt()
  return { close: () => end(false) }
}
