// TypeBox schemas for the process routes; types come from these, never a second hand-written interface.
import { Kind, Type, TypeRegistry, type TSchema } from '@sinclair/typebox'
import { DefaultErrorFunction, SetErrorFunction } from '@sinclair/typebox/errors'
import { t } from 'elysia'
import { HttpError } from '../errors'
import { meaning } from '../validation'
import { STATUSES } from './states'

// Integers are TypeBox's own `Type.Integer`: Elysia's `t.Integer` also accepts a string of digits (`"1"` in a
// JSON body), and documents every integer as "a string or an integer".
const Int = Type.Integer

export const StatusSchema = t.UnionEnum(STATUSES)

const Timestamp = t.String({ format: 'date-time' })
const NullableTimestamp = t.Union([Timestamp, t.Null()])

export const ProcessSummary = t.Object({
  id: Int(),
  workspace_id: Int(),
  type: t.String(),
  status: StatusSchema,
  progress: Int({ minimum: 0, maximum: 100 }),
  message: t.Union([t.String(), t.Null()]),
  error: t.Union([t.String(), t.Null()]),
  attempts: Int(),
  version: Int(),
  worker_id: t.Union([t.String(), t.Null()]),
  created_by: t.Union([Int(), t.Null()]),
  created_at: Timestamp,
  updated_at: Timestamp,
  started_at: NullableTimestamp,
  finished_at: NullableTimestamp,
  /** Queue fields (extension): higher first; not claimable before run_at; failed only once attempts reach max_attempts. */
  priority: Int(),
  run_at: Timestamp,
  max_attempts: Int({ minimum: 1, maximum: 100 }),
  /** Trees (extension): the parent, null on a root. */
  parent_id: t.Union([Int(), t.Null()]),
})

/** Tags (extension, set at creation): at most MAX_TAGS, each TAG_PATTERN. */
export const TAG_PATTERN = '^[a-zA-Z0-9_.:-]{1,64}$'
export const MAX_TAGS = 10
const TAG_MEANING = 'letters, digits, _ . : -, 1 to 64 chars'
export const Tag = () => t.String({ pattern: TAG_PATTERN, ...meaning(TAG_MEANING) })
export const Tags = () => t.Array(Tag(), { maxItems: MAX_TAGS, ...meaning(`at most ${MAX_TAGS} tags, each ${TAG_MEANING}`) })
/** `?tag=a,b`: processes carrying every one of these tags (or `tag=a&tag=b`). */
export const TagFilter = t.Union([
  t.String({ pattern: '^[a-zA-Z0-9_.:-]{1,64}(,[a-zA-Z0-9_.:-]{1,64}){0,9}$', ...meaning(`one tag, or up to ${MAX_TAGS} comma-separated`) }),
  t.Array(Tag(), { maxItems: MAX_TAGS }),
])
/** The tags a `tag` query parameter names (deduplicated); undefined without one. */
export function tagsOf(value: string | string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined
  const list = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(','))
  return [...new Set(list)]
}
/** A child's counts per status (extension). */
export const ChildCounts = t.Object({
  total: Int(),
  pending: Int(),
  running: Int(),
  waiting_review: Int(),
  completed: Int(),
  failed: Int(),
  cancelled: Int(),
})

/** The tree's fields (extension): src/processes/queries/rows.ts treeFields. */
export const TreeFields = t.Object({
  parent_id: t.Union([Int(), t.Null()]),
  /** The tree's root: the process's own id when it has no parent. */
  root_id: Int(),
  /** Its children by status; null when it never had any. */
  children: t.Union([ChildCounts, t.Null()]),
})

export const Process = t.Composite([
  ProcessSummary,
  TreeFields,
  t.Object({
    tags: t.Array(t.String()),
    /** The stack a worker sent with its latest fail (extension; capped at STACK_MAX_CHARS); cleared by a retry. */
    error_stack: t.Union([t.String(), t.Null()]),
    metadata: t.Record(t.String(), t.Unknown()),
    result_summary: t.Union([t.Record(t.String(), t.Unknown()), t.Null()]),
  }),
])
export type Process = typeof Process.static
export type ProcessSummary = typeof ProcessSummary.static

export const ProcessEvent = t.Object({
  id: Int(),
  status: StatusSchema,
  message: t.Union([t.String(), t.Null()]),
  created_at: Timestamp,
  /** A fail's stack, as the worker sent it (extension; null on every other event). */
  stack: t.Union([t.String(), t.Null()]),
})

/**
 * A fail frame's stack is kept up to this many characters (the rest is cut, marked with a last line): a
 * real stack is a few KB, and 8000 characters of any text stay within a frame's 64 KiB as JSON. The SDKs cut
 * there too, so their fail frame is never refused for its size.
 */
export const STACK_MAX_CHARS = 8000

/**
 * A stack as it is stored: what Postgres text cannot hold (U+0000, unpaired surrogates) dropped or replaced,
 * cut at STACK_MAX_CHARS with a line saying so. Null for an empty one.
 */
export function storableStack(stack: string): string | null {
  const text = stack.replaceAll('\u0000', '').toWellFormed()
  if (text.length === 0) return null
  if (text.length <= STACK_MAX_CHARS) return text
  const mark = `\n… (cut at ${STACK_MAX_CHARS} characters)`
  return text.slice(0, STACK_MAX_CHARS - mark.length).toWellFormed() + mark
}

/**
 * The list's views (extension), each one predicate shared by the list, the bulk filter and the stats
 * (src/processes/queries/filters.ts): scheduled (pending, run_at ahead), retrying (pending after a failed
 * attempt, waiting for its retry), dead (failed with its attempts exhausted).
 */
export const VIEWS = ['scheduled', 'retrying', 'dead'] as const
export type View = (typeof VIEWS)[number]
// Literals, not t.UnionEnum, which carries its first value as a default: a list without `view` would get one.
export const ViewSchema = t.Union(VIEWS.map((v) => t.Literal(v)))

/** A search (`q`, extension): a case-insensitive substring of message, error, type or metadata. */
export const SearchString = () => t.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000]*$', ...meaning('1 to 200 characters of text without U+0000') })

/**
 * An integer in a path or query string, written as a plain decimal (`42`; `0` only where the minimum is 0), and
 * documented as an integer. `t.Numeric` converts with `Number()`, which also takes `0x2a`, `0b101`, `4.2e1`,
 * `+42`, `042` and ` 42 `: one process would answer to many URLs, and a typo could read as a valid id.
 * A number is accepted too: it can only be a `default` or a value already decoded (Elysia 1.4 decodes a query twice).
 */
const DECIMAL_INTEGER = 'DecimalInteger'
const DECIMAL = /^[1-9][0-9]*$/
interface DecimalBounds {
  minimum: number
  maximum: number
}
TypeRegistry.Set<DecimalBounds>(DECIMAL_INTEGER, (schema, value) => {
  const n =
    typeof value === 'string'
      ? DECIMAL.test(value) || value === '0'
        ? Number(value)
        : NaN
      : typeof value === 'number' && Number.isInteger(value)
        ? value
        : NaN
  return n >= schema.minimum && n <= schema.maximum
})
// The message names what is expected; the path (`/limit`) comes with the error.
SetErrorFunction((error) =>
  error.schema[Kind] === DECIMAL_INTEGER ? `Expected a decimal integer from ${error.schema.minimum} to ${error.schema.maximum}` : DefaultErrorFunction(error),
)

function DecimalInteger(o: DecimalBounds & { default?: number }) {
  return t
    .Transform(Type.Unsafe<string | number>({ [Kind]: DECIMAL_INTEGER, type: 'integer', ...o }))
    .Decode((value) => Number(value))
    .Encode((value) => value)
}

export const Id = Int({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
export const IdParams = t.Object({ id: DecimalInteger({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }) })
const NumericId = () => DecimalInteger({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })

/** One status or several, comma-separated: `running,pending`. */
export const StatusFilter = t.String({
  pattern: `^(${STATUSES.join('|')})(,(${STATUSES.join('|')}))*$`,
  ...meaning(`one of ${STATUSES.join(', ')} (or several, comma-separated)`),
})
export const TypePattern = '^[a-z][a-z0-9_.-]{0,63}$'
/** TypePattern in words: what a 422 or the CLI says instead of the regex. */
export const TYPE_MEANING = 'lowercase letters, digits, _ . -, starting with a letter, ≤ 64 chars'
export const TypeString = () => t.String({ pattern: TypePattern, ...meaning(TYPE_MEANING) })
/** A positive id as a query string (`workspace_id` where the route reads it as text). */
export const IdString = () => t.String({ pattern: '^[1-9][0-9]{0,15}$', ...meaning('a positive integer id') })

// Unknown query parameters are ignored on every route, as on those without a query schema: an EventSource URL
// may carry a cache-buster (`?_=1712…`), a proxy or a dashboard a tracking parameter.
const Query = <T extends Record<string, TSchema>>(properties: T) => t.Object(properties, { additionalProperties: true })

export const ListQuery = Query({
  workspace_id: t.Optional(NumericId()),
  status: t.Optional(StatusFilter),
  type: t.Optional(TypeString()),
  tag: t.Optional(TagFilter),
  limit: t.Optional(DecimalInteger({ minimum: 1, maximum: 200, default: 50 })),
  before: t.Optional(NumericId()),
  /** Only the children of this process (extension). */
  parent_id: t.Optional(NumericId()),
  /** One of the views (extension): scheduled, retrying, dead. */
  view: t.Optional(ViewSchema),
  /** Search (extension): within the newest SEARCH_SCAN_MAX processes the other filters match. */
  q: t.Optional(SearchString()),
})

/** GET /processes/{id}/children (extension): oldest first, `after` an id for the next page. */
export const ChildrenQuery = Query({
  status: t.Optional(StatusFilter),
  limit: t.Optional(DecimalInteger({ minimum: 1, maximum: 1000, default: 100 })),
  after: t.Optional(NumericId()),
})

// Last-Event-ID is any text: one that is not a version we sent is answered with the snapshot (README: The SSE stream).
export const StreamQuery = Query({
  workspace_id: t.Optional(NumericId()),
  status: t.Optional(StatusFilter),
  type: t.Optional(TypeString()),
  tag: t.Optional(TagFilter),
  /** Only the processes of this tree (extension): the root and its descendants. */
  root_id: t.Optional(NumericId()),
  last_event_id: t.Optional(t.String()),
})

export const ProcessStreamQuery = Query({
  last_event_id: t.Optional(t.String()),
  /** `false`: no `event: output` chunks on this stream (README: Live output). */
  output: t.Optional(t.UnionEnum(['true', 'false'])),
})

export const OutputQuery = Query({
  after: t.Optional(DecimalInteger({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  limit: t.Optional(DecimalInteger({ minimum: 1, maximum: 1000, default: 1000 })),
})

export const OutputChunk = t.Object({
  seq: Int(),
  chunk: t.Unknown(),
  created_at: Timestamp,
})

export const EventsQuery = Query({
  after: t.Optional(DecimalInteger({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  limit: t.Optional(DecimalInteger({ minimum: 1, maximum: 1000, default: 1000 })),
})

// Far beyond any real metadata, far below what breaks JSON.stringify (~100 000 levels) or PGlite: one
// body nested 20 000 deep left the embedded database refusing every later query ("transaction is aborted").
export const MAX_METADATA_DEPTH = 64

/**
 * Values (array elements and object members, at every level) one process's metadata may hold. Far beyond
 * real metadata; what it bounds is the work every read, stream and webhook of the process costs: a 1 MB
 * array of zeros (500,000 values) once made each GET of it cost 8 s of database CPU.
 */
export const MAX_METADATA_VALUES = 10_000

/**
 * Why a JSON value cannot be stored as jsonb, or null: nesting deeper than `maxDepth`, more than `maxValues`
 * values, or a string (key or value) holding U+0000 or an unpaired surrogate, which Postgres refuses.
 * Iterative, so depth cannot hurt it.
 */
export function unstorableJson(value: unknown, maxDepth = MAX_METADATA_DEPTH, maxValues = Number.POSITIVE_INFINITY): string | null {
  const storable = (text: string) => !text.includes('\u0000') && text.isWellFormed()
  const stack: Array<[unknown, number]> = [[value, 1]]
  let values = 0
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!
    if (++values > maxValues + 1) return `holds more than ${maxValues} values (array elements and object members, at every level)`
    if (typeof node === 'string') {
      if (!storable(node)) return 'strings may not contain U+0000 or unpaired surrogates'
    } else if (typeof node === 'number') {
      // JSON.parse reads 1e400 as Infinity, which would be stored as null without a word.
      if (!Number.isFinite(node)) return 'numbers must be finite (beyond ±1.8e308 is not storable)'
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

/**
 * 413 `payload_too_large` when a create's metadata is over METADATA_MAX_BYTES as compact JSON (UTF-8), naming
 * the field and both sizes; `at` is the item's path in the body ('' for a single create).
 */
export function checkMetadataBytes(metadata: unknown, at: string, maxBytes: number) {
  if (metadata === undefined || maxBytes === 0) return
  const bytes = Buffer.byteLength(JSON.stringify(metadata))
  if (bytes <= maxBytes) return
  const message = `metadata is ${bytes} bytes as JSON; at most ${maxBytes} (METADATA_MAX_BYTES)`
  throw new HttpError(413, 'payload_too_large', `Invalid body ${at}/metadata: ${message}`, [{ path: `${at}/metadata`, message, limit_bytes: maxBytes, bytes }])
}

/**
 * Whether JSON text nests arrays and objects deeper than `maxDepth` levels, counted as unstorableJson counts
 * `metadata`: the values of the top-level object (or array) are level 1. One pass over the text, before it is
 * parsed, because everything after it recurses: 20 000 nested arrays (40 KB) overflowed the stack in Elysia's
 * validation report (a 500), and 100 000 (200 KB) held the event loop for 9 s in TypeBox.
 * Returns null when it does not; else the top-level key it happens under ('' when there is none). Brackets
 * inside strings do not count; anything else that is not JSON is left to JSON.parse to refuse.
 */
export function tooDeeplyNested(text: string, maxDepth: number): string | null {
  const limit = maxDepth + 1
  let depth = 0
  let rootIsObject = false
  // The last string read at level 1 of an object is the key of the member being read.
  let keyStart = -1
  let keyEnd = -1
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22 /* " */) {
      const start = i
      i = text.indexOf('"', i + 1)
      while (i !== -1 && isEscaped(text, i)) i = text.indexOf('"', i + 1)
      if (i === -1) return null
      if (depth === 1) {
        keyStart = start
        keyEnd = i + 1
      }
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (depth === 0) rootIsObject = c === 0x7b
      if (++depth > limit) return rootIsObject ? keyOf(text.slice(keyStart, keyEnd)) : ''
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) depth--
  }
  return null
}

/** A quote preceded by an odd number of backslashes is part of the string. */
function isEscaped(text: string, quote: number): boolean {
  let backslashes = 0
  while (text.charCodeAt(quote - 1 - backslashes) === 0x5c) backslashes++
  return backslashes % 2 === 1
}

function keyOf(quoted: string): string {
  try {
    const key = JSON.parse(quoted)
    return typeof key === 'string' ? key : ''
  } catch {
    return ''
  }
}

/** The queue's options of a new process (extension): `run_at` and `delay_ms` are exclusive. */
const QueueOptions = {
  priority: t.Optional(Int({ minimum: -1_000_000, maximum: 1_000_000 })),
  run_at: t.Optional(t.String({ format: 'date-time' })),
  delay_ms: t.Optional(Int({ minimum: 0, maximum: 31_536_000_000 })),
  max_attempts: t.Optional(Int({ minimum: 1, maximum: 100 })),
  /** While a process with this key is pending or running in the workspace, a create with it returns that one (200). */
  unique_key: t.Optional(t.String({ minLength: 1, maxLength: 255, pattern: '^[^\\u0000]*$' })),
}

/** A process's options as a tree node (extension). */
const TreeOptions = {
  /** Its share of its parent's progress (default 1). */
  weight: t.Optional(t.Number({ exclusiveMinimum: 0, maximum: 1_000_000 })),
  /** 'fail' (default): a child that failed for good fails this parent once its children have ended; 'tolerate': it does not. */
  child_failures: t.Optional(t.Union([t.Literal('fail'), t.Literal('tolerate')])),
  /** Claimed once more after its children have ended, to see them (ctx.children) and write the result. */
  finalize: t.Optional(t.Boolean()),
}

/** At most this many children in one call (a create's `children`, a batch with `parent_id`, a spawn). */
export const MAX_CHILDREN = 10_000
/** A root has depth 0; a process may be at most this deep. */
export const MAX_DEPTH = 5

export const ChildItem = t.Object(
  {
    type: TypeString(),
    metadata: t.Optional(t.Record(t.String(), t.Unknown())),
    ...QueueOptions,
    ...TreeOptions,
  },
  { additionalProperties: false },
)
export type ChildItem = typeof ChildItem.static

export const CreateBody = t.Object(
  {
    type: TypeString(),
    metadata: t.Optional(t.Record(t.String(), t.Unknown())),
    tags: t.Optional(Tags()),
    workspace_id: t.Optional(Id),
    ...QueueOptions,
    ...TreeOptions,
    /** Its parent (same workspace, not ended): the new process is a child of it. */
    parent_id: t.Optional(Id),
    /** Children made with it, in the same transaction. */
    children: t.Optional(t.Array(ChildItem, { maxItems: MAX_CHILDREN })),
  },
  { additionalProperties: false },
)

export const MAX_BATCH = 1000

export const BatchItem = t.Object(
  {
    type: TypeString(),
    metadata: t.Optional(t.Record(t.String(), t.Unknown())),
    tags: t.Optional(Tags()),
    ...QueueOptions,
    ...TreeOptions,
  },
  { additionalProperties: false },
)
export type BatchItem = typeof BatchItem.static

export const BatchBody = t.Object(
  {
    workspace_id: t.Optional(Id),
    /** Every item becomes a child of this process (extension). */
    parent_id: t.Optional(Id),
    processes: t.Array(BatchItem, { minItems: 1, maxItems: MAX_BATCH }),
  },
  { additionalProperties: false },
)

export const ReviewBody = t.Object(
  {
    decision: t.Union([t.Literal('approve'), t.Literal('discard')]),
    // Postgres text cannot hold U+0000.
    message: t.Optional(t.String({ maxLength: 2000, pattern: '^[^\\u0000]*$', ...meaning('text without U+0000') })),
  },
  { additionalProperties: false },
)

/** What a bulk action selects (extension): the list's filters, as JSON. */
export const BulkFilter = t.Object(
  {
    workspace_id: t.Optional(Id),
    status: t.Optional(t.Union([StatusFilter, t.Array(StatusSchema, { minItems: 1, maxItems: STATUSES.length })])),
    type: t.Optional(TypeString()),
    tag: t.Optional(TagFilter),
    parent_id: t.Optional(Id),
    view: t.Optional(ViewSchema),
    q: t.Optional(SearchString()),
  },
  { additionalProperties: false },
)
export type BulkFilter = typeof BulkFilter.static

export const BULK_ACTIONS = ['cancel', 'retry', 'discard'] as const
export type BulkAction = (typeof BULK_ACTIONS)[number]
const BulkActionSchema = t.Union(BULK_ACTIONS.map((a) => t.Literal(a)))

export const BulkBody = t.Object(
  {
    action: BulkActionSchema,
    filter: BulkFilter,
    /** true: only count what the action would change (the preview). */
    dry_run: t.Optional(t.Boolean()),
  },
  { additionalProperties: false },
)

export const BulkResult = t.Object({
  action: BulkActionSchema,
  workspace_id: Int(),
  /** Processes the filter matches that the action applies to (cancel: pending or running; retry: failed; discard: waiting_review). */
  matched: Int(),
  /** Of those, how many it changed (absent on a dry run); fewer when others changed first. */
  changed: t.Optional(Int()),
  dry_run: t.Boolean(),
})
export type BulkResult = typeof BulkResult.static

export const IdempotencyHeaders = t.Object({
  'idempotency-key': t.Optional(t.String({ minLength: 1, maxLength: 255 })),
})

export { ErrorSchema } from '../errors'
