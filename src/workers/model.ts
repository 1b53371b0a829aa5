// Worker frames (README: Worker protocol), as TypeBox schemas compiled once: every frame is checked before it is acted on.
import { Type as T, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ChildItem, MAX_CHILDREN, StatusFilter, TypePattern } from '../processes/model'

const Ref = T.Optional(T.Union([T.String({ maxLength: 200 }), T.Number()]))
const ProcessId = T.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
const Attempt = T.Optional(T.Integer({ minimum: 0, maximum: 2_147_483_647 }))
const Message = T.String({ maxLength: 4000 })
const ClaimTypes = T.Optional(T.Array(T.String({ pattern: TypePattern }), { maxItems: 100 }))
const WaitMs = T.Optional(T.Integer({ minimum: 0, maximum: 30_000 }))
/** Extension: a claim takes up to `max` processes at once (default 1). */
const ClaimMax = T.Optional(T.Integer({ minimum: 1, maximum: 100 }))
/** Extension: complete/fail and claim the next in one round trip; the ack carries `processes`. */
const ClaimNext = T.Optional(T.Object({ types: ClaimTypes, max: ClaimMax, wait_ms: WaitMs }, { additionalProperties: false }))

export const Frame = T.Union([
  T.Object({ op: T.Literal('hello'), ref: Ref, worker_id: T.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:@/-]+$' }) }),
  T.Object({
    op: T.Literal('claim'),
    ref: Ref,
    types: ClaimTypes,
    wait_ms: WaitMs,
    max: ClaimMax,
  }),
  T.Object({ op: T.Literal('start'), ref: Ref, process_id: ProcessId, attempt: Attempt }),
  T.Object({
    op: T.Literal('progress'),
    ref: Ref,
    process_id: ProcessId,
    progress: T.Integer({ minimum: 0, maximum: 100 }),
    message: T.Optional(T.Union([Message, T.Null()])),
    attempt: Attempt,
  }),
  T.Object({ op: T.Literal('heartbeat'), ref: Ref, process_id: ProcessId, attempt: Attempt }),
  /** Extension: a JSON merge patch (RFC 7386) into result_summary, live state like progress. */
  T.Object({
    op: T.Literal('update'),
    ref: Ref,
    process_id: ProcessId,
    result_summary: T.Record(T.String(), T.Unknown()),
    message: T.Optional(T.Union([Message, T.Null()])),
    attempt: Attempt,
  }),
  T.Object({ op: T.Literal('log'), ref: Ref, process_id: ProcessId, message: Message, attempt: Attempt }),
  /** Extension: a chunk of live output (text, or any JSON value but null), appended with the next seq. */
  T.Object({
    op: T.Literal('output'),
    ref: Ref,
    process_id: ProcessId,
    chunk: T.Union([T.String(), T.Number(), T.Boolean(), T.Array(T.Unknown()), T.Record(T.String(), T.Unknown())]),
    attempt: Attempt,
  }),
  T.Object({
    op: T.Literal('complete'),
    ref: Ref,
    process_id: ProcessId,
    result_summary: T.Optional(T.Union([T.Record(T.String(), T.Unknown()), T.Null()])),
    review: T.Optional(T.Boolean()),
    attempt: Attempt,
    claim: ClaimNext,
  }),
  T.Object({
    op: T.Literal('fail'),
    ref: Ref,
    process_id: ProcessId,
    error: T.String({ minLength: 1, maxLength: 4000 }),
    /** The thrown error's stack or traceback (extension): kept up to STACK_MAX_CHARS, the rest cut. */
    stack: T.Optional(T.String()),
    attempt: Attempt,
    claim: ClaimNext,
  }),
  // Trees (extension): children of the process this worker holds, and a page of them.
  T.Object({
    op: T.Literal('spawn'),
    ref: Ref,
    process_id: ProcessId,
    children: T.Array(ChildItem, { minItems: 1, maxItems: MAX_CHILDREN }),
    attempt: Attempt,
  }),
  T.Object({
    op: T.Literal('children'),
    ref: Ref,
    process_id: ProcessId,
    status: T.Optional(StatusFilter),
    after: T.Optional(ProcessId),
    limit: T.Optional(T.Integer({ minimum: 1, maximum: 1000 })),
    attempt: Attempt,
  }),
])
export type Frame = Static<typeof Frame>

export const checkFrame = TypeCompiler.Compile(Frame)

/** One compiled schema per op, to say precisely what is wrong with a frame whose op is known. */
export const checkByOp = new Map(Frame.anyOf.map((schema) => [schema.properties.op.const as string, TypeCompiler.Compile(schema)]))

export const OPS = ['hello', 'claim', 'start', 'progress', 'heartbeat', 'update', 'output', 'log', 'complete', 'fail', 'spawn', 'children'] as const

export type WorkerErrorCode =
  | 'not_found'
  | 'not_owner'
  | 'invalid_transition'
  | 'cancelled'
  | 'invalid_message'
  | 'unavailable'
  | 'internal'
  | 'rate_limited'
  /** An update whose merged result_summary would exceed MAX_RESULT_BYTES (nothing of it applied). */
  | 'result_too_large'
  /** An output chunk past OUTPUT_MAX_BYTES of the process (refused; the process goes on). */
  | 'output_too_large'

export const MAX_FRAME_BYTES = 64 * 1024

/** A live result (result_summary after an update's merge patch), as JSON, at most. */
export const MAX_RESULT_BYTES = 64 * 1024
