import type { TSchema } from '@sinclair/typebox'
import { ErrorCodes, type ErrorCode } from '../../../shared/errors.js'
import { describeCodes, ErrorBodySchema, errorBodyFor } from './errors.js'
import { ID_SCHEMAS, type Operation, OPERATIONS, operationErrors, GUARD_ERRORS, TOKEN_ERRORS } from './routes.js'
import { WsClientMessageSchema, WsServerMessageSchema } from './ws.js'

// The OpenAPI 3.1 document of the HTTP API, built from the operation table and the schemas once
// per process (GET /openapi.json serves the same text every time). A schema with `$id` becomes a
// component, and every use of it a $ref, so a client generator names it once.

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
export type OpenApiDocument = { openapi: '3.1.0'; paths: Record<string, Record<string, Json>>; components: { schemas: Record<string, Json>; responses: Record<string, Json> } } & Record<string, Json>

const REF = '#/components/schemas/'

/** Turns TypeBox schemas into plain JSON Schema with components pulled out as $refs. */
class Components {
  readonly schemas: Record<string, Json> = {}

  /** `schema` as it appears in place: a $ref when it is a component. */
  use(schema: TSchema): Json {
    return this.convert(schema as unknown as Json)
  }

  private convert(node: Json): Json {
    if (Array.isArray(node)) return node.map((n) => this.convert(n))
    if (node === null || typeof node !== 'object') return node
    const id = node.$id
    if (typeof id === 'string') {
      if (!(id in this.schemas)) {
        this.schemas[id] = {} // placeholder: a schema that contains itself
        this.schemas[id] = this.body(node)
      }
      return { $ref: REF + id }
    }
    return this.body(node)
  }

  private body(node: { [key: string]: Json }): Json {
    const out: { [key: string]: Json } = {}
    // Object.keys: TypeBox's own markers are symbols and stay behind.
    for (const key of Object.keys(node)) {
      if (key === '$id') continue
      const value = node[key]!
      // Property names and pattern keys are not schemas, their values are.
      if ((key === 'properties' || key === 'patternProperties') && value !== null && typeof value === 'object' && !Array.isArray(value)) {
        out[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.convert(v)]))
      } else if (typeof value === 'object') {
        out[key] = this.convert(value)
      } else {
        out[key] = value
      }
    }
    return out
  }
}

function byStatus(codes: readonly ErrorCode[]): Map<number, ErrorCode[]> {
  const out = new Map<number, ErrorCode[]>()
  for (const code of codes) {
    const status = ErrorCodes[code].http
    out.set(status, [...(out.get(status) ?? []), code])
  }
  return new Map([...out].sort(([a], [b]) => a - b))
}

function operation(op: Operation, c: Components): Json {
  const parameters: Json[] = []
  if (op.id) parameters.push({ name: 'id', in: 'path', required: true, description: `the ${op.id}'s id (percent-encoded)`, schema: c.use(ID_SCHEMAS[op.id]) })
  for (const q of op.query ?? []) parameters.push({ name: q.name, in: 'query', required: false, description: q.description, schema: c.use(q.schema) })
  for (const h of op.headers ?? []) parameters.push({ name: h.name, in: 'header', required: false, description: h.description, schema: c.use(h.schema) })
  const responses: Record<string, Json> = {}
  for (const [status, answer] of Object.entries(op.answers)) {
    const content: Record<string, Json> = {}
    if (answer.contentType || answer.schema) {
      content[answer.contentType ?? 'application/json'] = answer.schema ? { schema: c.use(answer.schema) } : {}
      for (const [type, schema] of Object.entries(answer.alternatives ?? {})) content[type] = schema ? { schema: c.use(schema) } : {}
    }
    responses[status] = {
      description: answer.description,
      ...(answer.headers ? { headers: Object.fromEntries(Object.entries(answer.headers).map(([name, value]) => [name, { description: value, schema: { type: 'string', const: value } }])) } : {}),
      ...(Object.keys(content).length > 0 ? { content } : {}),
    }
  }
  for (const [status, codes] of byStatus(operationErrors(op))) {
    const error = { schema: c.use(errorBodyFor(codes)) }
    const existing = responses[status] as { description: string; content?: Record<string, { schema: Json }> } | undefined
    if (existing) {
      // The same status as a success (/healthz 503): either body.
      const json = existing.content?.['application/json']
      responses[status] = { description: `${existing.description}; or refused:\n${describeCodes(codes)}`, content: { 'application/json': { schema: { anyOf: [json?.schema ?? {}, error.schema] } } } }
    } else {
      responses[status] = { description: `refused:\n${describeCodes(codes)}`, content: { 'application/json': error } }
    }
  }
  return {
    operationId: op.operationId,
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    tags: op.tags,
    // Open routes override the document's default security with none.
    ...(op.open ? { security: [] } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: c.use(op.body) } } } } : {}),
    responses,
  }
}

/**
 * The contract's own version, in info.version: the minor number grows with what a client may use
 * and ignore, the major with what breaks one. The committed snapshot (test/snapshots/openapi.json)
 * shows every change either way.
 */
export const CONTRACT_VERSION = '1.0.0'

/** Builds the document (a fresh object each call; the API renders it once). */
export function buildOpenApiDocument(version = CONTRACT_VERSION): OpenApiDocument {
  const c = new Components()
  const paths: Record<string, Record<string, Json>> = {}
  for (const op of OPERATIONS) {
    paths[op.path] ??= {}
    paths[op.path]![op.method] = operation(op, c)
  }
  // Not answers of a route: what no route takes gets these.
  c.use(ErrorBodySchema)
  c.use(WsClientMessageSchema)
  c.use(WsServerMessageSchema)
  const unauthorized = describeCodes(TOKEN_ERRORS)
  return {
    openapi: '3.1.0',
    info: {
      title: 'cloudai master API',
      version,
      description: [
        "The REST API and the WebSocket of a cloudai master. Every refusal is `{\"error\": {\"code\", \"message\", \"details\"?}}` with a stable code; each operation lists the codes it can answer, by status.",
        '',
        `Every route may also be refused by the request guard before it runs:\n${describeCodes(GUARD_ERRORS)}`,
        '',
        'A path answers another method than its own with 405 `CLOUDAI_METHOD_NOT_ALLOWED` (the Allow header lists its methods: #/components/responses/MethodNotAllowed), and an unknown path with 404 `CLOUDAI_NOT_FOUND` (#/components/responses/NotFound; 401 first when the master has an API token).',
        '',
        `With an API token (--api-token, CLOUDAI_API_TOKEN) every route needs \`Authorization: Bearer <token>\` except /healthz, /openapi.json and the dashboard's files:\n${unauthorized}`,
        '',
        'A standby master (issue 19) answers GET /api/status and GET /healthz with `role: standby` and the leader, and every other route 503 `CLOUDAI_NOT_LEADER`, `details.leader` the leader\'s API address when it knows it.',
        '',
        'The WebSocket at /ws: see the openWebSocket operation, and the WsServerMessage / WsClientMessage schemas.',
      ].join('\n'),
    },
    servers: [{ url: 'http://127.0.0.1:8080', description: 'a master on its default --http-port' }],
    security: [{ apiToken: [] }],
    tags: [
      { name: 'master', description: 'health, status, metrics, this document' },
      { name: 'workers', description: 'the registry, cordon and drain, telemetry' },
      { name: 'tasks', description: 'the queue, a task, its output' },
      { name: 'live', description: 'the WebSocket' },
      { name: 'dashboard', description: 'the files of the dashboard page' },
    ],
    paths,
    components: {
      schemas: c.schemas,
      // What a path answers for a method it does not have, and the API for a path it does not have.
      responses: {
        MethodNotAllowed: {
          description: `any method a path has no operation for (PUT and PATCH on every path); the Allow header lists its methods:\n${describeCodes(['CLOUDAI_METHOD_NOT_ALLOWED'])}`,
          headers: { allow: { description: "the path's methods, e.g. GET, DELETE", schema: { type: 'string' } } },
          content: { 'application/json': { schema: c.use(errorBodyFor(['CLOUDAI_METHOD_NOT_ALLOWED'])) } },
        },
        NotFound: {
          description: `a path the API does not have (401 first when the master has an API token):\n${describeCodes(['CLOUDAI_NOT_FOUND'])}`,
          content: { 'application/json': { schema: c.use(errorBodyFor(['CLOUDAI_NOT_FOUND'])) } },
        },
      },
      securitySchemes: { apiToken: { type: 'http', scheme: 'bearer', description: "the master's API token (--api-token); without one configured, nothing is asked" } },
    },
  } as OpenApiDocument
}

