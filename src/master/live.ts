import { EventEmitter } from 'node:events'
import type { LaneSummary } from './telemetry/lane.js'
import type { InactiveReason, TaskRecord, TaskStatus, WorkerRecord } from '../shared/types.js'
import type { Registry } from './registry.js'
import type { TaskTable } from './tasks.js'
import type { TelemetryHub } from './telemetry/hub.js'
import { neverFitsReason } from './scheduler.js'
import { toTaskView, toWorkerView, type ClusterStatus, type TaskView, type WorkerView } from './views.js'
import { isoTime } from '../shared/iso-time.js'

// What the master pushes to watchers (the WebSocket, and through it the dashboard and `cloudai
// watch`): one JSON message per change, each on a topic. The registry, the task table and the
// telemetry hub stay the owners of their state; this only turns their events into messages. No
// message is built for nobody: worker and task messages only while something listens to the feed
// (the WebSocket listens only while it has a client, which gets a snapshot first), and the hub
// emits a worker's summaries only while somebody watches it (want(), kept by the WebSocket).
// Building task messages for nobody was 31 ms of the main thread's 980 ms of CPU while 1,000 tasks
// were placed and run (a profile of the bench's time-to-assign), and more in garbage.

/** Topics a watcher can subscribe to: `metrics/<id>` narrows telemetry to one worker. */
export type LiveTopic = 'workers' | 'tasks' | 'metrics' | `metrics/${string}`

export interface WorkerStatusMessage {
  type: 'worker_status'
  worker_id: string
  is_active: boolean
  timestamp: string
}

export type LiveMessage =
  | WorkerStatusMessage
  | { type: 'worker'; worker: WorkerView; timestamp: string }
  | { type: 'worker_removed'; worker_id: string; timestamp: string }
  | {
      type: 'task_status'
      task_id: string
      status: TaskStatus
      previous: TaskStatus | null
      worker_id: string | null
      submitted_at: string
      assigned_at: string | null
      started_at: string | null
      finished_at: string | null
      /** The whole task, as GET /api/tasks/{id} shows it (output trimmed to its end). */
      task: TaskView
      timestamp: string
    }
  | {
      type: 'worker_metrics'
      worker_id: string
      latest: { at: string; cpu: number; memory: number; storage: number; gpu: number; running_tasks: number } | null
      averages: { '1m': { cpu: number; memory: number; storage: number; gpu: number; running_tasks: number; samples: number } | null }
      peaks: { '1m': { cpu: number; memory: number; storage: number; gpu: number } | null }
      samples_processed: number
      samples_dropped: number
      timestamp: string
    }

/** The first message a watcher gets: the state its events start from. */
export interface LiveSnapshot {
  type: 'snapshot'
  workers: WorkerView[]
  /** Every queued, assigned or running task, and the newest others. */
  tasks: TaskView[]
  status: ClusterStatus
  timestamp: string
}

export interface LiveEvents {
  message: [topic: LiveTopic, message: LiveMessage]
}

const rfc3339 = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')

/** Recent finished tasks a snapshot carries besides the unfinished ones. */
export const SNAPSHOT_RECENT_TASKS = 100

export interface LiveFeedSources {
  registry: Registry
  tasks: TaskTable
  telemetry: TelemetryHub
  status: () => ClusterStatus
  now?: () => number
}

/** Turns the master's events into watcher messages; `start()` subscribes, `close()` lets go. */
export class LiveFeed extends EventEmitter<LiveEvents> {
  private readonly now: () => number
  private started = false

  private readonly onRegistered = (w: WorkerRecord): void => this.worker(w)
  private readonly onChanged = (w: WorkerRecord): void => this.worker(w)
  private readonly onActive = (w: WorkerRecord): void => this.statusChange(w)
  private readonly onInactive = (w: WorkerRecord, _meta: { reason: InactiveReason }): void => this.statusChange(w)
  private readonly onUnregistered = (w: WorkerRecord): void => {
    if (!this.heard()) return
    this.emit('message', 'workers', { type: 'worker_removed', worker_id: w.id, timestamp: this.stamp() })
  }
  private readonly onTask = (t: TaskRecord, previous: TaskStatus | null): void => {
    if (!this.heard()) return
    // Output can be a megabyte; watchers get its end, the task route has the rest.
    const task = this.taskView(t)
    this.emit('message', 'tasks', {
      type: 'task_status',
      task_id: task.task_id,
      status: task.status,
      previous,
      worker_id: task.worker_id,
      submitted_at: task.submitted_at,
      assigned_at: task.assigned_at,
      started_at: task.started_at,
      finished_at: task.finished_at,
      task,
      timestamp: this.stamp(),
    })
  }
  private readonly onSummary = (s: LaneSummary): void => {
    if (!this.heard()) return
    const w1 = s.windows['1m']
    const latest = s.latest
    this.emit('message', `metrics/${s.workerId}`, {
      type: 'worker_metrics',
      worker_id: s.workerId,
      latest: latest
        ? { at: isoTime(Math.round(latest.at)), cpu: latest.cpu, memory: latest.memory, storage: latest.storage, gpu: latest.gpu, running_tasks: latest.running }
        : null,
      averages: { '1m': w1 ? { cpu: w1.average.cpu, memory: w1.average.memory, storage: w1.average.storage, gpu: w1.average.gpu, running_tasks: w1.average.running, samples: w1.samples } : null },
      peaks: { '1m': w1 ? { ...w1.peak } : null },
      samples_processed: s.processed,
      samples_dropped: s.dropped,
      timestamp: this.stamp(),
    })
  }

  constructor(private readonly src: LiveFeedSources) {
    super()
    this.now = src.now ?? Date.now
  }

  /** Somebody watches (or stopped watching) a worker's telemetry, or everyone's (`*`). */
  want(workerId: string, on: boolean): void {
    this.src.telemetry.want(workerId, on)
  }

  start(): void {
    if (this.started) return
    this.started = true
    this.listen('on')
  }

  close(): void {
    if (!this.started) return
    this.started = false
    this.listen('off')
  }

  /** One list of subscriptions for start() and close(), so that they cannot drift apart. */
  private listen(how: 'on' | 'off'): void {
    const { registry, tasks, telemetry } = this.src
    registry[how]('worker-registered', this.onRegistered)
    registry[how]('worker-changed', this.onChanged)
    // Suspect or cleared: the worker's view changed (its `suspect` fields).
    registry[how]('worker-suspect', this.onChanged)
    registry[how]('worker-cleared', this.onChanged)
    // Cordoned, uncordoned, draining, drained: its `scheduling` and `drain` fields.
    registry[how]('worker-scheduling', this.onChanged)
    registry[how]('worker-active', this.onActive)
    registry[how]('worker-inactive', this.onInactive)
    registry[how]('worker-unregistered', this.onUnregistered)
    tasks[how]('task-changed', this.onTask)
    telemetry[how]('summary', this.onSummary)
  }

  snapshot(): LiveSnapshot {
    // From the table's indexes: the work in hand and the newest finished, never every task kept.
    const unfinished = this.src.tasks.unfinished()
    const finished = this.src.tasks.recentlyFinished(SNAPSHOT_RECENT_TASKS)
    const reasons = new Map<string, string | null>()
    return {
      type: 'snapshot',
      workers: this.src.registry.list().map(toWorkerView),
      tasks: [...unfinished, ...finished].map((t) => this.taskView(t, reasons)),
      status: this.src.status(),
      timestamp: this.stamp(),
    }
  }

  /**
   * A task as watchers see it: the end of its output (it can be a megabyte; the task route has the
   * rest) and, while it is queued, why it waits when no registered worker could ever run it, as the
   * API says. `reasons` shares the answer between the tasks of one snapshot that ask for the same:
   * a worker that fits ends the search at once, but a task nothing fits reads every worker.
   */
  private taskView(t: TaskRecord, reasons?: Map<string, string | null>): TaskView {
    const view = toTaskView(t, this.src.tasks.isDurable(t.id), 4096)
    if (t.status !== 'queued') return view
    const key = `${t.req.cpu}/${t.req.memory}/${t.req.gpu}/${t.req.storage}/${t.targetWorkerId ?? ''}`
    let reason = reasons?.get(key)
    if (reason === undefined) {
      // A target is one lookup, not a walk over every worker to find it.
      const target = t.targetWorkerId === null ? undefined : this.src.registry.get(t.targetWorkerId)
      reason = neverFitsReason(t, t.targetWorkerId === null ? this.src.registry.values() : target ? [target] : [])
      reasons?.set(key, reason)
    }
    return reason ? { ...view, reason } : view
  }

  private stamp(): string {
    return rfc3339(this.now())
  }

  /** Something listens: a message is worth building. */
  private heard(): boolean {
    return this.listenerCount('message') > 0
  }

  private worker(w: WorkerRecord): void {
    if (!this.heard()) return
    this.emit('message', 'workers', { type: 'worker', worker: toWorkerView(w), timestamp: this.stamp() })
  }

  /** The full record for UIs, then the CloudAI message, exactly in its shape. */
  private statusChange(w: WorkerRecord): void {
    if (!this.heard()) return
    this.worker(w)
    this.emit('message', 'workers', { type: 'worker_status', worker_id: w.id, is_active: w.isActive, timestamp: this.stamp() })
  }
}
