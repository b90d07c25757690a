import { CloudaiError } from './errors.js'

// Rules for every identifier and address that crosses a boundary (RPC fields, HTTP bodies and
// paths, CLI args, config). One place, so the master, the worker and the CLI refuse the same things.

export const WORKER_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/
const HOSTNAME_PATTERN = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
const IPV4_PATTERN = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/
const IPV6_BRACKETED = /^\[[0-9A-Fa-f:.]{2,45}\]$/

/** Longest string field we accept from a peer where the contract gives no other limit. */
export const MAX_STRING_FIELD = 256
export const MAX_RUNNING_TASKS = 10_000

export function validateWorkerId(value: unknown, field = 'worker_id'): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new CloudaiError('CLOUDAI_BAD_WORKER_ID', `${field} is required: 1 to 64 characters of A-Z a-z 0-9 . _ -`)
  }
  if (!WORKER_ID_PATTERN.test(value)) {
    throw new CloudaiError(
      'CLOUDAI_BAD_WORKER_ID',
      `${field} ${JSON.stringify(value.slice(0, 80))} is invalid: use 1 to 64 characters of A-Z a-z 0-9 . _ -`,
    )
  }
  return value
}

export interface HostPort {
  host: string
  port: number
}

/** Parses `host:port` (host: a DNS name, an IPv4 address or a bracketed IPv6 address). */
export function parseAddress(value: unknown, field = 'address', opts: { allowPortZero?: boolean } = {}): HostPort {
  if (typeof value !== 'string' || value.length === 0) {
    throw new CloudaiError('CLOUDAI_BAD_ADDRESS', `${field} is required, as host:port`)
  }
  const shown = JSON.stringify(value.slice(0, 80))
  if (value.length > 262) throw new CloudaiError('CLOUDAI_BAD_ADDRESS', `${field} ${shown} is too long`)
  const colon = value.lastIndexOf(':')
  if (colon <= 0) {
    throw new CloudaiError('CLOUDAI_BAD_ADDRESS', `${field} ${shown} must be host:port, for example 127.0.0.1:50052`)
  }
  const host = value.slice(0, colon)
  const portText = value.slice(colon + 1)
  if (!HOSTNAME_PATTERN.test(host) && !IPV4_PATTERN.test(host) && !IPV6_BRACKETED.test(host)) {
    throw new CloudaiError('CLOUDAI_BAD_ADDRESS', `${field} ${shown} has an invalid host ${JSON.stringify(host.slice(0, 80))}`)
  }
  // The port named as a port, and the whole address as typed: "address 99999 is out of range" did not say which part was.
  const port = parsePort(portText, `${field} ${shown}: port`, opts.allowPortZero ?? false)
  return { host, port }
}

export function validateAddress(value: unknown, field = 'address'): string {
  const { host, port } = parseAddress(value, field)
  return `${host}:${port}`
}

export function parsePort(value: unknown, field = 'port', allowZero = true): number {
  const text = typeof value === 'number' ? String(value) : value
  if (typeof text !== 'string' || !/^\d{1,5}$/.test(text)) {
    throw new CloudaiError('CLOUDAI_BAD_ADDRESS', `${field} ${JSON.stringify(value)} is not a port number (${allowZero ? '0' : '1'} to 65535)`)
  }
  const port = Number(text)
  if (port > 65535 || (!allowZero && port === 0)) {
    throw new CloudaiError('CLOUDAI_BAD_ADDRESS', `${field} ${port} is out of range (${allowZero ? '0' : '1'} to 65535)`)
  }
  return port
}

/** A percentage from a peer: finite, 0 to 100. */
export function validatePercent(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 100) {
    throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a percentage from 0 to 100, got ${String(value)}`)
  }
  return value
}

/** A resource amount from a peer (cores, GB, GPUs): finite and not negative. */
export function validateAmount(value: unknown, field: string, max = 1e9): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > max) {
    throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a number from 0 to ${max}, got ${String(value)}`)
  }
  return value
}

export function validateString(value: unknown, field: string, opts: { max?: number; required?: boolean } = {}): string {
  const max = opts.max ?? MAX_STRING_FIELD
  if (value === undefined || value === null) value = ''
  if (typeof value !== 'string') throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} must be a string`)
  if (opts.required && value.length === 0) throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} is required`)
  if (value.length > max) throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field} is longer than ${max} characters`)
  return value
}

// --- tasks: the same rules on the master (submission) and on the worker (AssignTask) ------------

export const TASK_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/
export const MAX_COMMAND_BYTES = 64 * 1024
export const MAX_ENV_ENTRIES = 256
export const MAX_ENV_VALUE_BYTES = 32 * 1024
const ENV_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/

export function validateTaskId(value: unknown, field = 'task id'): string {
  if (typeof value !== 'string' || !TASK_ID_PATTERN.test(value)) {
    throw new CloudaiError('CLOUDAI_BAD_TASK_ID', `${field} ${JSON.stringify(String(value ?? '').slice(0, 80))} is invalid: 1 to 128 characters of A-Z a-z 0-9 . _ -`)
  }
  return value
}

// A Docker image reference as `docker run` parses it (the distribution/reference grammar):
// [registry[:port]/]path[:tag][@digest], path components lowercase. An image the worker would hand
// to docker and docker would refuse ("invalid reference format") is refused here instead, on both
// sides; and a reference never starts with '-', which `docker run` would take as an option.
const ALNUM = '[a-z0-9]+'
const PATH_COMPONENT = `${ALNUM}(?:(?:[._]|__|-+)${ALNUM})*`
const DOMAIN_COMPONENT = '(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])'
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]+)?`
const IMAGE_NAME = `(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*`
const DOCKER_REFERENCE = new RegExp(`^(${IMAGE_NAME})(?::[\\w][\\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`)
/** docker's own limit on the name part. */
const MAX_IMAGE_NAME = 255

/** `docker_image`: empty for a shell task, else an image reference `docker run` takes. */
export function validateDockerImage(value: unknown, field = 'docker_image'): string {
  const image = validateString(value, field, { max: 512 })
  if (!image) return image
  const m = DOCKER_REFERENCE.exec(image)
  if (!m) {
    throw new CloudaiError(
      'CLOUDAI_BAD_FIELD',
      `${field} ${JSON.stringify(image.slice(0, 80))} is not an image reference: [registry[:port]/]name[:tag][@digest], the name in lowercase letters, digits and . _ - separators, never starting with -`,
    )
  }
  if (m[1]!.length > MAX_IMAGE_NAME) throw new CloudaiError('CLOUDAI_BAD_FIELD', `${field}: the image name is longer than ${MAX_IMAGE_NAME} characters`)
  return image
}

/**
 * A task's command next to its image. CloudAI runs every task in a container and its command is
 * optional there (the image's own entrypoint runs); a task without an image needs a command.
 */
export function validateTaskCommand(value: unknown, dockerImage: string): string {
  if (dockerImage && (value === undefined || value === null || value === '')) return ''
  return validateCommand(value)
}

/** A shell command: non-empty, at most 64 KiB, no NUL (which no exec can pass on). */
export function validateCommand(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') throw new CloudaiError('CLOUDAI_BAD_FIELD', 'command is required (a non-empty string) unless docker_image is set')
  if (Buffer.byteLength(value) > MAX_COMMAND_BYTES) throw new CloudaiError('CLOUDAI_BAD_FIELD', `command is longer than ${MAX_COMMAND_BYTES} bytes`)
  if (value.includes('\0')) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'command must not contain NUL characters')
  // A lone surrogate would reach the worker as U+FFFD: another command than the one submitted.
  if (!value.isWellFormed()) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'command is not well-formed Unicode (a lone surrogate)')
  return value
}

/** A task's environment: at most 256 NAME=value strings, names as a shell takes them. */
export function validateEnv(value: unknown): Record<string, string> {
  if (value === undefined || value === null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) throw new CloudaiError('CLOUDAI_BAD_FIELD', 'env must be an object of NAME: "value" strings')
  const entries = Object.entries(value as Record<string, unknown>)
  if (entries.length > MAX_ENV_ENTRIES) throw new CloudaiError('CLOUDAI_BAD_FIELD', `env has ${entries.length} variables; at most ${MAX_ENV_ENTRIES}`)
  const env: Record<string, string> = {}
  for (const [k, v] of entries) {
    if (!ENV_KEY_PATTERN.test(k)) throw new CloudaiError('CLOUDAI_BAD_FIELD', `env name ${JSON.stringify(k.slice(0, 80))} is invalid: letters, digits and _, not starting with a digit`)
    if (typeof v !== 'string') throw new CloudaiError('CLOUDAI_BAD_FIELD', `env ${k} must be a string`)
    if (Buffer.byteLength(v) > MAX_ENV_VALUE_BYTES) throw new CloudaiError('CLOUDAI_BAD_FIELD', `env ${k} is longer than ${MAX_ENV_VALUE_BYTES} bytes`)
    if (v.includes('\0')) throw new CloudaiError('CLOUDAI_BAD_FIELD', `env ${k} must not contain NUL characters`)
    if (!v.isWellFormed()) throw new CloudaiError('CLOUDAI_BAD_FIELD', `env ${k} is not well-formed Unicode (a lone surrogate)`)
    env[k] = v
  }
  return env
}

/** Largest resource request a task may make, on the master (submission) and the worker (AssignTask). */
export const MAX_TASK_REQUEST = { cpu: 1e6, memory: 1e9, storage: 1e12, gpu: 1e4 } as const

/** What a task runs, as both sides check it. */
export interface TaskSpec {
  dockerImage: string
  command: string
  env: Record<string, string>
}

/**
 * The one check of what a task runs (image, command, environment), shared by the master's
 * submission (HTTP 400) and the worker's AssignTask parsing (INVALID_ARGUMENT): a task the master
 * accepts is never one its workers must refuse for its form.
 * @throws CLOUDAI_BAD_FIELD
 */
export function validateTaskSpec(fields: { docker_image?: unknown; command?: unknown; env?: unknown }): TaskSpec {
  const dockerImage = validateDockerImage(fields.docker_image)
  const command = validateTaskCommand(fields.command, dockerImage)
  const env = validateEnv(fields.env)
  return { dockerImage, command, env }
}
