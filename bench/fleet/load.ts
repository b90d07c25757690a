// The parent side of the heartbeat load generator: G child processes (load-child.ts), the workers
// dealt among them, each step's rate split evenly, their answers merged.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { LoadCommand, LoadReply } from './load-child.js'

export interface StepLoad {
  sent: number
  answered: number
  errors: number
  latencies: number[]
}

class LoadChild {
  private waiting: ((r: LoadReply) => void) | null = null
  readonly exited: Promise<void>

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (r: LoadReply) => {
      const w = this.waiting
      this.waiting = null
      w?.(r)
    })
    this.exited = new Promise((resolve) => proc.once('exit', () => {
      this.waiting?.({ type: 'error', error: 'load generator exited' })
      resolve()
    }))
  }

  ask(cmd: LoadCommand): Promise<LoadReply> {
    return new Promise((resolve, reject) => {
      this.waiting = (r) => (r.type === 'error' ? reject(new Error(`load generator: ${r.error}`)) : resolve(r))
      this.proc.send(cmd)
    })
  }
}

export class LoadGenerator {
  private constructor(private readonly children: LoadChild[]) {}

  /** Forks `processes` generators for `ids` (dealt round-robin), registers them all with `address`. */
  static async start(opts: { processes: number; address: string; ids: string[]; transport: 'unary' | 'stream' }): Promise<LoadGenerator> {
    const path = fileURLToPath(new URL('./load-child.js', import.meta.url))
    const n = Math.max(1, Math.min(opts.processes, opts.ids.length))
    const gen = new LoadGenerator(Array.from({ length: n }, () => new LoadChild(fork(path, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))))
    try {
      await Promise.all(gen.children.map((c, k) => c.ask({ type: 'setup', address: opts.address, ids: opts.ids.filter((_, i) => i % n === k), firstPort: 20000 + k * 1000, transport: opts.transport })))
    } catch (err) {
      await gen.stop()
      throw err
    }
    return gen
  }

  /** Every generator sends its share of `rate` for `stepMs`; unary answers are awaited. */
  async step(rate: number, stepMs: number): Promise<StepLoad> {
    const n = this.children.length
    const parts = await Promise.all(this.children.map((c, k) => c.ask({ type: 'step', rate: Math.floor(rate / n) + (k < rate % n ? 1 : 0), stepMs })))
    const out: StepLoad = { sent: 0, answered: 0, errors: 0, latencies: [] }
    for (const p of parts) {
      if (p.type !== 'step') continue
      out.sent += p.sent
      out.answered += p.answered
      out.errors += p.errors
      for (const l of p.latencies) out.latencies.push(l)
    }
    return out
  }

  async stop(): Promise<void> {
    await Promise.all(this.children.map(async (c) => {
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) return
      const timer = setTimeout(() => c.proc.kill('SIGKILL'), 5000)
      c.proc.send({ type: 'stop' } satisfies LoadCommand)
      await c.exited
      clearTimeout(timer)
    }))
  }
}
