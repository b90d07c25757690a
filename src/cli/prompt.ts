import { clearScreenDown, createInterface, cursorTo, moveCursor } from 'node:readline'
import type { LogOutput } from '../shared/log.js'
import type { Options } from 'yargs'
import type { MasterControl } from '../master/control.js'
import { CloudaiError } from '../shared/errors.js'
import {
  formatError,
  formatHealth,
  formatRegistered,
  formatScheduling,
  formatStatus,
  formatTask,
  formatTaskCancelled,
  formatTasks,
  formatTaskSubmitted,
  formatTokenIssued,
  formatUnregistered,
  formatWorkerMetrics,
  formatWorkers,
} from './format.js'
import { DRAIN_OPTIONS, TASKS_OPTIONS, TASK_SUBMIT_FLAGS, TASK_SUBMIT_OPTIONS, buildDrainRequest, buildTaskQuery, buildTaskSubmitBody } from './options.js'
import { splitWords } from './words.js'

// The interactive `master> ` prompt: a second front end of MasterControl next to the REST API,
// printing what the CLI prints. A failing command prints its error and the prompt goes on.

export const PROMPT = 'master> '

export interface PromptOptions {
  control: MasterControl
  input: NodeJS.ReadableStream
  output: NodeJS.WritableStream
  /** Called once when the operator leaves: `exit`, `quit`, Ctrl-D or Ctrl-C. Not called by close(). */
  onExit: () => void
  /**
   * The master's log output, when it shares `output` (a terminal): each log line is written above
   * the prompt, which is then drawn again below it with what was typed so far and the cursor where
   * it was, so that a log line never lands inside the line being typed.
   */
  logs?: Pick<LogOutput, 'around'>
}

export interface Prompt {
  /** Stops reading input (the owner is shutting down for another reason). */
  close(): void
}

const HELP = `commands:
  status                      workers, active and inactive counts, task counts, monitor and store state
  workers                     the worker table
  health                      the health checks and what fails them
  metrics <id>                a worker's telemetry: latest usage, averages, peaks, history
  register <id> <host:port>   register a worker; it may be offline (the master keeps dialling it);
                              prints its token, once
  unregister <id>             forget a worker, revoke its token and stop dialling it; its tasks
                              go back to the queue and are cancelled on it
  token rotate <id>           issue a worker a new token (shown once); the old one works until
                              the worker presents the new one, or for --token-grace
  cordon <id>                 place no new tasks on a worker (what runs there goes on)
  uncordon <id>               let it take tasks again (stops a drain under way)
  drain <id> [--deadline D] [--force]
                              cordon it, let its tasks finish, at D (30s, 10m, 1h) cancel and
                              requeue the rest (--force: now); workers shows when it is drained
  task submit [flags] -- <command...>
                              queue a task (help submit lists the flags)
  submit <command...>         queue a task with the defaults: submit echo hello
  tasks [--status S] [--limit N] [--offset M]
                              the task table, newest first; S: queued (or pending), assigned,
                              running, completed, failed, cancelled
  queue                       the queued tasks
  task <id>                   one task: its fields, history and the end of its output
  cancel <id>                 cancel a queued or running task (task cancel <id> too)
  help                        this list
  exit, quit                  shut the master down (Ctrl-D does too)
Words are split as a shell splits them: quote a command with spaces, pipes or ; in it.`

const SUBMIT_HELP = `usage: task submit [flags] -- <command...>
  --cpu N             CPU cores the task needs
  --mem GB            memory the task needs, in GB
  --gpu N             GPUs the task needs
  --storage GB        storage the task needs, in GB
  --worker ID         run it on this worker only
  --name NAME         a name to recognise it by in the task list
  --timeout DURATION  time limit of one run: 30s, 10m, 2h (0 = none)
  --max-attempts N    runs at most this many times
  --env KEY=VALUE     set in the command's environment; repeat it for more
  --image IMAGE       run the command in this Docker image (the worker needs Docker)
The command is the words after --, joined with spaces; one quoted word is taken as it is:
  task submit --cpu 2 --timeout 10m -- 'python train.py | tee out.log'`

const SUBMIT_USAGE = 'usage: task submit [flags] -- <command...>   (help submit lists the flags)'
const TASKS_USAGE = 'usage: tasks [--status S] [--limit N] [--offset M]'

/**
 * Reads `--flag value` and `--flag=value` for the flags of a CLI command's option table, so the
 * prompt takes what the CLI takes. Returns the flags as an argv record for the builders in
 * options.ts, and the words that are not flags. A flag given more than once is handed over as yargs
 * hands it, the array of its values, so that the builders apply the CLI's rule here too: the last
 * value of a single-valued flag, every value of a repeatable one (--env).
 */
export function parseFlags(words: readonly string[], table: Readonly<Record<string, Options>>, command: string): { argv: Record<string, unknown>; rest: string[] } {
  const argv: Record<string, unknown> = {}
  const rest: string[] = []
  const known = Object.keys(table).map((f) => `--${f}`).join(', ')
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!
    if (!word.startsWith('--') || word === '--') {
      rest.push(word)
      continue
    }
    const eq = word.indexOf('=')
    const name = word.slice(2, eq < 0 ? undefined : eq)
    const option = Object.hasOwn(table, name) ? table[name]! : undefined
    if (option === undefined) throw new CloudaiError('CLOUDAI_BAD_REQUEST', `${command} has no flag --${name}: use ${known}`)
    let value: string
    if (eq >= 0) value = word.slice(eq + 1)
    else if (i + 1 < words.length && words[i + 1] !== '--') value = words[++i]!
    else throw new CloudaiError('CLOUDAI_BAD_REQUEST', `--${name} needs a value`)
    const before = argv[name]
    if (before !== undefined) argv[name] = [...(Array.isArray(before) ? before : [before]), value]
    else argv[name] = option.array === true ? [value] : value
  }
  return { argv, rest }
}

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

  // True while the prompt is on the screen; false while a typed command runs, when its output and
  // log lines simply follow each other.
  let showing = false
  function prompt(): void {
    if (ended) return
    showing = true
    rl.prompt()
  }

  if (opts.logs && tty.isTTY === true) {
    opts.logs.around = (text, writeLog) => {
      if (!showing || ended) return writeLog(text)
      const at = rl.getCursorPos()
      // Up to the prompt's first row and clear from there: the prompt and a typed line that wraps.
      moveCursor(output, 0, -at.rows)
      cursorTo(output, 0)
      clearScreenDown(output)
      writeLog(text)
      // readline redraws from `at.rows` rows above the cursor (where it last left it): rows it may
      // clear, below the log line, so that the redraw starts right after it.
      if (at.rows > 0) output.write('\n'.repeat(at.rows))
      rl.prompt(true)
    }
  }

  function end(notify: boolean): void {
    if (ended) return
    ended = true
    showing = false
    if (opts.logs) opts.logs.around = null
    rl.close()
    if (!notify) return
    try {
      onExit()
    } catch (err) {
      write(formatError(err))
    }
  }

  async function submit(words: readonly string[]): Promise<void> {
    const dashes = words.indexOf('--')
    const { argv, rest } = parseFlags(dashes < 0 ? words : words.slice(0, dashes), TASK_SUBMIT_OPTIONS, 'task submit')
    if (dashes < 0 || rest.length > 0) {
      write(words.length === 0 ? SUBMIT_HELP : SUBMIT_USAGE)
      return
    }
    const body = buildTaskSubmitBody(argv, words.slice(dashes + 1))
    try {
      write(formatTaskSubmitted(await control.submitTask(body)))
    } catch (err) {
      // Named by the flags typed, as the CLI names them.
      write(formatError(err, TASK_SUBMIT_FLAGS))
    }
  }

  function listTasks(words: readonly string[]): void {
    const { argv, rest } = parseFlags(words, TASKS_OPTIONS, 'tasks')
    if (rest.length > 0) {
      write(TASKS_USAGE)
      return
    }
    const query = buildTaskQuery(argv)
    write(formatTasks(control.listTasks(query), { now: Date.now(), color, status: query.status }))
  }

  async function cancel(args: readonly string[], usage: string): Promise<void> {
    if (args.length !== 1) {
      write(usage)
      return
    }
    write(formatTaskCancelled(await control.cancelTask(args[0]!)))
  }

  async function task(args: readonly string[]): Promise<void> {
    const [sub, ...rest] = args
    if (sub === 'submit') return submit(rest)
    if (sub === 'cancel') return cancel(rest, 'usage: task cancel <id>')
    if (args.length !== 1 || sub === '--help' || sub === '-h') {
      write('usage: task <id> | task submit [flags] -- <command...> | task cancel <id>')
      return
    }
    write(formatTask(control.getTask(sub!), { now: Date.now(), color }))
  }

  async function run(line: string): Promise<void> {
    if (ended) return
    const [command, ...args] = splitWords(line)
    switch (command?.toLowerCase()) {
      case undefined:
        break
      case 'help':
      case '?':
        write(args[0] === 'submit' || (args[0] === 'task' && args[1] === 'submit') ? SUBMIT_HELP : HELP)
        break
      case 'status':
        write(formatStatus(control.status()))
        break
      case 'workers':
        write(formatWorkers(control.listWorkers(), { now: Date.now(), color }))
        break
      case 'health':
        write(formatHealth(control.health(), { color }))
        break
      case 'metrics':
        if (args.length !== 1) {
          write('usage: metrics <id>')
          break
        }
        write(formatWorkerMetrics(control.workerMetrics(args[0]!, {}), { now: Date.now(), color }))
        break
      case 'register':
        if (args.length !== 2) {
          write('usage: register <id> <host:port>')
          break
        }
        write(formatRegistered(await control.registerWorker({ worker_id: args[0], worker_ip: args[1] })))
        break
      case 'token':
        if (args.length !== 2 || args[0] !== 'rotate') {
          write('usage: token rotate <id>')
          break
        }
        write(formatTokenIssued(await control.rotateWorkerToken(args[1]!)))
        break
      case 'unregister':
        if (args.length !== 1) {
          write('usage: unregister <id>')
          break
        }
        write(formatUnregistered(await control.unregisterWorker(args[0]!)))
        break
      case 'cordon':
      case 'uncordon':
        if (args.length !== 1) {
          write(`usage: ${command} <id>`)
          break
        }
        write(formatScheduling(command === 'cordon' ? 'cordon' : 'uncordon', await (command === 'cordon' ? control.cordonWorker(args[0]!) : control.uncordonWorker(args[0]!)), Date.now()))
        break
      case 'drain': {
        // The prompt does not wait for the drain (it would hold the prompt): `workers` shows it.
        const { argv, rest } = parseFlags(args.filter((a) => a !== '--force'), { deadline: DRAIN_OPTIONS.deadline! }, 'drain')
        if (rest.length !== 1) {
          write('usage: drain <id> [--deadline D] [--force]')
          break
        }
        const { body } = buildDrainRequest({ ...argv, force: args.includes('--force') })
        write(formatScheduling('drain', await control.drainWorker(rest[0]!, body), Date.now()))
        break
      }
      case 'task':
        await task(args)
        break
      case 'submit':
        // The shortcut takes no flags: everything after it is the command (a leading -- is allowed).
        if (args.length === 0) write('usage: submit <command...>   (task submit takes flags)')
        else write(formatTaskSubmitted(await control.submitTask(buildTaskSubmitBody({}, args[0] === '--' ? args.slice(1) : args))))
        break
      case 'tasks':
        listTasks(args)
        break
      case 'queue':
        if (args.length > 0) write('usage: queue   (tasks --status queued --limit N for more)')
        else write(formatTasks(control.listTasks({ status: 'queued' }), { now: Date.now(), color, status: 'queued' }))
        break
      case 'cancel':
        await cancel(args, 'usage: cancel <id>')
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
    showing = false
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
