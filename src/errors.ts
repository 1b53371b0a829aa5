// Small error classes with a status and a code (Hono's HTTPException is the model),
// and the one place that turns any failure into the API's error body.
import { Type as T } from '@sinclair/typebox'

/** The error body every route answers with (the OpenAPI document's schema for every 4xx and 5xx). */
export const ErrorSchema = T.Object({
  error: T.Object({
    code: T.String(),
    message: T.String(),
    details: T.Optional(T.Unknown()),
    request_id: T.Optional(T.String()),
  }),
})

export type ErrorCode =
  | 'bad_request'
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'invalid_transition'
  | 'payload_too_large'
  | 'invalid_request'
  | 'rate_limited'
  | 'unavailable'
  | 'internal'

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
    readonly headers?: Record<string, string>,
  ) {
    super(message)
  }
}

export const badRequest = (message: string) => new HttpError(400, 'bad_request', message)
export const unauthenticated = (message = 'Missing or invalid credentials') =>
  new HttpError(401, 'unauthenticated', message, undefined, { 'WWW-Authenticate': 'Bearer' })
export const forbidden = (message: string) => new HttpError(403, 'forbidden', message)
export const notFound = (message = 'Not found') => new HttpError(404, 'not_found', message)
export const invalidTransition = (message: string, details?: unknown) => new HttpError(409, 'invalid_transition', message, details)
export const payloadTooLarge = () => new HttpError(413, 'payload_too_large', 'Request body exceeds 1 MiB')
export const invalidRequest = (message: string, details?: unknown) => new HttpError(422, 'invalid_request', message, details)
export const unavailable = (message = 'Database unavailable') => new HttpError(503, 'unavailable', message, undefined, { 'Retry-After': '1' })

export function errorBody(code: ErrorCode, message: string, details?: unknown, requestId?: string) {
  const error: Record<string, unknown> = { code, message }
  if (details !== undefined) error.details = details
  if (requestId !== undefined) error.request_id = requestId
  return { error }
}

/** The one Content-Type of every JSON response (createHandler sets it on the routes' own responses too). */
export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8'

export function errorResponse(status: number, code: ErrorCode, message: string, details?: unknown, headers?: Record<string, string>, requestId?: string) {
  return new Response(JSON.stringify(errorBody(code, message, details, requestId)), {
    status,
    headers: { 'Content-Type': JSON_CONTENT_TYPE, ...headers },
  })
}

// Errors that mean "the database is not reachable", from postgres.js, PGlite or the socket layer.
const CONNECTION_ERROR_CODES = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'QUERY_TIMEOUT',
  '57014', // query_canceled: statement_timeout (DB_STATEMENT_TIMEOUT_MS) stopped it
  '57P01', // admin_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
])

/**
 * A transaction Postgres rolled back to break a conflict between concurrent ones (deadlock_detected,
 * serialization_failure): nothing of it committed, so it is safe to run again.
 */
export function isRetryableConflict(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code
  return code === '40P01' || code === '40001'
}

export function isUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code
  if (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code)) return true
  const message = (error as { message?: unknown })?.message
  return typeof message === 'string' && /PGlite is closed|database is closed/i.test(message)
}
