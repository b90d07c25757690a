import type { Logger } from '../shared/log.js'

// The last net of a master or worker process. Every promise in cloudai is awaited or handled (the
// lint in `npm test` checks it), but if a rejection or an exception still escapes, Node's default
// is to die on the spot: no ordered shutdown, the store journal never flushed. Instead the process
// logs it as fatal, runs the same ordered shutdown as SIGTERM, and exits with code 1.

export type FaultKind = 'unhandledRejection' | 'uncaughtException'

/** How long the ordered shutdown may take after a fault before the process exits anyway. */
export const FAULT_CLOSE_LIMIT_MS = 30_000

const EXIT_FAULT = 1

export interface FaultGuardOptions {
  name: 'master' | 'worker'
  log: Logger
  /**
   * Starts the ordered shutdown (the one SIGTERM runs) and resolves when it has ended. If one is
   * already under way, the fault happened during it: the caller exits at once (it never returns).
   */
  shutdown: (reason: string) => Promise<void>
  /** process.exit, unless a test says otherwise. */
  exit?: (code: number) => void
  closeLimitMs?: number
}

export class FaultGuard {
  private faulted = false
  private installed = false
  private readonly exit: (code: number) => void
  private readonly onRejection = (reason: unknown): void => this.fault('unhandledRejection', reason)
  private readonly onException = (err: Error): void => this.fault('uncaughtException', err)

  constructor(private readonly opts: FaultGuardOptions) {
    this.exit = opts.exit ?? ((code) => process.exit(code))
  }

  /** From now on an escaped rejection or exception shuts the process down in order. */
  install(): void {
    if (this.installed) return
    this.installed = true
    process.on('unhandledRejection', this.onRejection)
    process.on('uncaughtException', this.onException)
  }

  uninstall(): void {
    if (!this.installed) return
    this.installed = false
    process.off('unhandledRejection', this.onRejection)
    process.off('uncaughtException', this.onException)
  }

  /**
   * One fault: logged fatal, then the ordered shutdown and exit code 1. A second fault (the state
   * that broke may break the shutdown too) exits at once, so that a fault can never loop.
   */
  fault(kind: FaultKind, err: unknown): void {
    const { log, name } = this.opts
    const what = kind === 'unhandledRejection' ? 'Unhandled promise rejection' : 'Uncaught exception'
    const message = err instanceof Error ? err.message : String(err)
    if (this.faulted) {
      log.fatal({ kind, err }, `${what} during the shutdown after an earlier one (${message}): exiting at once`)
      this.exit(EXIT_FAULT)
      return
    }
    this.faulted = true
    log.fatal({ kind, err }, `${what}: ${message}. Shutting down the ${name} in order, then exiting with code ${EXIT_FAULT}`)
    const limitMs = this.opts.closeLimitMs ?? FAULT_CLOSE_LIMIT_MS
    // A shutdown that hangs on what broke must not keep a dead process around.
    const limit = setTimeout(() => {
      log.fatal({ kind, limitMs }, `The ${name} did not finish shutting down within ${limitMs} ms of the fault: exiting now`)
      this.exit(EXIT_FAULT)
    }, limitMs)
    limit.unref()
    this.opts
      .shutdown(what)
      .then(
        () => log.info({ kind }, `The ${name} shut down after the fault; exiting with code ${EXIT_FAULT}`),
        (closeErr: unknown) => log.error({ err: closeErr }, `The ${name} did not shut down cleanly after the fault`),
      )
      .finally(() => {
        clearTimeout(limit)
        this.exit(EXIT_FAULT)
      })
  }
}
