import { execFile } from 'node:child_process'

// The Docker runtime: whether a Docker engine answers on this machine, and the command line that
// runs a task in a container. The container is run by the docker CLI as an ordinary process of the
// executor; this file only decides whether that is possible and how the CLI is called.

export type DockerAvailability = { ok: true; version: string } | { ok: false; reason: string }

export interface DockerProbeOptions {
  /** Deadline of one `docker info`. */
  timeoutMs?: number
  /** How long an answer (either way) is reused. */
  ttlMs?: number
  now?: () => number
  /** The docker CLI to run. */
  dockerPath?: string
}

/**
 * Asks `docker info` whether an engine answers (the CLI alone proves nothing: it is installed on
 * machines without an engine), at most once per `ttlMs`, so that AssignTask does not wait up to
 * 3 s on every call where there is none. Concurrent callers share one probe.
 */
export class DockerProbe {
  private cached: { at: number; value: DockerAvailability } | null = null
  private inflight: Promise<DockerAvailability> | null = null
  private readonly timeoutMs: number
  private readonly ttlMs: number
  private readonly now: () => number
  readonly dockerPath: string

  constructor(opts: DockerProbeOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 3_000
    this.ttlMs = opts.ttlMs ?? 30_000
    this.now = opts.now ?? Date.now
    this.dockerPath = opts.dockerPath ?? 'docker'
  }

  check(): Promise<DockerAvailability> {
    if (this.cached && this.now() - this.cached.at < this.ttlMs) return Promise.resolve(this.cached.value)
    this.inflight ??= this.probe().then((value) => {
      this.cached = { at: this.now(), value }
      this.inflight = null
      return value
    })
    return this.inflight
  }

  private probe(): Promise<DockerAvailability> {
    return new Promise((resolve) => {
      execFile(this.dockerPath, ['info', '--format', '{{.ServerVersion}}'], { timeout: this.timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (!err) return resolve({ ok: true, version: stdout.trim() })
        const e = err as NodeJS.ErrnoException & { killed?: boolean }
        if (e.code === 'ENOENT') return resolve({ ok: false, reason: `the docker CLI (${this.dockerPath}) is not installed` })
        if (e.killed) return resolve({ ok: false, reason: `docker info did not answer within ${this.timeoutMs}ms` })
        resolve({ ok: false, reason: lastLine(stderr) || lastLine(stdout) || e.message })
      })
    })
  }
}

function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean)
  return (lines[lines.length - 1] ?? '').slice(0, 300)
}

/** Name of a task's container: one per task id, so that a cancel can find it by name. */
export function containerName(taskId: string): string {
  return `cloudai-${taskId}`
}

/**
 * argv of `docker run --rm --name cloudai-<id> -e K ... <image> [sh -c <command>]`. Values are not
 * on the command line (where `ps` shows them to everyone): `-e KEY` takes the value from the docker
 * CLI's own environment, which the executor sets to the task's. The image must not start with '-'
 * (the caller validates it), or docker would read it as an option.
 */
export function dockerRunArgv(opts: { taskId: string; image: string; command: string; envKeys: readonly string[]; dockerPath?: string }): [string, ...string[]] {
  const env = opts.envKeys.flatMap((k) => ['-e', k])
  // No command: the image's own entrypoint and command run, as CloudAI runs such a task.
  const command = opts.command === '' ? [] : ['sh', '-c', opts.command]
  return [opts.dockerPath ?? 'docker', 'run', '--rm', '--name', containerName(opts.taskId), ...env, opts.image, ...command]
}

/**
 * Sends `signal` to the task's container. The docker CLI forwards SIGTERM to its container, but a
 * SIGKILL of the CLI would leave the container running: a cancel signals the container itself too.
 */
export function signalContainer(taskId: string, signal: NodeJS.Signals, dockerPath = 'docker'): Promise<void> {
  return new Promise((resolve) => {
    execFile(dockerPath, ['kill', '--signal', signal, containerName(taskId)], { timeout: 5_000, killSignal: 'SIGKILL' }, () => resolve())
  })
}
