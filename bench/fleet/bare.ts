// The bare grpc-js baseline (bare-server.ts) as a child process the bench starts and stops: its
// pid for /proc readings, its address, and its heartbeat count over IPC.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export class BareServer {
  private readonly exited: Promise<void>

  private constructor(private readonly child: ChildProcess, readonly port: number) {
    this.exited = child.exitCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()))
  }

  /** `nodeArgs`: flags for node itself (e.g. --cpu-prof). */
  static async start(opts: { nodeArgs?: string[] } = {}): Promise<BareServer> {
    const child = fork(fileURLToPath(new URL('./bare-server.js', import.meta.url)), [], { execArgv: opts.nodeArgs ?? [] })
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m) => resolve((m as { port: number }).port))
      child.once('exit', (code) => reject(new Error(`bare server exited with ${code}`)))
    })
    return new BareServer(child, port)
  }

  get pid(): number {
    return this.child.pid!
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  count(): Promise<number> {
    return new Promise((resolve) => {
      this.child.once('message', (m) => resolve((m as { count: number }).count))
      this.child.send({ type: 'count' })
    })
  }

  /** Asks it to exit (so a --cpu-prof profile is written), killing it after 5 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    try {
      this.child.send({ type: 'stop' })
    } catch {
      this.child.kill('SIGKILL')
    }
    await this.exited
    clearTimeout(timer)
  }
}
