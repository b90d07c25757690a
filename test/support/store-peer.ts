// A SQLite store in a process of its own: what a second master on the same host has. The test
// drives it over stdio, one JSON line per call and per answer, so that two processes can race
// for the lease and write beside each other on one data directory for real (two connections, two
// processes' locks), with nothing of ours mocked.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { childCwd, childEnv } from './cluster.js'
import type { Store } from '../../src/store/store.js'

interface PeerCall {
  id: number
  op: string
  args: unknown[]
}

type PeerAnswer = { id: number; ok: true; value: unknown } | { id: number; ok: false; code: string | null; message: string }

/** An error the peer's store threw, with its code (CLOUDAI_* or SQLITE_*). */
export class PeerError extends Error {
  constructor(readonly code: string | null, message: string) {
    super(message)
  }
}

/** The test's end: one child process with one SqliteStore on `dataDir`. */
export class StorePeer {
  private readonly child: ChildProcess
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private nextId = 1
  private readonly exited: Promise<void>
  private stderr = ''

  constructor(readonly name: string, dataDir: string) {
    this.child = spawn(process.execPath, [fileURLToPath(import.meta.url), dataDir], { cwd: childCwd(), env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c))
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const a = JSON.parse(line) as PeerAnswer
      const p = this.pending.get(a.id)
      if (!p) return
      this.pending.delete(a.id)
      if (a.ok) p.resolve(a.value)
      else p.reject(new PeerError(a.code, `${this.name}: ${a.message}`))
    })
    this.exited = new Promise((resolve) => this.child.once('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`${this.name} exited; stderr: ${this.stderr.slice(-2000)}`))
      this.pending.clear()
      resolve()
    }))
  }

  /** One call of the peer's store (open, writeTasks, acquireLease, fence, ...), answered once done there. */
  call<K extends keyof Store>(op: K, ...args: Store[K] extends (...a: infer A) => unknown ? A : never): Promise<Store[K] extends (...a: never[]) => infer R ? Awaited<R> : never> {
    const id = this.nextId++
    const answer = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }))
    this.child.stdin!.write(`${JSON.stringify({ id, op, args } satisfies PeerCall)}\n`)
    return answer as Promise<Store[K] extends (...a: never[]) => infer R ? Awaited<R> : never>
  }

  /** Closes the store (its WAL checkpointed as at any close) and waits for the process to end. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.stdin!.end()
    await this.exited
  }
}

// --- the child's end -------------------------------------------------------------------------------

async function serve(dataDir: string): Promise<void> {
  const { SqliteStore } = await import('../../src/store/sqlite/store.js')
  const store = new SqliteStore(dataDir)
  const rl = createInterface({ input: process.stdin })
  // In order, one at a time, as a master's journal and lease loop reach their store.
  let tail: Promise<void> = Promise.resolve()
  rl.on('line', (line) => {
    const c = JSON.parse(line) as PeerCall
    tail = tail.then(async () => {
      let a: PeerAnswer
      try {
        const fn = (store as unknown as Record<string, (...args: unknown[]) => unknown>)[c.op]!
        a = { id: c.id, ok: true, value: (await fn.apply(store, c.args)) ?? null }
      } catch (err) {
        const code = (err as { code?: unknown }).code
        a = { id: c.id, ok: false, code: typeof code === 'string' ? code : null, message: (err as Error).message }
      }
      process.stdout.write(`${JSON.stringify(a)}\n`)
    })
  })
  rl.on('close', () => {
    tail.then(() => store.close()).catch(() => undefined).finally(() => process.exit(0))
  })
}

// Run as the peer only with its data directory: `node --test dist/test/` also loads this file,
// with no argument, as it loads every file under test/.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] !== undefined) {
  serve(process.argv[2]).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`)
    process.exit(1)
  })
}
