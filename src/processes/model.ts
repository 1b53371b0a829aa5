// TypeBox schemas for the process routes; types come from these, never a second hand-written interface.
import { t } from 'elysia'
import { STATUSES } from './states'

export const StatusSchema = t.UnionEnum(STATUSES)

const Timestamp = t.String({ format: 'date-time' })
const NullableTimestamp = t.Union([Timestamp, t.Null()])

export const ProcessSummary = t.Object({
  id: t.Integer(),
  workspace_id: t.Integer(),
  type: t.String(),
  status: StatusSchema,
  progress: t.Integer({ minimum: 0, maximum: 100 }),
  message: t.Union([t.String(), t.Null()]),
  error: t.Union([t.String(), t.Null()]),
  attempts: t.Integer(),
  version: t.Integer(),
  worker_id: t.Union([t.String(), t.Null()]),
  created_by: t.Union([t.Integer(), t.Null()]),
  created_at: Timestamp,
  updated_at: Timestamp,
  started_at: NullableTimestamp,
  finished_at: NullableTimestamp,
})

export const Process = t.Composite([
  ProcessSummary,
  t.Object({
    metadata: t.Record(t.String(), t.Unknown()),
    result_summary: t.Union([t.Record(t.String(), t.Unknown()), t.Null()]),
  }),
])
export type Process = typeof Process.static
export type ProcessSummary = typeof ProcessSummary.static

export const ProcessEvent = t.Object({
  id: t.Integer(),
  status: StatusSchema,
  message: t.Union([t.String(), t.Null()]),
  created_at: Timestamp,
})

export const Id = t.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
export const IdParams = t.Object({ id: t.Numeric({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, multipleOf: 1 }) })
const NumericId = t.Numeric({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, multipleOf: 1 })

/** One status or several, comma-separated: `running,pending`. */
export const StatusFilter = t.String({ pattern: `^(${STATUSES.join('|')})(,(${STATUSES.join('|')}))*$` })
export const TypePattern = '^[a-z][a-z0-9_.-]{0,63}$'

export const ListQuery = t.Object({
  workspace_id: t.Optional(NumericId),
  status: t.Optional(StatusFilter),
  type: t.Optional(t.String({ pattern: TypePattern })),
  limit: t.Optional(t.Numeric({ minimum: 1, maximum: 200, multipleOf: 1, default: 50 })),
  before: t.Optional(NumericId),
})

export const StreamQuery = t.Object({
  workspace_id: t.Optional(NumericId),
  status: t.Optional(StatusFilter),
  type: t.Optional(t.String({ pattern: TypePattern })),
  last_event_id: t.Optional(t.String({ maxLength: 64 })),
})

export const ProcessStreamQuery = t.Object({
  last_event_id: t.Optional(t.String({ maxLength: 64 })),
})

export const EventsQuery = t.Object({
  after: t.Optional(t.Numeric({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, multipleOf: 1 })),
  limit: t.Optional(t.Numeric({ minimum: 1, maximum: 1000, multipleOf: 1, default: 1000 })),
})

// Far beyond any real metadata, far below what breaks JSON.stringify (~100 000 levels) or PGlite: one
// body nested 20 000 deep left the embedded database refusing every later query ("transaction is aborted").
export const MAX_METADATA_DEPTH = 64

/**
 * Why a JSON value cannot be stored as jsonb, or null: nesting deeper than `maxDepth`, or a string (key or
 * value) holding U+0000 or an unpaired surrogate, which Postgres refuses. Iterative, so depth cannot hurt it.
 */
export function unstorableJson(value: unknown, maxDepth = MAX_METADATA_DEPTH): string | null {
  const storable = (text: string) => !text.includes('\u0000') && text.isWellFormed()
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!
    if (typeof node === 'string') {
      if (!storable(node)) return 'strings may not contain U+0000 or unpaired surrogates'
    } else if (typeof node === 'object' && node !== null) {
      if (depth > maxDepth) return `nested deeper than ${maxDepth} levels`
      for (const [key, child] of Object.entries(node)) {
        if (!storable(key)) return 'keys may not contain U+0000 or unpaired surrogates'
        stack.push([child, depth + 1])
      }
    }
  }
  return null
}

export const CreateBody = t.Object(
  {
    type: t.String({ pattern: TypePattern }),
    metadata: t.Optional(t.Record(t.String(), t.Unknown())),
    workspace_id: t.Optional(Id),
  },
  { additionalProperties: false },
)

export const ReviewBody = t.Object(
  {
    decision: t.Union([t.Literal('approve'), t.Literal('discard')]),
    // Postgres text cannot hold U+0000.
    message: t.Optional(t.String({ maxLength: 2000, pattern: '^[^\\u0000]*$' })),
  },
  { additionalProperties: false },
)

export const IdempotencyHeaders = t.Object({
  'idempotency-key': t.Optional(t.String({ minLength: 1, maxLength: 255 })),
})

export const ErrorSchema = t.Object({
  error: t.Object({
    code: t.String(),
    message: t.String(),
    details: t.Optional(t.Unknown()),
    request_id: t.Optional(t.String()),
  }),
})
