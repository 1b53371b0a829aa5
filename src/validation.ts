// A failed validation of params, query, headers or body in the user's words: which field, and what it takes —
// the allowed values of an enum, "is required" once for a missing field, what a pattern means (never the
// regex itself). The 422 body's `message` names the first; `details` lists each field once.
import { Kind } from '@sinclair/typebox'
import { ValueErrorType } from '@sinclair/typebox/errors'

/** Schema option: what a `pattern` means, said instead of the pattern (`lowercase letters, digits, …`). */
export const MEANING = 'x-meaning'
export const meaning = (text: string) => ({ [MEANING]: text })

/** A process type (and a queue's name): what every route and the CLI accept. */
export const TypePattern = '^[a-z][a-z0-9_.-]{0,63}$'
/** TypePattern in words: what a 422 or the CLI says instead of the regex. */
export const TYPE_MEANING = 'lowercase letters, digits, _ . -, starting with a letter, ≤ 64 chars'

/** `parse` of a route without a body (retry, cancel, pause): whatever is sent is ignored, not read, let alone parsed. */
export const noBody = () => null

interface ReportedError {
  type?: number
  path?: string
  message?: string
  schema?: Record<string | symbol, unknown>
}

export interface ValidationDetail {
  path: string
  message: string
}

const MAX_DETAILS = 20

/** One detail per field, the first error of each (a missing field is also "not a string": said once). */
export function validationDetails(error: unknown): ValidationDetail[] | undefined {
  const all = (error as { all?: ReportedError[] }).all
  if (!Array.isArray(all)) return undefined
  const byPath = new Map<string, ValidationDetail>()
  for (const e of all) {
    const path = e.path || '/'
    if (!byPath.has(path)) byPath.set(path, { path, message: reason(e) })
    if (byPath.size >= MAX_DETAILS) break
  }
  return [...byPath.values()]
}

export function validationMessage(error: unknown): string {
  const type = (error as { type?: string }).type
  // Elysia reports a failed transform (its own t.Numeric's bounds) as type 'property' with no path: don't blame the
  // body. The process routes' numbers (DecimalInteger in processes/model.ts) fail as params or query, with a path.
  const where =
    type === 'params' ? 'path parameter' : type === 'query' ? 'query parameter' : type === 'headers' ? 'header' : type === 'body' ? 'body' : 'parameter'
  const details = validationDetails(error) ?? []
  const first = details[0]
  if (!first) return `Invalid ${where}`
  const more = details.length > 1 ? ` (and ${details.length - 1} more: see details)` : ''
  return `Invalid ${where}${first.path === '/' ? '' : ` ${first.path}`}: ${first.message}${more}`
}

/** What the field takes, said after its path: `/status: must be one of pending, running, …`. */
function reason(e: ReportedError): string {
  const schema = e.schema ?? {}
  const s = schema as Record<string, unknown>
  switch (e.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return 'is required'
    case ValueErrorType.ObjectAdditionalProperties:
      return 'is not a field this route takes'
    case ValueErrorType.StringPattern:
      return typeof s[MEANING] === 'string' ? `must be ${s[MEANING]}` : 'is not in the expected format'
    case ValueErrorType.StringFormat:
      return s.format === 'date-time' ? 'must be an ISO-8601 timestamp (2026-01-31T12:00:00Z)' : `must be a ${String(s.format)}`
    case ValueErrorType.StringMinLength:
      return s.minLength === 1 ? 'must not be empty' : `must be at least ${s.minLength} characters`
    case ValueErrorType.StringMaxLength:
      return `must be at most ${s.maxLength} characters`
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.NumberMinimum:
      return `must be at least ${s.minimum}`
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.NumberMaximum:
      return `must be at most ${s.maximum}`
    case ValueErrorType.ArrayMinItems:
      return `must hold at least ${s.minItems} item${s.minItems === 1 ? '' : 's'}`
    case ValueErrorType.ArrayMaxItems:
      return `must hold at most ${s.maxItems} items`
    case ValueErrorType.Union:
    case ValueErrorType.Kind:
    case ValueErrorType.Literal: {
      const values = allowedValues(schema)
      if (values) return `must be one of ${values.join(', ')}`
      break
    }
  }
  const expected = typeName(s.type)
  if (expected && isTypeMismatch(e.type)) return `must be ${expected}`
  // Messages of our own (DecimalInteger's "Expected a decimal integer from 1 to 200") read as they are, lowercased.
  const message = e.message ?? 'is not valid'
  return message.startsWith('Expected ') ? `must be ${message.slice('Expected '.length)}` : message
}

/** The values of an enum-like schema: Elysia's UnionEnum, a union of literals, or a literal. */
function allowedValues(schema: Record<string | symbol, unknown>): string[] | null {
  if (Array.isArray(schema.enum)) return schema.enum.map(String)
  if (schema.const !== undefined) return [String(schema.const)]
  const options = schema.anyOf
  if (Array.isArray(options) && options.every((o) => o && typeof o === 'object' && 'const' in o)) {
    return options.map((o) => String((o as { const: unknown }).const))
  }
  if (schema[Kind] === 'UnionEnum' && Array.isArray(schema.enum)) return (schema.enum as unknown[]).map(String)
  return null
}

const TYPE_ERRORS = new Set<number>([
  ValueErrorType.String,
  ValueErrorType.Integer,
  ValueErrorType.Number,
  ValueErrorType.Boolean,
  ValueErrorType.Object,
  ValueErrorType.Array,
  ValueErrorType.Null,
])
const isTypeMismatch = (type: number | undefined) => type !== undefined && TYPE_ERRORS.has(type)

function typeName(type: unknown): string | null {
  switch (type) {
    case 'string':
      return 'a string'
    case 'integer':
      return 'an integer'
    case 'number':
      return 'a number'
    case 'boolean':
      return 'true or false'
    case 'object':
      return 'a JSON object'
    case 'array':
      return 'an array'
    case 'null':
      return 'null'
    default:
      return null
  }
}
