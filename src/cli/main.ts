import yargs, { type Argv } from 'yargs'
import { hideBin } from 'yargs/helpers'
import type { MasterConfig, WorkerConfig } from '../config.js'
import { isCloudaiError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { loadUws } from '../master/api/uws.js'
import { grpcConnectionBudget } from '../master/connection-budget.js'
import { ApiClient, type ApiResponse } from './api-client.js'
import {
  formatDrained,
  formatDrainProgress,
  formatError,
  formatEvent,
  formatScheduling,
  formatHealth,
  formatRegistered,
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
import {
  API_OPTIONS,
  COMMAND_KEYS,
  DRAIN_OPTIONS,
  ENV_PREFIX,
  LOG_OPTIONS,
  MASTER_OPTIONS,
  METRICS_OPTIONS,
  REGISTER_OPTIONS,
  TASKS_OPTIONS,
  LOGS_OPTIONS,
  buildLogsOptions,
  TASK_SUBMIT_OPTIONS,
  WATCH_OPTIONS,
  WORKER_OPTIONS,
  WORKER_TOKEN_OPTION,
  buildApiOptions,
  buildDrainRequest,
  buildMasterConfig,
  buildRegisterWait,
  buildTaskQuery,
  buildTaskSubmitBody,
  TASK_SUBMIT_FLAGS,
  buildWorkerConfig,
  envOnlyKeys,
  parseAddressArg,
  parseSinceArg,
  parseTaskIdArg,
  parseWorkerIdArg,
  splitTaskCommand,
  type ApiCommandOptions,
  type CommandName,
} from './options.js'
import { runLogs } from './logs.js'
import { FaultGuard } from './fault-guard.js'
import { Spinner } from './spinner.js'
import type { WatchMessage } from './watch.js'

// The `cloudai` command. yargs only parses: it records which command was chosen, and the command
// runs after parsing, so that yargs never sees (and swallows) an error of ours. Exit codes: 0 on
// success, 1 when the command failed, 2 when it was called wrongly (a master or worker started on
// a data directory another process holds, or one it cannot write, included).

const EXIT_FAILURE = 1
const EXIT_USAGE = 2

/** Refusals to start that the operator fixes in how the process is started, as a bad flag: exit 2. */
const START_REFUSALS: ReadonlySet<string> = new Set(['CLOUDAI_DATA_DIR_LOCKED', 'CLOUDAI_DATA_DIR_READONLY', 'CLOUDAI_LEASE_HELD'])

/** yargs' own complaints: unknown command or flag, missing argument. */
class UsageError extends Error {}

type TaskAction = 'submit' | 'show' | 'cancel'

interface Chosen {
  command: CommandName
  /** The sub-command of `task`. */
  action?: TaskAction
  argv: Record<string, unknown>
}

const TASK_ID_DESCRIBE = 'task id, as `tasks` lists it (task-...)'

function parser(args: string[], choose: (chosen: Chosen) => void): Argv {
  const handler = (command: CommandName, action?: TaskAction) => (argv: Record<string, unknown>) => choose({ command, ...(action ? { action } : {}), argv })
  return yargs(args)
    .scriptName('cloudai')
    .usage('$0 <command> [options]')
    .env(ENV_PREFIX)
    .middleware((argv) => {
      for (const key of envOnlyKeys(process.env, argv._[0], args)) delete argv[key]
    }, true)
    .command('master', 'run a master: worker registry, heartbeats, reconnection monitor, HTTP API', (y) => y.options({ ...MASTER_OPTIONS, ...LOG_OPTIONS }), handler('master'))
    .command('worker', 'run a worker node', (y) => y.options({ ...WORKER_OPTIONS, ...WORKER_TOKEN_OPTION, ...LOG_OPTIONS }), handler('worker'))
    .command(
      'register <id> <address>',
      'register a worker with a running master (it may be offline: the master keeps dialling it)',
      (y) =>
        y
          .positional('id', { type: 'string', describe: 'worker id: 1 to 64 characters of A-Z a-z 0-9 . _ -' })
          .positional('address', { type: 'string', describe: 'host:port of the worker gRPC server' })
          .options(REGISTER_OPTIONS)
          .options(API_OPTIONS),
      handler('register'),
    )
    .command('unregister <id>', 'forget a worker, revoke its token and stop dialling it; its tasks go back to the queue and are cancelled on it', (y) => y.positional('id', { type: 'string', describe: 'worker id' }).options(API_OPTIONS), handler('unregister'))
    .command('token', 'worker tokens (see cloudai token --help)', (y) =>
      y
        .usage('$0 token rotate <id>')
        .command(
          'rotate <id>',
          'issue a worker a new token (shown once); the old one works until the worker presents the new one, or for the master\'s --token-grace',
          (r) => r.positional('id', { type: 'string', describe: 'worker id' }).options(API_OPTIONS),
          handler('token'),
        )
        .demandCommand(1, 'a sub-command is required: cloudai token rotate <id>'),
    )
    .command('cordon <id>', 'place no new tasks on a worker (what runs there goes on; tasks for it wait)', (y) => y.positional('id', { type: 'string', describe: 'worker id' }).options(API_OPTIONS), handler('cordon'))
    .command('uncordon <id>', 'let a cordoned or drained worker take tasks again (stops a drain under way)', (y) => y.positional('id', { type: 'string', describe: 'worker id' }).options(API_OPTIONS), handler('uncordon'))
    .command(
      'drain <id>',
      'cordon a worker and let what runs there finish (at --deadline the rest is cancelled and requeued, no attempt counted); waits until it is drained unless --detach (Ctrl-C stops waiting, not the drain)',
      (y) => y.positional('id', { type: 'string', describe: 'worker id' }).options({ ...DRAIN_OPTIONS, ...API_OPTIONS }),
      handler('drain'),
    )
    .command('workers', 'list the workers of a running master', (y) => y.options(API_OPTIONS), handler('workers'))
    .command('status', 'worker and task counts, monitor and store state of a running master', (y) => y.options(API_OPTIONS), handler('status'))
    .command('watch', 'live events of a running master: workers going active and inactive, tasks changing state', (y) => y.options({ ...WATCH_OPTIONS, ...API_OPTIONS }), handler('watch'))
    .command('health', 'the master\'s health checks (exit code 1 when unhealthy)', (y) => y.options(API_OPTIONS), handler('health'))
    .command(
      'metrics <id>',
      'a worker\'s telemetry: latest usage, averages and peaks over 1m/5m/15m/1h, history',
      (y) => y.positional('id', { type: 'string', describe: 'worker id' }).options({ ...METRICS_OPTIONS, ...API_OPTIONS }),
      handler('metrics'),
    )
    .command('task', 'submit a task, show one or cancel one (see cloudai task --help)', (y) =>
      y
        .usage('$0 task <id> | $0 task submit [options] -- <command...> | $0 task cancel <id>')
        .command(
          'submit',
          'queue a task: cloudai task submit [options] -- <command...>',
          (s) =>
            s
              .usage('$0 task submit [options] -- <command...>')
              .options({ ...TASK_SUBMIT_OPTIONS, ...API_OPTIONS })
              .example("$0 task submit -- echo hello", 'run `echo hello` on any worker')
              .example("$0 task submit --cpu 2 --mem 4 --timeout 10m --env MODE=fast -- 'python train.py | tee out.log'", 'one quoted argument is the command as it is'),
          handler('task', 'submit'),
        )
        .command('cancel <id>', 'cancel a queued or running task (as cloudai cancel <id>)', (c) => c.positional('id', { type: 'string', describe: TASK_ID_DESCRIBE }).options(API_OPTIONS), handler('task', 'cancel'))
        .command('$0 <id>', 'show a task: its fields, history and the end of its output', (c) => c.positional('id', { type: 'string', describe: TASK_ID_DESCRIBE }).options(API_OPTIONS), handler('task', 'show')),
    )
    .command('tasks', 'list the tasks of a running master, newest first', (y) => y.options({ ...TASKS_OPTIONS, ...API_OPTIONS }), handler('tasks'))
    .command('cancel <id>', 'cancel a queued or running task', (y) => y.positional('id', { type: 'string', describe: TASK_ID_DESCRIBE }).options(API_OPTIONS), handler('cancel'))
    .command('logs <id>', 'a task\'s output; -f follows it live and exits with the task\'s exit code', (y) => y.positional('id', { type: 'string', describe: TASK_ID_DESCRIBE }).options({ ...LOGS_OPTIONS, ...API_OPTIONS }), handler('logs'))
    .demandCommand(1, 'a command is required: master, worker, register, unregister, token, cordon, uncordon, drain, workers, status, watch, health, metrics, task, tasks, cancel or logs')
    .example('$0 master', 'run a master (gRPC on 50051, HTTP API on 127.0.0.1:8080, data in ./data)')
    .example('$0 register worker-1 127.0.0.1:50052', 'register a worker with the running master; prints its token once')
    .example('$0 worker --id worker-1 --token-file worker-1.token --master 127.0.0.1:50051', 'run that worker with its token; it joins that master')
    .example('$0 task submit --cpu 1 -- echo hello', 'queue a task; `cloudai tasks` lists them')
    .epilogue(`A flag marked [env ...] in a command's --help can also be set in the environment: ${ENV_PREFIX}_ and the flag in capitals, e.g. --grpc-port is ${ENV_PREFIX}_GRPC_PORT.`)
    .strict()
    .recommendCommands()
    .exitProcess(false)
    .fail((msg, err) => {
      throw msg ? new UsageError(msg) : err
    })
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 80))
}

/**
 * yargs renders the whole help text right after a command's handler runs, to have it at hand should
 * the handler's promise reject. Ours only records the command (main runs it after the parse), and
 * a usage error prints a hint of its own, so the text is never shown: for the master's many options
 * it was about 0.2 s of CPU on every start, a tenth of what starting a master costs. The cache is
 * skipped through yargs' internal methods (yargs 18's; checked there); --help still renders, on
 * demand. A yargs without them keeps its cache: slower, never wrong.
 */
function withoutHelpCache(y: Argv): Argv {
  type Internal = { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } | undefined } }
  const usage = (y as unknown as Internal).getInternalMethods?.().getUsageInstance?.()
  if (usage !== undefined && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {}
  return y
}

/** The command named in the args (`task submit` for that sub-command), for the `--help` hint of a usage error. */
function commandOf(args: readonly string[]): string | undefined {
  const words = args.filter((a) => !a.startsWith('-'))
  const first = words[0]
  if (first === undefined || !Object.hasOwn(COMMAND_KEYS, first)) return undefined
  return first === 'task' && (words[1] === 'submit' || words[1] === 'cancel') ? `task ${words[1]}` : first
}

/** The commands whose arguments are positional, as their --help shows them: a missing one is named. */
const POSITIONAL_USAGE: Readonly<Record<string, string>> = {
  register: 'register <id> <address>',
  unregister: 'unregister <id>',
  token: 'token rotate <id>',
  cordon: 'cordon <id>',
  uncordon: 'uncordon <id>',
  drain: 'drain <id>',
}

/** yargs' wording for a few usage errors of ours, said the way the rest of the CLI says things. */
function usageMessage(message: string, command: string | undefined, typed?: string): string {
  if (command === 'task' && message.startsWith('Not enough non-option arguments')) {
    return 'a task id or a sub-command is required: cloudai task <id>, cloudai task submit [options] -- <command...>, cloudai task cancel <id>'
  }
  if ((command === 'cancel' || command === 'task cancel') && message.startsWith('Not enough non-option arguments')) {
    return `a task id is required: cloudai ${command} <id>`
  }
  const short = /^Not enough non-option arguments: got (\d+), need at least \d+$/.exec(message)
  const usage = command === undefined ? undefined : POSITIONAL_USAGE[command]
  if (short && usage) {
    const missing = (usage.match(/<[^>]+>/g) ?? []).slice(Number(short[1]))
    if (missing.length > 0) return `missing ${missing.join(' and ')}: cloudai ${usage}`
  }
  // recommendCommands' own wording names only the suggestion: say what was typed too.
  const suggestion = /^Did you mean (\S+)\?$/.exec(message)
  if (suggestion && typed !== undefined) return `unknown command "${typed}": did you mean ${suggestion[1]}? (cloudai --help lists them)`
  if (command === 'task submit' && /^Unknown arguments?:/.test(message)) {
    return `${message} (the task's command goes after --: cloudai task submit [options] -- <command...>)`
  }
  return message
}

function usageFailed(message: string, command: string | undefined, typed?: string): void {
  process.stderr.write(`error: ${usageMessage(message, command, typed)}\nSee: cloudai ${command ? `${command} ` : ''}--help\n`)
  process.exitCode = EXIT_USAGE
}

/** Validates everything the command needs (throwing CLOUDAI_BAD_CONFIG) and returns the run. */
function prepare({ command, action, argv }: Chosen, taskCommand: readonly string[]): () => Promise<void> {
  const color = process.stdout.isTTY === true && process.stdout.hasColors()
  switch (command) {
    case 'master': {
      const config = buildMasterConfig(argv)
      // The flag against this process's file-descriptor limit: a usage error, like a bad value.
      grpcConnectionBudget(config.grpcMaxConnections, config.wsMaxConnections)
      return () => runMaster(config)
    }
    case 'worker': {
      const config = buildWorkerConfig(argv)
      return () => runWorker(config)
    }
    case 'register': {
      const opts = buildApiOptions(argv)
      const id = parseWorkerIdArg(argv.id)
      const address = parseAddressArg(argv.address)
      const { wait, timeoutMs } = buildRegisterWait(argv)
      return async () => {
        let active = false
        await operate(opts, (api) => api.registerWorker(id, address), (res) => {
          active = res.body.worker.is_active
          return formatRegistered({ worker: res.body.worker, created: res.status === 201, persisted: res.body.persisted, token: res.body.token ?? null })
        })
        if (wait && process.exitCode === undefined && !active) await waitActive(opts, id, timeoutMs)
      }
    }
    case 'unregister': {
      const opts = buildApiOptions(argv)
      const id = parseWorkerIdArg(argv.id)
      return () => operate(opts, (api) => api.unregisterWorker(id), (res) => formatUnregistered(res.body))
    }
    case 'token': {
      const opts = buildApiOptions(argv)
      const id = parseWorkerIdArg(argv.id)
      return () => operate(opts, (api) => api.rotateWorkerToken(id), (res) => formatTokenIssued(res.body))
    }
    case 'cordon':
    case 'uncordon': {
      const opts = buildApiOptions(argv)
      const id = parseWorkerIdArg(argv.id)
      return () => operate(opts, (api) => (command === 'cordon' ? api.cordonWorker(id) : api.uncordonWorker(id)), (res) => formatScheduling(command, res.body, Date.now()))
    }
    case 'drain': {
      const opts = buildApiOptions(argv)
      const id = parseWorkerIdArg(argv.id)
      const { body, detach } = buildDrainRequest(argv)
      return async () => {
        let drained = false
        await operate(opts, (api) => api.drainWorker(id, body), (res) => {
          drained = res.body.worker.scheduling === 'drained'
          return formatScheduling('drain', res.body, Date.now())
        })
        if (!detach && !drained && process.exitCode === undefined) await waitDrained(opts, id)
      }
    }
    case 'workers': {
      const opts = buildApiOptions(argv)
      return () => operate(opts, (api) => api.listWorkers(), (res) => formatWorkers(res.body.workers, { now: Date.now(), color }))
    }
    case 'status': {
      const opts = buildApiOptions(argv)
      return () => operate(opts, (api) => api.status(), (res) => formatStatus(res.body))
    }
    case 'watch': {
      const opts = buildApiOptions(argv)
      const metrics = argv.metrics === true
      return () => runWatch(opts, metrics, color)
    }
    case 'health': {
      const opts = buildApiOptions(argv)
      return () => operate(opts, (api) => api.health(), (res) => formatHealth(res.body, { color }), (res) => res.status !== 200)
    }
    case 'metrics': {
      const opts = buildApiOptions(argv)
      const id = parseWorkerIdArg(argv.id)
      const since = parseSinceArg(argv.since)
      return () => operate(opts, (api) => api.workerMetrics(id, since), (res) => formatWorkerMetrics(res.body, { now: Date.now(), color }))
    }
    case 'task':
      return prepareTask(action ?? 'show', argv, taskCommand, color)
    case 'tasks': {
      const opts = buildApiOptions(argv)
      const query = buildTaskQuery(argv)
      return () => operate(opts, (api) => api.listTasks(query), (res) => formatTasks(res.body, { now: Date.now(), color, status: query.status }))
    }
    case 'cancel':
      return prepareTask('cancel', argv, taskCommand, color)
    case 'logs': {
      const opts = buildApiOptions(argv)
      const id = parseTaskIdArg(argv.id)
      const logs = buildLogsOptions(argv)
      return async () => {
        try {
          process.exitCode = await runLogs(opts.api, opts.apiToken, id, logs, { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) })
        } catch (err) {
          process.stderr.write(`${formatError(err)}\n`)
          process.exitCode = EXIT_FAILURE
        }
      }
    }
  }
}

function prepareTask(action: TaskAction, argv: Record<string, unknown>, taskCommand: readonly string[], color: boolean): () => Promise<void> {
  const opts = buildApiOptions(argv)
  switch (action) {
    case 'submit': {
      const body = buildTaskSubmitBody(argv, taskCommand)
      return () => operate(opts, (api) => api.submitTask(body), (res) => formatTaskSubmitted(res.body.task), undefined, TASK_SUBMIT_FLAGS)
    }
    case 'show': {
      const id = parseTaskIdArg(argv.id)
      return () => operate(opts, (api) => api.getTask(id), (res) => formatTask(res.body, { now: Date.now(), color }))
    }
    case 'cancel': {
      const id = parseTaskIdArg(argv.id)
      return () => operate(opts, (api) => api.cancelTask(id), (res) => formatTaskCancelled(res.body.task))
    }
  }
}

// --- operator commands -------------------------------------------------------------------------

/** `failed`: an answer that is a "no" (unhealthy) exits with 1 after it is shown. */
async function operate<T>(
  opts: ApiCommandOptions,
  call: (api: ApiClient) => Promise<ApiResponse<T>>,
  show: (res: ApiResponse<T>) => string,
  failed?: (res: ApiResponse<T>) => boolean,
  flags?: Readonly<Record<string, string>>,
): Promise<void> {
  try {
    const res = await call(new ApiClient(opts.api, { token: opts.apiToken }))
    process.stdout.write(`${opts.json ? res.text.trimEnd() : show(res)}\n`)
    if (failed?.(res)) process.exitCode = EXIT_FAILURE
  } catch (err) {
    // Scripts asking for JSON get the master's error body too; people read the line on stderr.
    const body = isCloudaiError(err) ? err.details?.body : undefined
    if (opts.json && typeof body === 'string' && body !== '') process.stdout.write(`${body.trimEnd()}\n`)
    process.stderr.write(`${formatError(err, flags)}\n`)
    process.exitCode = EXIT_FAILURE
  }
}

/** `watch`: events until Ctrl-C; a lost connection is said on stderr and retried. */
async function runWatch(opts: ApiCommandOptions, metrics: boolean, color: boolean): Promise<void> {
  const known = new Set<string>()
  // ws is loaded by the commands that open the WebSocket, not by every command.
  const { LiveConnection } = await import('./watch.js')
  const conn = new LiveConnection(
    { api: opts.api, apiToken: opts.apiToken, ...(metrics ? {} : { subscribe: { remove: ['metrics'] } }) },
    {
      message: (m: WatchMessage) => {
        if (m.type === 'subscribed' || (!metrics && m.type === 'worker_metrics')) return
        const line = opts.json ? JSON.stringify(m) : formatEvent(m, { color, known })
        if (line !== null) process.stdout.write(`${line}\n`)
      },
      lost: (reason) => process.stderr.write(`connection to the master lost (${reason}); reconnecting...\n`),
    },
  )
  try {
    await conn.open()
  } catch (err) {
    process.stderr.write(`${formatError(err)}\n`)
    process.exitCode = EXIT_FAILURE
    return
  }
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      conn.close()
      resolve()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

/** How often `drain` asks the master how the drain goes. */
const DRAIN_POLL_MS = 500

/**
 * `drain` without --detach: until the worker is drained, with a progress line on stderr each time
 * what is left changes. Ctrl-C stops the waiting only: the drain goes on on the master (as nomad's).
 * A drain stopped or the worker unregistered meanwhile fails (exit 1); a master that does not answer
 * for a while (a restart) is waited for.
 */
async function waitDrained(opts: ApiCommandOptions, id: string): Promise<void> {
  const api = new ApiClient(opts.api, { token: opts.apiToken })
  let interrupted = false
  let wake: (() => void) | null = null
  const onSignal = (): void => {
    interrupted = true
    wake?.()
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let last = ''
  let unreachable = false
  try {
    for (;;) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, DRAIN_POLL_MS)
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      wake = null
      if (interrupted) {
        process.stderr.write(`Stopped waiting: the drain of worker ${id} goes on on the master (cloudai workers shows it; cloudai uncordon ${id} ends it)\n`)
        process.exitCode = 130
        return
      }
      let w
      try {
        w = (await api.getWorker(id)).body
      } catch (err) {
        if (isCloudaiError(err) && err.code === 'CLOUDAI_API_UNREACHABLE') {
          if (!unreachable) process.stderr.write(`${formatError(err)}; still waiting for the drain of worker ${id}...\n`)
          unreachable = true
          continue
        }
        throw err
      }
      unreachable = false
      if (w.scheduling === 'drained') {
        process.stdout.write(`${opts.json ? JSON.stringify(w) : formatDrained(w)}\n`)
        return
      }
      if (w.scheduling !== 'draining') {
        process.stderr.write(`error: the drain of worker ${id} was stopped (the worker is ${w.scheduling ?? 'eligible'} now)\n`)
        process.exitCode = EXIT_FAILURE
        return
      }
      const line = `draining worker ${id}: ${formatDrainProgress(w, Date.now())}`
      const key = `${w.running_tasks.length} ${w.drain?.deadline ?? ''} ${w.drain?.deadline && Date.parse(w.drain.deadline) <= Date.now()}`
      if (key !== last) process.stderr.write(`${line}\n`)
      last = key
    }
  } catch (err) {
    process.stderr.write(`${formatError(err)}\n`)
    process.exitCode = EXIT_FAILURE
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** `register --wait`: until the worker is active, its registration is withdrawn, or the timeout. */
async function waitActive(opts: ApiCommandOptions, id: string, timeoutMs: number): Promise<void> {
  const { LiveConnection } = await import('./watch.js')
  const spinner = new Spinner(`waiting for worker ${id} to connect`).start()
  let finish!: (outcome: 'active' | 'removed' | 'timeout') => void
  const outcome = new Promise<'active' | 'removed' | 'timeout'>((resolve) => (finish = resolve))
  const conn = new LiveConnection({ api: opts.api, apiToken: opts.apiToken, subscribe: { remove: ['metrics', 'tasks'] } }, {
    message: (m: WatchMessage) => {
      if (m.type === 'snapshot' && m.workers.some((w) => w.worker_id === id && w.is_active)) finish('active')
      else if (m.type === 'worker_status' && m.worker_id === id && m.is_active) finish('active')
      else if (m.type === 'worker_removed' && m.worker_id === id) finish('removed')
    },
  })
  const timer = setTimeout(() => finish('timeout'), timeoutMs)
  try {
    await Promise.race([conn.open(), outcome])
    const result = await outcome
    spinner.stop()
    if (result === 'active') {
      if (!opts.json) process.stdout.write(`✅ Worker ${id} is active\n`)
      return
    }
    const why = result === 'removed'
      ? `worker ${id} was unregistered while we waited for it`
      : `worker ${id} did not become active within ${timeoutMs / 1000}s; it stays registered and the master keeps dialling it`
    process.stderr.write(`error: ${why}\n`)
    process.exitCode = EXIT_FAILURE
  } catch (err) {
    spinner.stop()
    process.stderr.write(`${formatError(err)}\n`)
    process.exitCode = EXIT_FAILURE
  } finally {
    clearTimeout(timer)
    conn.close()
  }
}

// --- master and worker processes ---------------------------------------------------------------

interface Service {
  start(): Promise<void>
  close(): Promise<void>
}

/**
 * Starts the service and shuts it down on SIGINT / SIGTERM (or when `onStarted`'s front end asks).
 * After a clean close the process is left to end by itself with exit code 0: a handle the
 * service leaked then shows up as a hang instead of being hidden by process.exit(). An unhandled
 * rejection or uncaught exception runs the same shutdown, then exits with code 1 (FaultGuard).
 */
async function serve<S extends Service>(
  name: 'master' | 'worker',
  log: Logger,
  create: () => S,
  onStarted?: (service: S, shutdown: (reason: string) => void) => (() => void) | undefined,
): Promise<void> {
  let service: S | undefined
  let closing = false
  let stopFrontEnd: (() => void) | undefined
  let closed: Promise<void> = Promise.resolve()
  const shutdown = (reason: string): void => {
    if (closing) {
      log.error({ reason }, `${reason} during shutdown: exiting at once`)
      process.exit(EXIT_FAILURE)
    }
    closing = true
    log.info({ reason }, `${reason}: shutting down the ${name}`)
    stopFrontEnd?.()
    closed = service?.close().catch((err: unknown) => {
      log.error({ err }, `the ${name} did not shut down cleanly`)
      process.exitCode = EXIT_FAILURE
    }) ?? closed
  }
  // Left in place after the close: signal listeners do not keep the process alive, and if a leaked
  // handle does, a second Ctrl-C still ends it.
  const onSignal = (signal: NodeJS.Signals): void => shutdown(`${signal} received`)
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const faults = new FaultGuard({
    name,
    log,
    shutdown: (reason) => {
      shutdown(reason)
      return closed
    },
  })
  faults.install()
  try {
    service = create()
    await service.start()
  } catch (err) {
    // A signal during start-up: close() is under way and decides the exit code.
    if (closing) return
    // A typed refusal (a port in use, a bad setting) is the operator's to fix, not a bug: its
    // reason and code, no stack trace.
    if (isCloudaiError(err)) log.error({ code: err.code, reason: err.message }, `the ${name} failed to start: ${err.message}`)
    else log.error({ err }, `the ${name} failed to start`)
    process.stderr.write(`${formatError(err)}\n`)
    process.exit(isCloudaiError(err) && START_REFUSALS.has(err.code) ? EXIT_USAGE : EXIT_FAILURE)
  }
  if (!closing && onStarted) stopFrontEnd = onStarted(service, shutdown)
}

async function runMaster(config: MasterConfig): Promise<void> {
  // Before anything logs or starts: on a Node.js (or platform) the HTTP API's uWebSockets.js
  // cannot run on, the master says why in one line and exits.
  try {
    loadUws()
  } catch (err) {
    if (!isCloudaiError(err)) throw err
    process.stderr.write(`${formatError(err)}\n`)
    process.exitCode = EXIT_FAILURE
    return
  }
  // Imported here rather than at the top: operator commands and flag errors should not load
  // pino, gRPC, uWebSockets.js and SQLite, nor a master without a terminal the prompt.
  const { createLogger, LogOutput } = await import('../shared/log.js')
  const logs = new LogOutput()
  const log = createLogger(config.log, logs)
  const { StandbyCycle } = await import('../master/standby-cycle.js')
  // Only with a terminal on both sides: the prompt prints what it is asked (a new worker's token
  // included) to stdout, which, redirected, is the log file.
  const startPrompt = process.stdin.isTTY === true && process.stdout.isTTY === true ? (await import('./prompt.js')).startPrompt : null
  // A master that loses its lease goes back to standby in the same process (standby-cycle.ts).
  let failed: () => void = () => undefined
  const create = (): InstanceType<typeof StandbyCycle> => new StandbyCycle(config, { log, onFailure: () => failed() })
  await serve('master', log, create, (cycle, shutdown) => {
    failed = () => {
      process.exitCode = EXIT_FAILURE
      shutdown('the deposed master could not start again as a standby')
    }
    if (!startPrompt) return undefined
    log.info({ step: 9 }, 'Interactive prompt started (type help for the commands)')
    const prompt = startPrompt({ control: cycle.control, input: process.stdin, output: process.stdout, logs, onExit: () => shutdown('exit at the prompt') })
    return () => prompt.close()
  })
}

async function runWorker(config: WorkerConfig): Promise<void> {
  const { createLogger } = await import('../shared/log.js')
  const log = createLogger(config.log)
  const { WorkerAgent } = await import('../worker/agent.js')
  await serve('worker', log, () => new WorkerAgent(config, { log }))
}

// --- entry ---------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<void> {
  const { args, command: taskCommand } = splitTaskCommand(argv)
  let chosen = null as Chosen | null
  try {
    await withoutHelpCache(parser(args, (c) => (chosen = c))).parseAsync()
  } catch (err) {
    // The word typed as a command: the first that looks like one (a flag's value before it, such
    // as --api's URL, does not).
    if (err instanceof UsageError) return usageFailed(err.message, commandOf(args), args.find((a) => /^[a-z][a-z-]*$/i.test(a)))
    throw err
  }
  // Nothing chosen: --help or --version was asked for and yargs printed it.
  if (chosen === null) return
  let run: () => Promise<void>
  try {
    run = prepare(chosen, taskCommand ?? [])
  } catch (err) {
    if (isCloudaiError(err) && err.code === 'CLOUDAI_BAD_CONFIG') return usageFailed(err.message, commandOf(args))
    throw err
  }
  await run()
}

main(hideBin(process.argv)).catch((err: unknown) => {
  process.stderr.write(`cloudai: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = EXIT_FAILURE
})
