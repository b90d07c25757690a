import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { test, type TestContext } from 'node:test'
import { PROMPT, startPrompt } from '../../src/cli/prompt.js'
import type { MasterControl } from '../../src/master/control.js'
import type { ClusterStatus, WorkerView } from '../../src/master/views.js'
import { CloudaiError } from '../../src/shared/errors.js'
import { validateAddress, validateWorkerId } from '../../src/shared/validation.js'

/** A MasterControl over a Map with the Master's validation and codes; `gate` holds register open. */
class FakeControl implements MasterControl {
  readonly workers = new Map<string, WorkerView>()
  failStatusWith: Error | null = null
  gate: Promise<void> = Promise.resolve()

  listWorkers(): WorkerView[] {
    return [...this.workers.values()]
  }

  getWorker(id: string): WorkerView {
    const w = this.workers.get(validateWorkerId(id, 'worker id'))
    if (!w) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    return w
  }

  async registerWorker(body: unknown): Promise<{ worker: WorkerView; created: boolean; persisted: boolean }> {
    const b = body as { worker_id?: unknown; worker_ip?: unknown }
    const id = validateWorkerId(b.worker_id)
    const address = validateAddress(b.worker_ip, 'worker_ip')
    await this.gate
    const existing = this.workers.get(id)
    if (existing) return { worker: existing, created: false, persisted: true }
    const worker = view(id, address)
    this.workers.set(id, worker)
    return { worker, created: true, persisted: true }
  }

  async unregisterWorker(id: string): Promise<{ worker_id: string; persisted: boolean }> {
    validateWorkerId(id, 'worker id')
    if (!this.workers.delete(id)) throw new CloudaiError('CLOUDAI_UNKNOWN_WORKER', `worker ${id} is not registered`)
    return { worker_id: id, persisted: true }
  }

  status(): ClusterStatus {
    if (this.failStatusWith) throw this.failStatusWith
    const active = this.listWorkers().filter((w) => w.is_active).length
    return {
      workers: this.workers.size,
      active,
      inactive: this.workers.size - active,
      reconnect_monitor: 'running',
      store: { kind: 'memory', healthy: true, pending_writes: 0, last_error: null },
      grpc_address: '127.0.0.1:50051',
      started_at: new Date(0).toISOString(),
      uptime_s: 65,
    }
  }
}

function view(id: string, address: string): WorkerView {
  return {
    worker_id: id,
    worker_ip: address,
    address,
    is_active: false,
    status: 'inactive',
    total_cpu: null,
    total_memory: null,
    total_storage: null,
    total_gpu: null,
    usage: null,
    running_tasks: [],
    reported_address: null,
    last_heartbeat: null,
    registered_at: new Date(0).toISOString(),
    connected_at: null,
    disconnected_at: null,
    reconnects: 0,
  }
}

/** A prompt on in-memory streams; `run` types a line and returns what was printed before the next prompt. */
async function session(t: TestContext, control = new FakeControl()) {
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
  const s = await session(t)
  assert.match(await s.run('status'), /^Workers: +0\nActive: +0\nInactive: +0\nMonitor: +running\nStore: +memory, healthy\ngRPC: +127.0.0.1:50051\nUptime: +1m 5s\n$/)
  assert.match(await s.run('workers'), /^No workers registered/)
  await s.run('register worker-1 127.0.0.1:50052')
  const table = await s.run('workers')
  assert.match(table, /^ID +STATUS +ADDRESS/)
  assert.match(table, /^worker-1 +○ Inactive +127\.0\.0\.1:50052 .* never$/m)
  assert.match(table, /^1 worker: 0 active, 1 inactive$/m)
  assert.ok(!table.includes('\x1b['), 'no colour on a stream that is not a terminal')
})

test('register and unregister go through the control and print the result', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  assert.equal(await s.run('register worker-1 127.0.0.1:50052'), '✅ Worker worker-1 registered (offline, will reconnect automatically)\n')
  assert.ok(s.control.workers.has('worker-1'))
  assert.match(await s.run('register worker-1 127.0.0.1:50052'), /^Worker worker-1 is already registered at 127\.0\.0\.1:50052 \(inactive\)/)
  assert.match(await s.run('unregister worker-1'), /^Worker worker-1 unregistered/)
  assert.equal(s.control.workers.size, 0)
})

test('errors print "error: <message> (<code>)" and the prompt goes on', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  assert.match(await s.run('register bad! 127.0.0.1:50052'), /^error: worker_id "bad!" is invalid.*\(CLOUDAI_BAD_WORKER_ID\)\n$/)
  assert.match(await s.run('register w1 nowhere'), /^error: .*host:port.*\(CLOUDAI_BAD_ADDRESS\)\n$/)
  assert.equal(await s.run('unregister ghost'), 'error: worker ghost is not registered (CLOUDAI_UNKNOWN_WORKER)\n')
  s.control.failStatusWith = new Error('registry exploded')
  assert.equal(await s.run('status'), 'error: internal error: registry exploded (CLOUDAI_INTERNAL)\n')
  assert.equal(await s.run('register only-one-arg'), 'usage: register <id> <host:port>\n')
  assert.equal(await s.run('unregister'), 'usage: unregister <id>\n')
  assert.equal(s.exits, 0)
})

test('an unknown command points at help, and help lists every command', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  assert.match(await s.run('frobnicate now'), /unknown command "frobnicate".*type help/)
  const help = await s.run('help')
  for (const command of ['status', 'workers', 'register <id> <host:port>', 'unregister <id>', 'help', 'exit']) assert.ok(help.includes(command), command)
  assert.equal(await s.run(''), '')
  assert.match(await s.run('  STATUS  '), /^Workers:/)
})

test('commands run in the order typed, even when one of them waits', { timeout: 5000 }, async (t) => {
  const s = await session(t)
  let open!: () => void
  s.control.gate = new Promise((resolve) => (open = resolve))
  const mark = s.text.length
  s.input.write('register w1 127.0.0.1:50052\nworkers\n')
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
