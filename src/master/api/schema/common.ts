import { type TSchema, Type } from '@sinclair/typebox'

// Building blocks of the API's schemas. A schema with `$id` is a named component of the OpenAPI
// document (#/components/schemas/<id>): the document builder turns every nested use of it into a
// $ref, and Ajv resolves it by the same id.

/** `T | null`, the way every optional time and number of the views is shown. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

/** An RFC 3339 time in UTC, as `Date.toISOString()` writes it. */
export const Time = (description?: string) => Type.String({ format: 'date-time', ...(description ? { description } : {}) })

/** A worker id: 1 to 64 characters of A-Z a-z 0-9 . _ - (src/shared/validation.ts). */
export const WORKER_ID_PATTERN_TEXT = '^[A-Za-z0-9._-]{1,64}$'
/** A task id: 1 to 128 characters of A-Z a-z 0-9 . _ - . */
export const TASK_ID_PATTERN_TEXT = '^[A-Za-z0-9._-]{1,128}$'

/**
 * The stable code a body that breaks this part of its schema is refused with (HTTP 400); absent:
 * CLOUDAI_BAD_FIELD (CLOUDAI_BAD_REQUEST for the body's own shape). An OpenAPI extension keyword:
 * clients that do not know it ignore it.
 */
export const ERROR_CODE_KEYWORD = 'x-error-code'
