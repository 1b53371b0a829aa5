// The process routes' OpenAPI responses, straight from the TypeBox schemas.
import type { TSchema } from '@sinclair/typebox'
import { t } from 'elysia'
import { ErrorSchema } from '../model'

export const errors = { 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 422: ErrorSchema, 500: ErrorSchema, 503: ErrorSchema }
/** Every POST: its body is read up to 1 MiB (413); one that is parsed may not be JSON (400). */
export const bodyErrors = { 400: ErrorSchema, 413: ErrorSchema }
/** The SSE routes' 200: documented as text/event-stream (see responses). */
export const EVENT_STREAM = t.String({
  description: 'text/event-stream: `retry:`, then `id: <version>` + `data: <process JSON>` events, `: keepalive` comments',
})

const DESCRIPTIONS: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  304: 'Not modified (If-None-Match matched the ETag)',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  409: 'invalid_transition',
  422: 'invalid_request',
  400: 'bad_request',
  413: 'payload_too_large',
  500: 'internal (with a request_id)',
  503: 'unavailable (database down, or shutting down)',
}

/**
 * OpenAPI responses straight from the TypeBox schemas. They are documented rather than given to Elysia as
 * `response`, which would also validate and re-encode every response at run time: ~11 µs of CPU per
 * GET /processes/{id}, about a sixth of the request (measured in-process, 50 concurrent callers).
 */
export function responses(map: Record<number, TSchema | null>) {
  return Object.fromEntries(
    Object.entries(map).map(([status, schema]) => [
      status,
      schema
        ? { description: DESCRIPTIONS[Number(status)] ?? '', content: { [schema === EVENT_STREAM ? 'text/event-stream' : 'application/json']: { schema } } }
        : { description: DESCRIPTIONS[Number(status)] ?? '' },
    ]),
  )
}
