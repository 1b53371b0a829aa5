// TypeBox schemas for the schedule routes (README: Schedules).
import { Type } from '@sinclair/typebox'
import { t } from 'elysia'
import { Id, TypePattern } from '../processes/model'

const Int = Type.Integer
const Timestamp = t.String({ format: 'date-time' })

// Unions of literals, not t.UnionEnum: that one carries its first value as a default, which Elysia writes
// into a body that leaves the field out (a create would get overlap 'skip', a PATCH of `enabled` alone
// would reset both fields).
const Overlap = t.Union([t.Literal('skip'), t.Literal('allow')])
const CatchUp = t.Union([t.Literal('none'), t.Literal('latest'), t.Literal('all')])

const fields = {
  type: t.String({ pattern: TypePattern }),
  cron: t.String({ minLength: 1, maxLength: 200, description: 'five fields (minute first) or six (seconds first); @daily and the like' }),
  timezone: t.String({ minLength: 1, maxLength: 64, description: 'IANA time zone, default UTC' }),
  metadata: t.Record(t.String(), t.Unknown()),
  priority: Int({ minimum: -1_000_000, maximum: 1_000_000 }),
  max_attempts: t.Union([Int({ minimum: 1, maximum: 100 }), t.Null()]),
  overlap: Overlap,
  catch_up: CatchUp,
  enabled: t.Boolean(),
}

export const CreateScheduleBody = t.Object(
  {
    type: fields.type,
    cron: fields.cron,
    timezone: t.Optional(fields.timezone),
    metadata: t.Optional(fields.metadata),
    priority: t.Optional(fields.priority),
    max_attempts: t.Optional(fields.max_attempts),
    overlap: t.Optional(fields.overlap),
    catch_up: t.Optional(fields.catch_up),
    enabled: t.Optional(fields.enabled),
    workspace_id: t.Optional(Id),
  },
  { additionalProperties: false },
)
export type CreateScheduleBody = typeof CreateScheduleBody.static

export const PatchScheduleBody = t.Object(
  {
    type: t.Optional(fields.type),
    cron: t.Optional(fields.cron),
    timezone: t.Optional(fields.timezone),
    metadata: t.Optional(fields.metadata),
    priority: t.Optional(fields.priority),
    max_attempts: t.Optional(fields.max_attempts),
    overlap: t.Optional(fields.overlap),
    catch_up: t.Optional(fields.catch_up),
    enabled: t.Optional(fields.enabled),
  },
  { additionalProperties: false, minProperties: 1 },
)
export type PatchScheduleBody = typeof PatchScheduleBody.static

export const Schedule = t.Object({
  id: Int(),
  workspace_id: Int(),
  ...fields,
  created_by: t.Union([Int(), t.Null()]),
  created_at: Timestamp,
  updated_at: Timestamp,
  last_tick_at: Timestamp,
  last_process_id: t.Union([Int(), t.Null()]),
  next_runs: t.Array(Timestamp, { description: 'the next ticks (none while disabled)' }),
})
export type Schedule = typeof Schedule.static

export const ScheduleRun = t.Object({
  tick: Timestamp,
  process_id: t.Union([Int(), t.Null()]),
  /** `overlap`: the last run was still pending or running; `quota`: the workspace was at a quota (which: `quota`). */
  skipped: t.Union([t.Literal('overlap'), t.Literal('quota'), t.Null()]),
  quota: t.Union([t.String(), t.Null()]),
  created_at: Timestamp,
})
