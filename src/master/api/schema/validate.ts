import type { Static, TSchema } from '@sinclair/typebox'
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import { CloudaiError, type ErrorCode } from '../../../shared/errors.js'
import { ERROR_CODE_KEYWORD } from './common.js'

// Request bodies checked against their schemas (Ajv, each compiled once per API), refused with the
// codes the control would give them: CLOUDAI_BAD_REQUEST for the body's own shape (an unknown field
// where none is taken), CLOUDAI_BAD_FIELD for a field's value unless the schema names another code
// (x-error-code: a worker id's CLOUDAI_BAD_WORKER_ID, an address's CLOUDAI_BAD_ADDRESS), each with
// details.field. Messages start with the field, as the control's do (the CLI names the flag there).

/** An RFC 3339 time, as the views write them. */
export const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/

/** An Ajv that knows the API's annotations; `strict` refuses schemas with keywords it does not know. */
export function apiAjv(opts: { strict?: boolean } = {}): Ajv {
  const ajv = new Ajv({ allErrors: false, verbose: true, strict: opts.strict ?? true })
  ajv.addKeyword({ keyword: ERROR_CODE_KEYWORD, schemaType: 'string' })
  ajv.addFormat('date-time', DATE_TIME)
  return ajv
}

type SchemaNode = Record<string, unknown>

/** The non-null member of a Nullable, or the schema itself. */
function unwrap(schema: SchemaNode | undefined): SchemaNode | undefined {
  const anyOf = schema?.anyOf as SchemaNode[] | undefined
  if (!anyOf) return schema
  return anyOf.find((s) => s.type !== 'null') ?? schema
}

function codeOf(schema: SchemaNode | undefined): ErrorCode | undefined {
  if (!schema) return undefined
  const own = schema[ERROR_CODE_KEYWORD] as ErrorCode | undefined
  return own ?? (unwrap(schema) === schema ? undefined : codeOf(unwrap(schema)))
}

const shown = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 80)

function numberRule(s: SchemaNode, whole: boolean): string {
  const kind = whole ? 'a whole number' : 'a number'
  const max = s.maximum as number | undefined
  if (s.exclusiveMinimum !== undefined) return `${kind} above ${s.exclusiveMinimum as number}${max !== undefined ? ` and at most ${max}` : ''}`
  if (s.minimum !== undefined && max !== undefined) return `${kind} from ${s.minimum as number} to ${max}`
  if (s.minimum !== undefined) return `${kind}, ${s.minimum as number} or more`
  return kind
}

function expected(s: SchemaNode): string {
  switch (s.type) {
    case 'number':
      return numberRule(s, false)
    case 'integer':
      return numberRule(s, true)
    case 'boolean':
      return 'true or false'
    case 'string':
      return 'a string'
    case 'object':
      return 'an object'
    case 'array':
      return 'a list'
    default:
      return 'of its documented type'
  }
}

/** The words for one Ajv error of field `name` (its path shown as `env KEY`). */
function message(e: ErrorObject, name: string, prop: SchemaNode | undefined): string {
  const at = (e.parentSchema ?? prop ?? {}) as SchemaNode
  const rule = unwrap(prop) ?? at
  const description = typeof rule.description === 'string' ? `: ${rule.description}` : ''
  switch (e.keyword) {
    case 'required':
      return `${name} is required${description}`
    case 'additionalProperties':
      return `${name} name ${shown((e.params as { additionalProperty: string }).additionalProperty)} is invalid${description}`
    case 'pattern':
      return `${name} ${shown(e.data)} is invalid${description}`
    case 'minLength':
      return `${name} is required${description}`
    case 'maxLength':
      return `${name} is longer than ${(e.params as { limit: number }).limit} characters`
    case 'maxProperties':
      return `${name} has ${Object.keys(e.data as object).length} entries; at most ${(e.params as { limit: number }).limit}`
    case 'const':
    case 'enum':
      return `${name} must be ${shown(at.const ?? at.enum)}, got ${shown(e.data)}`
    default:
      return `${name} must be ${expected(at.type === undefined ? rule : at)}, got ${shown(e.data)}`
  }
}

/** The refusal for a body that failed `schema`, from Ajv's first error. */
export function bodyRefusal(schema: TSchema, errors: readonly ErrorObject[], what: string): CloudaiError {
  const e = errors[0]!
  const path = e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
  const props = (schema as SchemaNode).properties as Record<string, SchemaNode> | undefined
  if (path.length === 0 && e.keyword === 'additionalProperties') {
    const field = (e.params as { additionalProperty: string }).additionalProperty.slice(0, 40)
    const takes = Object.keys(props ?? {})
    const rule = takes.length === 0 ? 'it takes an empty JSON object ({}) as its body' : `it takes ${takes.join(' and ')}`
    return new CloudaiError('CLOUDAI_BAD_REQUEST', `unknown field ${JSON.stringify(field)} in ${what}: ${rule}`, { field })
  }
  const field = path[0] ?? (e.keyword === 'required' ? (e.params as { missingProperty: string }).missingProperty : undefined)
  if (field === undefined) return new CloudaiError('CLOUDAI_BAD_REQUEST', `${what} must be a JSON object`)
  const prop = props?.[field]
  const code = codeOf(prop) ?? codeOf(schema as SchemaNode) ?? 'CLOUDAI_BAD_FIELD'
  return new CloudaiError(code, message(e, [field, ...path.slice(1)].join(' '), path.length > 1 ? undefined : prop), { field })
}

/**
 * Checks request bodies against their schemas; built once per API, each validator compiled once,
 * at the first body it checks rather than at start: compiling every route's schema was ~75 ms of
 * each master's start, for routes most masters never see. test/unit/openapi-document.test.ts
 * compiles them all, so a schema Ajv refuses fails the tests, not a request.
 */
export class BodyValidator {
  private readonly ajv = apiAjv()
  private readonly compiled = new Map<TSchema, ValidateFunction>()

  /** `body` as `schema` types it, or a CloudaiError (400) naming the field at fault. `what`: "a drain request". */
  check<T extends TSchema>(schema: T, body: unknown, what: string): Static<T> {
    const validate = this.validator(schema)
    if (validate(body)) return body as Static<T>
    throw bodyRefusal(schema, validate.errors ?? [], what)
  }

  /** The compiled validator of `schema` (compiled now if it is not yet). */
  validator(schema: TSchema): ValidateFunction {
    let validate = this.compiled.get(schema)
    if (!validate) {
      validate = this.ajv.compile(schema)
      this.compiled.set(schema, validate)
    }
    return validate
  }
}
