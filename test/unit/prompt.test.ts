import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { after, before, test, type TestContext } from 'node:test'
import { PROMPT, parseFlags, startPrompt } from '../../src/cli/prompt.js'
import { TASK_SUBMIT_OPTIONS } from '../../src/cli/options.js'
import { splitWords } from '../../src/cli/words.js'
import { CloudaiError } from '../../src/shared/errors.js'
import type { WorkerRecord } from '../../src/shared/types.js'
import { MemoryStore } from '../../src/store/memory.js'
import { FlakyStore } from '../support/flaky-store.js'
import { startTestMaster, type TestMaster, ownMaster } from '../support/test-master.js'

// The `master>` prompt on in-memory streams, in front of the real master's control service
// (test/support/test-master.ts): one master for the file; the tests that print the whole registry
// or task table, or need a store of their own, start theirs.

let m: TestMaster
before(async () => {
  m = await startTestMaster()
})
after(() => m.close())

/** The token a registration or a rotation printed. */
const tokenIn = (text: string): string => /^Token: (cwt1_\S+)$/m.exec(text)?.[1] ?? assert.fail(`no token in ${JSON.stringify(text)}`)

/** A prompt on in-memory streams; `run` types a line and returns what was printed before the next prompt. */
async function session(t: TestContext, master: TestMaster = m) {
  const control = master.control
  const input = new PassThrough()
  const output = new PassThrough()
  let text = ''
  let listeners: (() => void)[] = []
  output.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk
    for (const l of listeners) l()
  })
  const until = (done: () => boolean): Promise<void> =>
    new Promise((resolve) => {
      if (done()) return resolve()
      const check = (): void => {
        if (!done()) return
        listeners = listeners.filter((l) => l !== check)
        resolve()
      }
      listeners.push(check)
    })
  let exits = 0
  let exited!: () => void
  const exitedPromise = new Promise<void>((resolve) => (exited = resolve))
  const prompt = startPrompt({
    control,
    input,
    output,
    onExit: () => {
      exits++
      exited()
    },
  })
  t.after(() => prompt.close())
  await until(() => text === PROMPT)
  return {
    control,
    master,
    input,
    prompt,
    exited: exitedPromise,
    get exits() {
      return exits
    },
    get text() {
      return text
    },
    until,
    /** Types `line` and resolves with the output up to the prompt that follows it. */
    async run(line: string): Promise<string> {
      const mark = text.length
      input.write(`${line}\n`)
      await until(() => text.length > mark && text.endsWith(PROMPT))
      return text.slice(mark, -PROMPT.length)
    },
  }
}

test('status and workers print what the CLI prints', { timeout: 5000 }, async (t) => {
  const s = await session(t, await ownMaster(t))
  const grpc = s.master.master.advertiseAddress.replaceAll('.', '\\.')
  assert.match(await s.run('status'), new RegExp(`^Workers: +0\nActive: +0\nInactive: +0\nTasks: +none\nMonitor: +running\nStore: +memory, healthy\ngRPC: +${grpc}\nWorker auth: +token \\(without one: loopback only, for workers that never presented theirs\\)\nUptime: +\\d+s\n$`))
  assert.match(await s.run('workers'), /^No workers registered/)
  await s.run('register worker-1 127.0.0.2:601')
  const table = await s.run('workers')
  assert.match(table, /^ID +STATUS +ADDRESS/)
  assert.match(table, /^worker-1 +○ Inactive +127\.0\.0\.2:601 .* never$/m)
  assert.match(table, /^1 worker: 0 active, 1 inactive$/m)
  assert.ok(!table.includes('\x1b['), 'no colour on a stream that is not a terminal')
})

test('register, token rotate and unregister go through the control and print the result; the token is shown once', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  const registered = await s.run('register worker-1 127.0.0.2:601')
  t.after(() => s.control.unregisterWorker('worker-1').catch(() => {}))
  assert.ok(registered.startsWith('✅ Worker worker-1 registered (offline, will reconnect automatically)\n'), registered)
  const token = tokenIn(registered)
  assert.match(registered, /Shown once/)
  assert.match(registered, /cloudai worker --id worker-1 --token-file <file>/)
  assert.equal(s.control.getWorker('worker-1').address, '127.0.0.2:601')
  const again = await s.run('register worker-1 127.0.0.2:601')
  assert.match(again, /^Worker worker-1 is already registered at 127\.0\.0\.2:601 \(inactive\)/)
  assert.ok(!again.includes('cwt1_'), 'a repeated registration shows no token')
  assert.match(again, /cloudai token rotate worker-1/)
  const rotated = await s.run('token rotate worker-1')
  const next = tokenIn(rotated)
  assert.notEqual(next, token)
  assert.match(rotated, /^✅ New token for worker worker-1\. The old token works until the worker presents this one, at the latest until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\.\n/)
  assert.equal(await s.run('token rotate'), 'usage: token rotate <id>\n')
  assert.equal(await s.run('token rotate ghost'), 'error: worker ghost is not registered (CLOUDAI_UNKNOWN_WORKER)\n')
  assert.match(await s.run('unregister worker-1'), /^Worker worker-1 unregistered/)
  assert.ok(!s.control.listWorkers().some((w) => w.worker_id === 'worker-1'))
})

test('errors print "error: <message> (<code>)" and the prompt goes on', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  assert.match(await s.run('register bad! 127.0.0.2:601'), /^error: worker_id "bad!" is invalid.*\(CLOUDAI_BAD_WORKER_ID\)\n$/)
  assert.match(await s.run('register w1 nowhere'), /^error: .*host:port.*\(CLOUDAI_BAD_ADDRESS\)\n$/)
  assert.equal(await s.run('unregister ghost'), 'error: worker ghost is not registered (CLOUDAI_UNKNOWN_WORKER)\n')
  assert.equal(await s.run('register only-one-arg'), 'usage: register <id> <host:port>\n')
  assert.equal(await s.run('unregister'), 'usage: unregister <id>\n')
  assert.equal(s.exits, 0)
})

test('an unexpected failure prints "error: internal error: <message> (CLOUDAI_INTERNAL)" and the prompt goes on', { timeout: 5000 }, async (t) => {
  // A store that holds a record no master wrote: its registration time is not a time.
  const store = new MemoryStore()
  const broken: WorkerRecord = { id: 'w-broken', address: '127.0.0.2:1', isActive: false, specs: null, usage: null, runningTasks: [], reportedAddress: null, registeredAt: Number.NaN, connectedAt: null, lastHeartbeat: null, disconnectedAt: null, reconnects: 0, credential: null }
  await store.writeWorkers({ upserts: [broken], deletes: [] } as never)
  const s = await session(t, await ownMaster(t, { store, config: { reconnectIntervalMs: 0 } }))
  assert.equal(await s.run('workers'), 'error: internal error: Invalid time value (CLOUDAI_INTERNAL)\n')
  assert.match(await s.run('status'), /^Workers: +1\n/)
  assert.equal(s.exits, 0)
})

test('while the master shuts down, a change at the prompt is refused with CLOUDAI_SHUTTING_DOWN', { timeout: 5000 }, async (t) => {
  const own = await ownMaster(t)
  const s = await session(t, own)
  await own.close()
  assert.equal(await s.run('register w-late 127.0.0.2:601'), 'error: the master is shutting down (CLOUDAI_SHUTTING_DOWN)\n')
  assert.equal(await s.run('submit true'), 'error: the master is shutting down (CLOUDAI_SHUTTING_DOWN)\n')
  assert.match(await s.run('status'), /^Workers: +0\n/, 'a read is still answered')
})

test('an unknown command points at help, and help lists every command', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  assert.match(await s.run('frobnicate now'), /unknown command "frobnicate".*type help/)
  const help = await s.run('help')
  for (const command of ['status', 'workers', 'register <id> <host:port>', 'unregister <id>', 'token rotate <id>', 'task submit [flags] -- <command...>', 'submit <command...>', 'tasks [--status S]', 'queue', 'task <id>', 'cancel <id>', 'help', 'exit']) {
    assert.ok(help.includes(command), command)
  }
  const submitHelp = await s.run('help submit')
  for (const flag of Object.keys(TASK_SUBMIT_OPTIONS)) assert.match(submitHelp, new RegExp(`^  --${flag} `, 'm'), flag)
  assert.equal(await s.run(''), '')
  assert.match(await s.run('  STATUS  '), /^Workers:/)
})

test('commands run in the order typed, even when one of them waits', { timeout: 5000 }, async (t) => {
  // The store is slow: the registration waits for it (it answers whether the store has it).
  const store = new FlakyStore()
  const s = await session(t, await ownMaster(t, { store }))
  let open!: () => void
  store.holdWorkers = new Promise((resolve) => (open = resolve))
  const mark = s.text.length
  s.input.write('register w1 127.0.0.2:601\nworkers\n')
  // Nothing of `workers` may show up while the register before it is still waiting.
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(s.text.slice(mark), '')
  open()
  await s.until(() => /1 worker: 0 active, 1 inactive\n/.test(s.text))
  assert.ok(s.text.indexOf('✅ Worker w1 registered') < s.text.indexOf('1 worker:'))
})

for (const word of ['exit', 'quit']) {
  test(`${word} calls onExit once and stops reading`, { timeout: 5000 }, async (t) => {
    const s = await session(t)
    s.input.write(`${word}\nstatus\n`)
    await s.exited
    s.input.end()
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(s.exits, 1)
    assert.ok(!s.text.includes('Workers:'), 'nothing runs after exit')
  })
}

test('Ctrl-D (end of input) is exit, after the commands typed before it', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  s.input.end('status\n')
  await s.exited
  assert.match(s.text, /Workers: +0/)
  assert.equal(s.exits, 1)
})

test('close() stops the prompt without calling onExit', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  s.prompt.close()
  s.prompt.close()
  s.input.end('status\n')
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(s.exits, 0)
  assert.ok(!s.text.includes('Workers:'))
})

/** Runs a submit at the prompt; resolves with the task the master queued, and its environment as stored. */
async function submitted(s: Awaited<ReturnType<typeof session>>, line: string): Promise<{ task: ReturnType<TestMaster['control']['getTask']>; env: Record<string, string> | undefined }> {
  const out = await s.run(line)
  const id = /^✅ Task (task-\S+) queued\n$/.exec(out)?.[1] ?? assert.fail(`${line}: ${JSON.stringify(out)}`)
  const stored = (await s.master.store.loadTasks()).find((x) => x.id === id)
  return { task: s.control.getTask(id), env: stored?.env }
}

test("task submit takes the CLI's flags, and the words after -- are the command", { timeout: 5000 }, async (t) => {
  const s = await session(t)
  const first = await submitted(s, `task submit --cpu 2 --mem=0.5 --name "nightly build" --env MODE=fast --env 'GREETING=hello world' --timeout 10m -- 'make test | tee out.log'`)
  assert.deepEqual([first.task.command, first.task.name, first.task.req_cpu, first.task.req_memory, first.task.timeout_s], ['make test | tee out.log', 'nightly build', 2, 0.5, 600])
  assert.deepEqual(first.env, { MODE: 'fast', GREETING: 'hello world' })
  // The shortcut: no flags, everything after it is the command; "--cpu" here is the command's.
  const second = await submitted(s, 'submit sleep 600 --cpu 1')
  assert.deepEqual([second.task.command, second.task.req_cpu, second.env], ['sleep 600 --cpu 1', 0, {}])
  const third = await submitted(s, 'SUBMIT -- echo "a  b"')
  assert.equal(third.task.command, 'echo a  b')
})

test('a flag given twice at the prompt is its last value and --env keeps every one, as on the command line', { timeout: 5000 }, async (t) => {
  const s = await session(t, await ownMaster(t))
  const first = await submitted(s, 'task submit --cpu 1 --cpu 2 --name a --name=b --timeout 1s --timeout 2s --env A=1 --env=B=2 -- echo hi')
  assert.deepEqual([first.task.command, first.task.name, first.task.req_cpu, first.task.timeout_s, first.env], ['echo hi', 'b', 2, 2, { A: '1', B: '2' }])
  // An earlier bad value is overridden; a bad last one is refused.
  const second = await submitted(s, 'task submit --cpu -1 --cpu 0.5 -- true')
  assert.equal(second.task.req_cpu, 0.5)
  assert.match(await s.run('task submit --cpu 0.5 --cpu -1 -- true'), /^error: --cpu "-1" is not an amount/)
  await s.control.cancelTask(second.task.task_id)
  // The last --status and --limit: one queued task of the one there is (none failed).
  const listed = await s.run('tasks --status failed --status queued --limit 5 --limit 1')
  assert.match(listed, new RegExp(`^${first.task.task_id} +b +queued `, 'm'))
  assert.doesNotMatch(listed, new RegExp(second.task.task_id))
})

test('tasks, queue, task <id> and cancel <id> print what the CLI prints', { timeout: 5000 }, async (t) => {
  const s = await session(t, await ownMaster(t))
  assert.equal(await s.run('tasks'), 'No tasks yet: submit one with task submit -- <command...>\n')
  assert.equal(await s.run('queue'), 'No queued tasks\n')
  const first = (await submitted(s, 'task submit --name greet -- echo hello')).task
  const one = first.task_id
  // Newest first is by submission time, to the millisecond (ties go by id): the second task is
  // submitted at a later millisecond, or the order below would be a coin toss.
  const at = Date.parse(first.submitted_at)
  while (Date.now() <= at) await new Promise((r) => setImmediate(r))
  const two = (await submitted(s, 'submit sleep 600')).task.task_id
  const table = await s.run('tasks')
  assert.match(table, /^ID +NAME +STATUS +WORKER +ATTEMPTS +SUBMITTED +EXIT$/m)
  assert.match(table, new RegExp(`^${two} +sleep 600 +queued +- +0/3 `, 'm'))
  assert.match(table, new RegExp(`^${one} +greet +queued `, 'm'))
  assert.ok(table.indexOf(two) < table.indexOf(one), 'newest first')
  assert.match(table, /^2 tasks: 2 queued$/m)
  assert.ok(!table.includes('\x1b['), 'no colour on a stream that is not a terminal')
  assert.match(await s.run('queue'), /^2 tasks: 2 queued$/m)
  const page = await s.run('tasks --status pending --limit 1 --offset 1')
  assert.match(page, /^Showing 1 of 2 tasks/m)
  assert.match(page, new RegExp(`^${one} +greet +queued `, 'm'), 'the second newest')
  const shown = await s.run(`task ${one}`)
  assert.match(shown, new RegExp(`^Task: +${one}\nName: +greet\nStatus: +queued\nCommand: +echo hello$`, 'm'))
  assert.match(shown, /^History:$/m)
  assert.equal(await s.run(`cancel ${two}`), `Task ${two} cancelled\n`)
  assert.equal(await s.run('tasks --status cancelled'), await s.run('tasks --status=cancelled'))
  assert.match(await s.run('tasks --status cancelled'), new RegExp(`^${two} +sleep 600 +cancelled `, 'm'))
  assert.equal(await s.run(`task cancel ${one}`), `Task ${one} cancelled\n`)
  assert.equal(await s.run('queue'), 'No queued tasks\n')
})

test('task command mistakes print an error or the usage, change nothing, and the prompt goes on', { timeout: 5000 }, async (t) => {
  const s = await session(t, await ownMaster(t))
  const done = (await submitted(s, 'submit true')).task.task_id
  await s.run(`cancel ${done}`)
  const cases: [string, RegExp][] = [
    ['task submit --cpu -1 -- echo', /^error: --cpu "-1" is not an amount.*\(CLOUDAI_BAD_CONFIG\)\n$/],
    ['task submit --cpu 1', /^usage: task submit \[flags\] -- <command\.\.\.>/],
    ['task submit echo hello', /^usage: task submit \[flags\] -- <command\.\.\.>/],
    ['task submit --', /^error: the task needs a command after --/],
    ['task submit --gpus 1 -- echo', /^error: task submit has no flag --gpus: use --cpu, --mem, .*\(CLOUDAI_BAD_REQUEST\)\n$/],
    ['task submit --cpu', /^error: --cpu needs a value/],
    ['task submit --cpu -- echo', /^error: --cpu needs a value/],
    ['task submit --env NOPE -- echo', /^error: --env "NOPE" is not KEY=VALUE/],
    ['submit', /^usage: submit <command\.\.\.>/],
    ['submit "unclosed', /^error: the double quote at column 8 is not closed \(CLOUDAI_BAD_REQUEST\)\n$/],
    ['tasks --status done', /^error: --status "done" is not a task status/],
    ['tasks --limit 0', /^error: --limit "0" is not allowed/],
    ['tasks running', /^usage: tasks \[--status S\]/],
    ['queue 5', /^usage: queue/],
    ['task', /^usage: task <id> \| task submit/],
    ['task a b', /^usage: task <id>/],
    ['task ghost', /^error: task ghost does not exist \(CLOUDAI_UNKNOWN_TASK\)\n$/],
    ['task task-zzzz', /^error: task task-zzzz does not exist \(CLOUDAI_UNKNOWN_TASK\)\n$/],
    ['task "bad id"', /^error: task id "bad id" is invalid.*\(CLOUDAI_BAD_TASK_ID\)\n$/],
    ['cancel', /^usage: cancel <id>\n$/],
    [`cancel ${done}`, new RegExp(`^error: task ${done} is already cancelled; only queued, assigned or running tasks can be cancelled \\(CLOUDAI_TASK_FINISHED\\)\n$`)],
  ]
  const tasks = (): string => JSON.stringify(s.control.listTasks({}))
  const before = tasks()
  for (const [line, expected] of cases) {
    assert.match(await s.run(line), expected, line)
    assert.equal(tasks(), before, `${line} changed the tasks`)
  }
  assert.equal(s.control.listTasks({}).total, 1, 'nothing invalid reached submitTask')
  assert.match(await s.run('help submit'), /^usage: task submit \[flags\] -- <command\.\.\.>\n {2}--cpu N/)
  assert.equal(s.exits, 0)
})

test('prompt lines are split into words as a shell splits them', () => {
  const cases: [string, string[]][] = [
    ['', []],
    ['   \t ', []],
    ['status', ['status']],
    ['  register   w1\t127.0.0.2:1  ', ['register', 'w1', '127.0.0.2:1']],
    [String.raw`task submit -- 'echo hello | wc -c'`, ['task', 'submit', '--', 'echo hello | wc -c']],
    [String.raw`--name "nightly build"`, ['--name', 'nightly build']],
    [String.raw`'' ""`, ['', '']],
    [String.raw`a"b c"d`, ['ab cd']],
    [String.raw`'it'\''s'`, ["it's"]],
    // In double quotes a backslash escapes only " \ $ ` and keeps itself before anything else.
    [String.raw`"say \"hi\" \\ \$HOME \x"`, [String.raw`say "hi" \ $HOME \x`]],
    [String.raw`'no \escapes "here"'`, [String.raw`no \escapes "here"`]],
    [String.raw`one\ word two`, ['one word', 'two']],
    [String.raw`\'quote`, ["'quote"]],
    ['$HOME *.txt ~ a;b', ['$HOME', '*.txt', '~', 'a;b']],
    ['--env=A=1', ['--env=A=1']],
    ['snow ☃ "unicode ✓"', ['snow', '☃', 'unicode ✓']],
  ]
  for (const [line, words] of cases) assert.deepEqual(splitWords(line), words, line)
  const bad: [string, RegExp][] = [
    [String.raw`echo 'open`, /single quote at column 6 is not closed/],
    [String.raw`echo "open`, /double quote at column 6 is not closed/],
    [String.raw`echo "a\"`, /double quote at column 6 is not closed/],
    ['trailing \\\\\\', /ends with a backslash/],
  ]
  for (const [line, message] of bad) {
    assert.throws(() => splitWords(line), (err: unknown) => err instanceof CloudaiError && err.code === 'CLOUDAI_BAD_REQUEST' && message.test(err.message), line)
  }
})

test('prompt flags: --flag value and --flag=value, repeatable arrays, the rest left in order', () => {
  assert.deepEqual(parseFlags(['--cpu', '2', 'x', '--env=A=1', '--env', 'B=2', '--', 'y'], TASK_SUBMIT_OPTIONS, 'task submit'), {
    argv: { cpu: '2', env: ['A=1', 'B=2'] },
    rest: ['x', '--', 'y'],
  })
  assert.deepEqual(parseFlags(['--name='], TASK_SUBMIT_OPTIONS, 'task submit'), { argv: { name: '' }, rest: [] })
  // Repeats are handed over as yargs hands them, every value in order; the builders pick from them.
  assert.deepEqual(parseFlags(['--cpu', '1', '--cpu=2', '--env', 'A=1'], TASK_SUBMIT_OPTIONS, 'task submit'), { argv: { cpu: ['1', '2'], env: ['A=1'] }, rest: [] })
  assert.deepEqual(parseFlags(['-c', '1'], TASK_SUBMIT_OPTIONS, 'task submit'), { argv: {}, rest: ['-c', '1'] })
})

test('health and metrics at the prompt', async (t) => {
  const s = await session(t, await ownMaster(t))
  assert.equal(await s.run('health'), '● Healthy  (0 workers: 0 active, 0 inactive; monitor running; memory store ok)\n')
  await s.run('register w1 127.0.0.2:600')
  assert.match(await s.run('metrics w1'), /^Worker: +w1 \(inactive\)\n[\s\S]*No telemetry yet/)
  assert.equal(await s.run('metrics'), 'usage: metrics <id>\n')
  assert.match(await s.run('metrics nobody'), /CLOUDAI_UNKNOWN_WORKER/)
})

/** A prompt on a pretend terminal (`isTTY`, `columns`), with the log output it shares the screen with. */
function terminalSession(t: TestContext, columns: number) {
  const input = new PassThrough()
  const output = Object.assign(new PassThrough(), { isTTY: true, columns, rows: 24 })
  let text = ''
  output.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
  const logs: { around: ((text: string, write: (text: string) => void) => void) | null } = { around: null }
  const prompt = startPrompt({ control: m.control, input, output, logs, onExit: () => {} })
  t.after(() => prompt.close())
  const log = (line: string): void => {
    if (logs.around) logs.around(line, (s) => output.write(s))
    else output.write(line)
  }
  return { input, logs, log, prompt, get text() { return text } }
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Types `typed` (no Enter), then logs `line`: what the terminal got from the log line on. */
async function logWhileTyping(s: ReturnType<typeof terminalSession>, typed: string, line: string): Promise<string> {
  s.input.write(typed)
  await settle()
  const mark = s.text.length
  s.log(line)
  await settle()
  return s.text.slice(mark)
}

test('on a terminal a log line goes above the prompt, which is drawn again below it with what was typed', async (t) => {
  const s = terminalSession(t, 80)
  assert.ok(s.logs.around, 'the prompt takes the log output over on a terminal')
  const after = await logWhileTyping(s, 'regis', '{"msg":"Worker w1 is active"}\n')
  const at = after.indexOf('{"msg":"Worker w1 is active"}\n')
  assert.ok(at >= 0, JSON.stringify(after))
  assert.ok(after.slice(0, at).includes('\x1b[0J'), 'the prompt line is cleared first, not written into')
  assert.ok(after.slice(at).includes(`${PROMPT}regis`), `then drawn again with the typed text: ${JSON.stringify(after)}`)
  s.prompt.close()
  assert.equal(s.logs.around, null, 'given back when the prompt closes')
})

test('a typed line that wraps is cleared from its first row before a log line goes above it', async (t) => {
  const s = terminalSession(t, 20)
  const after = await logWhileTyping(s, 'task submit -- echo hel', 'LOG\n')
  assert.ok(after.startsWith('\x1b[1A'), `up one row to the prompt's first: ${JSON.stringify(after)}`)
  assert.ok(after.includes('LOG\n\n'), 'a row kept below for readline to redraw from')
})

test('cordon, uncordon and drain go through the control and print the new state; drain takes --deadline and --force', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  await s.run('register w-drain 127.0.0.2:601')
  const w = () => s.control.getWorker('w-drain')
  assert.match(await s.run('cordon w-drain'), /^Worker w-drain cordoned: no new tasks are placed on it/)
  assert.equal(w().scheduling, 'cordoned')
  assert.match(await s.run('uncordon w-drain'), /^Worker w-drain uncordoned: it takes tasks again\n$/)
  assert.equal(w().scheduling, 'eligible')
  assert.match(await s.run('drain w-drain --deadline 10m'), /^✅ Worker w-drain drained/)
  assert.equal(Date.parse(w().drain!.deadline!) - Date.parse(w().drain!.started_at), 600_000)
  // Drained is drained: draining again changes nothing.
  assert.match(await s.run('drain w-drain --force'), /drained/)
  assert.equal(w().drain?.force, false)
  await s.run('uncordon w-drain')
  assert.match(await s.run('drain w-drain --force'), /drained/)
  assert.equal(w().drain?.force, true)
  assert.match(await s.run('drain w-drain --deadline 0'), /^error: --deadline must be more than 0.*\(CLOUDAI_BAD_CONFIG\)\n$/)
  assert.match(await s.run('drain w-drain --deadline 1m --force'), /--force and --deadline do not go together/)
  assert.equal(await s.run('drain'), 'usage: drain <id> [--deadline D] [--force]\n')
  assert.equal(await s.run('cordon'), 'usage: cordon <id>\n')
  assert.equal(await s.run('cordon ghost'), 'error: worker ghost is not registered (CLOUDAI_UNKNOWN_WORKER)\n')
  const help = await s.run('help')
  for (const command of ['cordon <id>', 'uncordon <id>', 'drain <id> [--deadline D] [--force]']) assert.ok(help.includes(command), command)
})
