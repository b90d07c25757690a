import * as grpc from '@grpc/grpc-js'
import type { Logger } from '../shared/log.js'
import { Backoff } from '../shared/backoff.js'
import type { AckMsg, TaskResultMsg } from '../shared/wire.js'
import type { Outbox } from './outbox.js'

// Delivery of task results to the master. Every result is in the outbox (on disk) before its
// first delivery attempt and stays there until the master answers for it:
//   Ack success=true                 -> delivered: removed from the outbox
//   Ack success=false                -> refused for good: logged at warn, removed
//   gRPC INVALID_ARGUMENT            -> the same bytes can never be accepted: logged at error, removed
//   any other gRPC error (UNAVAILABLE from a master whose store fails, master down, deadline)
//                                    -> kept; retried with capped backoff and jitter
//   no master registered             -> kept; delivered as soon as the link is connected again

/** What the reporter needs of the link to the master. */
export interface ReportChannel {
  /** True while registered with a master. */
  readonly connected: boolean
  reportCompletion(result: TaskResultMsg, timeoutMs: number): Promise<AckMsg>
}

export interface ReporterOptions {
  outbox: Outbox
  channel: ReportChannel
  log: Logger
  retryBaseMs?: number
  retryMaxMs?: number
  /** Deadline of one ReportTaskCompletion call. */
  callTimeoutMs?: number
}

type RoundEnd = 'done' | 'retry' | 'offline' | 'stopped'

/**
 * One delivery round at a time, oldest result first. A round that meets a transient failure ends
 * and the next one is scheduled with backoff; a (re)connection to a master starts one at once.
 */
export class Reporter {
  private round: Promise<void> | null = null
  private again = false
  private timer: NodeJS.Timeout | null = null
  private closed = false
  private closing: Promise<void> | null = null
  private failing = false
  private readonly backoff: Backoff
  private readonly callTimeoutMs: number

  constructor(private readonly opts: ReporterOptions) {
    this.backoff = new Backoff(opts.retryBaseMs ?? 250, opts.retryMaxMs ?? 10_000)
    this.callTimeoutMs = opts.callTimeoutMs ?? 5_000
  }

  /** Stores the result (fsynced) and then tries to deliver it. */
  submit(result: TaskResultMsg): void {
    try {
      this.opts.outbox.put(result)
    } catch (err) {
      this.opts.log.error(
        { taskId: result.task_id, err: (err as Error).message },
        `Could not write the result of task ${result.task_id} to the outbox (${(err as Error).message}); it is held in memory only and is lost if the worker stops before delivering it`,
      )
    }
    this.kick()
  }

  /** The link registered with a master (again): deliver now, with a fresh backoff. */
  connected(): void {
    this.backoff.reset()
    this.kick()
  }

  /** Starts a delivery round now, or right after the one under way. */
  kick(): void {
    if (this.closed) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.round) {
      this.again = true
      return
    }
    this.round = this.deliverAll(Number.POSITIVE_INFINITY, true).then((end) => {
      this.round = null
      if (this.closed) return
      if (this.again) {
        this.again = false
        this.kick()
      } else if (end === 'retry') {
        const delay = this.backoff.next()
        this.timer = setTimeout(() => {
          this.timer = null
          this.kick()
        }, delay)
      }
    })
  }

  private async deliverAll(deadline: number, stopWhenClosed: boolean): Promise<RoundEnd> {
    if (this.opts.outbox.size === 0) return 'done'
    for (const result of this.opts.outbox.list()) {
      if (stopWhenClosed && this.closed) return 'stopped'
      const left = deadline - Date.now()
      if (left <= 0) return 'stopped'
      if (!this.opts.outbox.has(result.task_id, result.attempt)) continue
      const end = await this.deliverOne(result, Math.min(this.callTimeoutMs, left))
      if (end !== 'done') return end
    }
    return 'done'
  }

  private async deliverOne(result: TaskResultMsg, timeoutMs: number): Promise<RoundEnd> {
    const { channel, log } = this.opts
    const id = result.task_id
    if (!channel.connected) return 'offline'
    let ack: AckMsg
    try {
      ack = await channel.reportCompletion(result, timeoutMs)
    } catch (err) {
      const e = err as Partial<grpc.ServiceError>
      if (typeof e.code !== 'number') return 'offline'
      if (e.code === grpc.status.INVALID_ARGUMENT) {
        log.error({ taskId: id, attempt: result.attempt, err: e.details }, `The master rejected the result of task ${id} as invalid (${e.details}); dropping it`)
        this.forget(result)
        return 'done'
      }
      const fields = { taskId: id, attempt: result.attempt, code: grpc.status[e.code], err: e.details || e.message }
      if (this.failing) {
        log.debug(fields, `Result of task ${id} still not delivered`)
      } else {
        this.failing = true
        log.warn(fields, `Could not deliver the result of task ${id} (${e.details || e.message}); it stays in the outbox and is retried`)
      }
      return 'retry'
    }
    this.failing = false
    this.backoff.reset()
    if (ack.success) {
      log.info({ taskId: id, attempt: result.attempt, status: result.status, message: ack.message }, `Result of task ${id} (${result.status}) delivered to the master`)
    } else {
      log.warn({ taskId: id, attempt: result.attempt, status: result.status, message: ack.message }, `The master refused the result of task ${id}: ${ack.message || 'no reason given'}; dropping it`)
    }
    this.forget(result)
    return 'done'
  }

  private forget(result: TaskResultMsg): void {
    try {
      this.opts.outbox.remove(result.task_id, result.attempt)
    } catch (err) {
      this.opts.log.warn({ taskId: result.task_id, err: (err as Error).message }, `Could not remove the result of task ${result.task_id} from the outbox; it may be reported again after a restart`)
    }
  }

  /**
   * Stops retrying. The round under way may finish, then one last round runs, all within
   * `graceMs`; whatever is left stays in the outbox for the next start.
   */
  close(graceMs: number): Promise<void> {
    if (this.closing) return this.closing
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    const deadline = Date.now() + graceMs
    this.closing = (async () => {
      if (this.round) {
        let timer: NodeJS.Timeout | undefined
        const expired = new Promise<'expired'>((resolve) => (timer = setTimeout(() => resolve('expired'), Math.max(0, deadline - Date.now()))))
        const first = await Promise.race([this.round.then(() => 'ended' as const), expired])
        clearTimeout(timer)
        if (first === 'expired') return
      }
      await this.deliverAll(deadline, false)
      const left = this.opts.outbox.size
      if (left > 0) this.opts.log.info({ undelivered: left }, `${left} task result(s) stay in the outbox and are reported after the next start`)
    })()
    return this.closing
  }
}
