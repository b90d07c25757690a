import type { TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../../src/shared/proto.js'
import type { MasterInfoMsg, RegisterAckMsg, TaskAckMsg, TaskIdMsg, TaskMsg } from '../../src/shared/wire.js'

// A worker's gRPC side and nothing else, on a real port: it answers AssignTask, CancelTask and
// MasterRegister as the test says, and records every call in order (when it arrived, when it was
// answered), so a test can count what the master sent and check that one call came after another.
// A task it accepted "runs" until a CancelTask for it arrives.

/** An answer, or a gRPC status to fail the call with. */
export type Answer<T> = T | { code: grpc.status; details: string }

export interface RawEvent {
  method: 'AssignTask' | 'CancelTask' | 'MasterRegister'
  taskId: string
  phase: 'received' | 'answered'
}

export class RawWorker {
  readonly events: RawEvent[] = []
  /** Tasks accepted (AssignTask success) and not cancelled since. */
  readonly running = new Set<string>()
  onAssign: (req: TaskMsg) => Answer<TaskAckMsg> | Promise<Answer<TaskAckMsg>> = () => ({ success: true, message: 'started' })
  onCancel: (req: TaskIdMsg) => Answer<TaskAckMsg> | Promise<Answer<TaskAckMsg>> = () => ({ success: true, message: 'cancelling' })
  onRegister: (req: MasterInfoMsg) => Answer<RegisterAckMsg> | Promise<Answer<RegisterAckMsg>> = () => ({ success: true, message: 'already connected' })
  private readonly waiters: { pred: (e: RawEvent) => boolean; resolve: () => void }[] = []
  private server: grpc.Server | null = null
  address = ''

  async start(t: TestContext, host = '127.0.0.1', port = 0): Promise<this> {
    const server = new grpc.Server()
    server.addService(loadProto().service, {
      AssignTask: (call: grpc.ServerUnaryCall<TaskMsg, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => {
        this.serve('AssignTask', call.request.task_id, () => this.onAssign(call.request), cb, (ack) => {
          if (ack.success) this.running.add(call.request.task_id)
        })
      },
      CancelTask: (call: grpc.ServerUnaryCall<TaskIdMsg, TaskAckMsg>, cb: grpc.sendUnaryData<TaskAckMsg>) => {
        this.running.delete(call.request.task_id)
        this.serve('CancelTask', call.request.task_id, () => this.onCancel(call.request), cb)
      },
      MasterRegister: (call: grpc.ServerUnaryCall<MasterInfoMsg, RegisterAckMsg>, cb: grpc.sendUnaryData<RegisterAckMsg>) => {
        this.serve('MasterRegister', '', () => this.onRegister(call.request), cb)
      },
    })
    const bound = await new Promise<number>((resolve, reject) => server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))))
    this.server = server
    this.address = `${host}:${bound}`
    t.after(() => this.stop())
    return this
  }

  stop(): void {
    this.server?.forceShutdown()
    this.server = null
  }

  count(method: RawEvent['method'], phase: RawEvent['phase'] = 'received'): number {
    return this.events.filter((e) => e.method === method && e.phase === phase).length
  }

  /** Resolves once an event matching `pred` has been recorded (at once if one was). */
  when(pred: (e: RawEvent) => boolean): Promise<void> {
    if (this.events.some(pred)) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ pred, resolve }))
  }

  private record(e: RawEvent): void {
    this.events.push(e)
    for (const w of this.waiters.splice(0)) {
      if (w.pred(e)) w.resolve()
      else this.waiters.push(w)
    }
  }

  private serve<T extends object>(method: RawEvent['method'], taskId: string, handle: () => Answer<T> | Promise<Answer<T>>, cb: grpc.sendUnaryData<T>, onOk?: (res: T) => void): void {
    this.record({ method, taskId, phase: 'received' })
    Promise.resolve(handle()).then((res) => {
      this.record({ method, taskId, phase: 'answered' })
      if ('code' in res && typeof res.code === 'number' && 'details' in res) cb({ code: res.code, details: String(res.details) })
      else {
        onOk?.(res as T)
        cb(null, res as T)
      }
    }, (err: unknown) => cb({ code: grpc.status.INTERNAL, details: `the test worker's handler failed: ${(err as Error).message}` }))
  }
}
