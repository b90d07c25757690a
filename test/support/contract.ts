import type { ValidateFunction } from 'ajv'
import { buildOpenApiDocument, type OpenApiDocument } from '../../src/master/api/schema/document.js'
import { apiAjv } from '../../src/master/api/schema/validate.js'

// Every HTTP answer the tests get from a master, checked against the OpenAPI document the master
// serves (GET /openapi.json): its status must be one the document lists for the operation, and a
// JSON body must match that status's schema, and every WebSocket message the master's schema for
// it. A shape the document does not promise fails the test that got it, with what was wrong.
// startMaster (cluster.ts) calls checkAnswersOf() for the master it starts; fetch is wrapped, which
// every HTTP helper of the tests goes through (cluster.ts's api() among them), and watcher.ts
// checks what /ws sends.

type Json = Record<string, unknown>

export class ContractViolation extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ContractViolation'
  }
}

const METHODS = ['get', 'post', 'delete', 'put', 'patch', 'head', 'options']
/** Answered on any path, whatever its operations (the guard, the token; see the document's info). */
const ANYWHERE = new Set(['CLOUDAI_BAD_FRAMING', 'CLOUDAI_URI_TOO_LONG', 'CLOUDAI_HEADERS_TOO_LARGE', 'CLOUDAI_BAD_HOST', 'CLOUDAI_BAD_ORIGIN', 'CLOUDAI_UNAUTHORIZED'])

interface Route {
  path: string
  match: RegExp
  operations: Record<string, Json>
}

export class ContractChecker {
  private readonly ajv = apiAjv({ strict: false })
  private readonly routes: Route[]
  private readonly compiled = new Map<string, ValidateFunction>()
  readonly checked = { responses: 0 }

  constructor(readonly doc: OpenApiDocument = buildOpenApiDocument()) {
    this.ajv.addSchema(doc as unknown as Json, 'openapi.json')
    this.routes = Object.entries(doc.paths).map(([path, operations]) => ({
      path,
      // {id} is one segment; a static path wins over a template (tried first).
      match: new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, (c) => (c === '{' || c === '}' ? c : `\\${c}`)).replace(/\{\w+\}/g, '[^/]+')}$`),
      operations: operations as Record<string, Json>,
    }))
    this.routes.sort((a, b) => Number(a.path.includes('{')) - Number(b.path.includes('{')))
  }

  /**
   * Checks one answer. `url` is the request's (path and query); `body` the parsed JSON, or
   * undefined when the answer is not JSON. Throws ContractViolation.
   */
  check(method: string, url: string, status: number, contentType: string | null, body: unknown): void {
    this.checked.responses++
    const path = url.split('?')[0]!
    const what = `${method} ${path} → ${status}`
    const route = this.routes.find((r) => r.match.test(path))
    const m = method.toLowerCase()
    const op = route?.operations[m]
    if (!op) {
      // No such route or method: the documented generic refusals (404, 405, 401 first, the guard's).
      const code = this.errorCode(what, status, contentType, body)
      if (ANYWHERE.has(code)) return
      // The document's answers for these: components.responses.MethodNotAllowed and NotFound.
      const generic = route ? 'MethodNotAllowed' : 'NotFound'
      const answer = this.doc.components.responses[generic] as Json
      const validate = this.validator(['components', 'responses', generic, 'content', 'application/json', 'schema'])
      if (!validate(body) || status !== (route ? 405 : 404)) {
        throw new ContractViolation(`${what}: ${route ? `the document has no ${method} on ${route.path}` : 'no documented path'}, so only ${String(answer.description).split(':')[0]} (${route ? 405 : 404}) or a guard's refusal may answer, not ${status} ${code}`)
      }
      return
    }
    const responses = op.responses as Record<string, Json>
    const answer = responses[String(status)]
    if (!answer) throw new ContractViolation(`${what}: the document lists ${Object.keys(responses).join(', ')} for ${method} ${route.path}, not ${status} (body ${JSON.stringify(body)?.slice(0, 300)})`)
    const content = answer.content as Record<string, Json> | undefined
    if (!content) {
      if (body !== undefined && body !== null && body !== '') throw new ContractViolation(`${what}: the document promises no body, got ${JSON.stringify(body).slice(0, 200)}`)
      return
    }
    const type = (contentType ?? '').split(';')[0]!.trim()
    const mediaType = Object.keys(content).find((t) => t.split(';')[0]!.trim() === type)
    if (!mediaType) throw new ContractViolation(`${what}: content-type ${contentType} is not one the document lists (${Object.keys(content).join(', ')})`)
    if (type !== 'application/json' || !content[mediaType]!.schema) return
    const pointer = ['paths', route.path, m, 'responses', String(status), 'content', mediaType, 'schema']
    const validate = this.validator(pointer)
    if (!validate(body)) {
      const errors = (validate.errors ?? []).slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`)
      throw new ContractViolation(`${what}: the body does not match the document's schema: ${errors.join('; ')}\nbody: ${JSON.stringify(body).slice(0, 1000)}`)
    }
  }

  /** A generic refusal's code, after checking it is an Error body. */
  private errorCode(what: string, status: number, contentType: string | null, body: unknown): string {
    if (!(contentType ?? '').startsWith('application/json')) throw new ContractViolation(`${what}: a refusal must be JSON, got ${contentType}`)
    const validate = this.validator(['components', 'schemas', 'Error'])
    if (!validate(body)) throw new ContractViolation(`${what}: not an Error body: ${JSON.stringify(body).slice(0, 300)}`)
    return (body as { error: { code: string } }).error.code
  }

  /** The validator of the schema at `pointer` in the document, compiled once. */
  validator(pointer: readonly string[]): ValidateFunction {
    const ref = `openapi.json#/${pointer.map((p) => encodeURIComponent(p.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/')}`
    let validate = this.compiled.get(ref)
    if (!validate) {
      validate = this.ajv.compile({ $ref: ref })
      this.compiled.set(ref, validate)
    }
    return validate
  }
}

let checker: ContractChecker | null = null
/** host:port of the masters the tests started (startMaster): the answers that are checked. */
const masters = new Set<string>()

/** Checks the answers of the master at `base` (http://host:port) from now on: fetch, and the WebSocket (watcher.ts). */
export function checkAnswersOf(base: string): void {
  masters.add(new URL(base).host)
  installContractCheck()
}

/**
 * No more checks of the master at `base`: for a test that breaks a master on purpose to see its
 * 500, the one answer the document does not promise.
 */
export function stopCheckingAnswersOf(base: string): void {
  masters.delete(new URL(base).host)
}

/** Whether answers from `url` are checked (it is a master the test started). */
export function isChecked(url: string): boolean {
  return masters.has(new URL(url).host)
}

/**
 * Why one event of a task's log stream (an SSE `data:` or an NDJSON line) does not match the
 * document's LogEvent, or null: what the fetch check cannot see of a stream.
 */
export function logEventViolation(event: unknown): string | null {
  const validate = contract().validator(['components', 'schemas', 'LogEvent'])
  if (validate(event)) return null
  const errors = (validate.errors ?? []).slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`)
  return `a log event does not match the document's LogEvent: ${errors.join('; ')}\nevent: ${JSON.stringify(event).slice(0, 500)}`
}

/** Why a WebSocket message from the master does not match WsServerMessage, or null. */
export function wsViolation(message: unknown): string | null {
  const validate = contract().validator(['components', 'schemas', 'WsServerMessage'])
  if (validate(message)) return null
  const type = (message as { type?: unknown } | null)?.type
  // anyOf reports every branch: the one for this message's type says what is wrong.
  const id = typeof type === 'string' ? WS_SCHEMAS[type] : undefined
  const own = id ? contract().validator(['components', 'schemas', id]) : null
  if (own) own(message)
  const errors = (own?.errors ?? validate.errors ?? []).slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`)
  return `WebSocket message ${JSON.stringify(type)} does not match the document: ${errors.join('; ')}\nmessage: ${JSON.stringify(message).slice(0, 1000)}`
}

const WS_SCHEMAS: Record<string, string> = {
  snapshot: 'WsSnapshot',
  worker: 'WsWorker',
  worker_status: 'WsWorkerStatus',
  worker_removed: 'WsWorkerRemoved',
  task_status: 'WsTaskStatus',
  worker_metrics: 'WsWorkerMetrics',
  subscribed: 'WsSubscribed',
  error: 'WsError',
}

/** The checker of this process (the document is the one this build serves). */
export function contract(): ContractChecker {
  checker ??= new ContractChecker()
  return checker
}

const STREAMED = /^(text\/event-stream|application\/x-ndjson)/

/**
 * Wraps globalThis.fetch so that every answer from a master the test started is checked against the document
 * before the caller sees it: a violation rejects the fetch, and so fails the test. Streams (SSE,
 * NDJSON) are checked for their status and type only: their events are read by the test. Once.
 */
export function installContractCheck(): void {
  const original = globalThis.fetch as typeof fetch & { contractChecked?: true }
  if (original.contractChecked) return
  const checked = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]): Promise<Response> => {
    const res = await original(input, init)
    const request = input instanceof Request ? input : null
    const url = new URL(request ? request.url : String(input))
    if (url.protocol !== 'http:' || !masters.has(url.host)) return res
    const method = (init?.method ?? request?.method ?? 'GET').toUpperCase()
    if (!METHODS.includes(method.toLowerCase())) return res
    const type = res.headers.get('content-type')
    let body: unknown
    if (type?.startsWith('application/json') && !STREAMED.test(type)) {
      const text = await res.clone().text()
      try {
        body = text === '' ? null : JSON.parse(text)
      } catch {
        throw new ContractViolation(`${method} ${url.pathname} → ${res.status}: content-type ${type}, but the body is not JSON: ${text.slice(0, 200)}`)
      }
    }
    contract().check(method, url.pathname + url.search, res.status, type, body)
    return res
  }
  globalThis.fetch = Object.assign(checked, { contractChecked: true as const })
}
