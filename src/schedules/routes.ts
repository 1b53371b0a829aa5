// The schedule routes (README: Schedules): per workspace, create, list, read, change, delete, and a
// schedule's runs. Changes need a writer's role and are audited with their own transaction.
import { Elysia, t } from 'elysia'
import { activeWorkspace, auditRowFor, authPlugin, requireWriter } from '../auth/plugin'
import { writeAuditRows } from '../auth/audit'
import type { Sql } from '../db/client'
import { invalidRequest, notFound } from '../errors'
import { documented } from '../ops/docs'
import { JSON_BODY } from '../processes/routes/body'
import { checkMetadataBytes, ErrorSchema, IdParams, MAX_METADATA_DEPTH, MAX_METADATA_VALUES, unstorableJson } from '../processes/model'
import type { RequestState } from '../auth/request-state'
import type { Services } from '../wiring'
import type { ScheduleLoop } from './loop'
import { CreateScheduleBody, PatchScheduleBody, Schedule, ScheduleRun } from './model'
import {
  databaseNow,
  deleteSchedule,
  getSchedule,
  insertSchedule,
  listRuns,
  listSchedules,
  lockSchedule,
  type ScheduleChanges,
  updateSchedule,
} from './queries'
import { nextTicks, scheduleProblem } from './ticks'
import { NEXT_RUNS_LIST, toSchedule } from './view'

/** A schedule's cron, time zone and metadata, checked beyond what the schema says: each problem a 422 naming its field. */
function check(s: Services, c: { cron: string; timezone: string; metadata?: unknown }) {
  const problem = scheduleProblem(c.cron, c.timezone, s.config.SCHEDULE_MIN_INTERVAL_MS)
  if (problem) throw invalidRequest(`Invalid body ${problem.path}: ${problem.message}`, [problem])
  checkMetadataBytes(c.metadata, '', s.config.METADATA_MAX_BYTES)
  const unstorable = c.metadata === undefined ? null : unstorableJson(c.metadata, MAX_METADATA_DEPTH, MAX_METADATA_VALUES)
  if (unstorable) throw invalidRequest(`Invalid body /metadata: ${unstorable}`, [{ path: '/metadata', message: unstorable }])
}

const errors = {
  401: ['unauthenticated', ErrorSchema],
  403: ['forbidden', ErrorSchema],
  404: ['not_found', ErrorSchema],
  422: ['invalid_request', ErrorSchema],
  500: ['internal', ErrorSchema],
  503: ['unavailable', ErrorSchema],
} as const satisfies Record<number, [string, typeof ErrorSchema]>
const bodyErrors = { 400: ['bad_request', ErrorSchema], 413: ['payload_too_large', ErrorSchema] } as const satisfies Record<
  number,
  [string, typeof ErrorSchema]
>

const ListQuery = t.Object(
  {
    workspace_id: t.Optional(t.String({ pattern: '^[1-9][0-9]{0,15}$' })),
    limit: t.Optional(t.String({ pattern: '^([1-9][0-9]?|1[0-9][0-9]|200)$', description: '1–200, default 50' })),
    before: t.Optional(t.String({ pattern: '^[1-9][0-9]{0,15}$' })),
  },
  { additionalProperties: true },
)
const RunsQuery = t.Object(
  {
    limit: t.Optional(t.String({ pattern: '^([1-9][0-9]?|[1-9][0-9]{2}|1000)$', description: '1–1000, default 100' })),
    before: t.Optional(t.String({ format: 'date-time', description: 'a tick: the runs before it (the next page)' })),
  },
  { additionalProperties: true },
)

export function schedules(s: Services, loop?: Pick<ScheduleLoop, 'wake'>) {
  /** Runs a change with its audit row in one transaction. */
  const audited = async <T>(request: Request, state: RequestState, status: number, work: (tx: Sql) => Promise<T>): Promise<T> => {
    const result = await s.sql.begin(async (tx) => {
      const value = await work(tx)
      await writeAuditRows(tx, [auditRowFor(request, state, status)])
      return value
    })
    state.audited = true
    loop?.wake()
    return result
  }
  /** A schedule the caller can see (404 otherwise, as for processes), and may change (403 for a viewer). */
  const visible = async (sql: Sql, id: number, principal: { workspaceIds: number[] }, lock: boolean) => {
    const row = lock ? await lockSchedule(sql, id, principal.workspaceIds) : await getSchedule(sql, id, principal.workspaceIds)
    if (!row) throw notFound('Schedule not found')
    return row
  }

  return new Elysia({ prefix: '/schedules' })
    .use(authPlugin(s))
    .get(
      '',
      async ({ query, principal, state }) => {
        const workspaceId = activeWorkspace(principal, state, query.workspace_id === undefined ? undefined : Number(query.workspace_id))
        const rows = await listSchedules(
          s.sql,
          workspaceId,
          query.limit === undefined ? 50 : Number(query.limit),
          query.before ? Number(query.before) : undefined,
        )
        return rows.map((row) => toSchedule(row, NEXT_RUNS_LIST))
      },
      {
        query: ListQuery,
        detail: {
          summary: "The active workspace's schedules, newest first, each with its next runs (extension)",
          tags: ['schedules'],
          responses: documented({ 200: ['OK', t.Array(Schedule)], ...errors }),
        },
      },
    )
    .post(
      '',
      async ({ body, principal, state, request, set }) => {
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireWriter(principal, workspaceId)
        const timezone = body.timezone ?? 'UTC'
        check(s, { cron: body.cron, timezone, metadata: body.metadata })
        const row = await audited(request, state, 201, async (tx) => {
          const now = await databaseNow(tx)
          const enabled = body.enabled ?? true
          const [next] = nextTicks(body.cron, timezone, now, 1)
          return insertSchedule(
            tx,
            {
              workspace_id: workspaceId,
              type: body.type,
              cron: body.cron,
              timezone,
              metadata: body.metadata ?? {},
              priority: body.priority ?? 0,
              max_attempts: body.max_attempts ?? null,
              overlap: body.overlap ?? 'allow',
              catch_up: body.catch_up ?? 'latest',
              enabled,
              created_by: principal.userId,
            },
            now,
            next ?? null,
          )
        })
        set.status = 201
        set.headers.location = `/schedules/${row.id}`
        return toSchedule(row)
      },
      {
        parse: JSON_BODY,
        body: CreateScheduleBody,
        detail: {
          summary: 'Create a schedule: a process of `type` at every tick of `cron` in `timezone` (extension)',
          tags: ['schedules'],
          responses: documented({ 201: ['Created', Schedule], ...errors, ...bodyErrors }),
        },
      },
    )
    .get(
      '/:id',
      async ({ params: { id }, principal, state }) => {
        const row = await visible(s.sql, id, principal, false)
        state.workspaceId = row.workspace_id
        return toSchedule(row)
      },
      {
        params: IdParams,
        detail: { summary: 'One schedule, with its next runs (extension)', tags: ['schedules'], responses: documented({ 200: ['OK', Schedule], ...errors }) },
      },
    )
    .patch(
      '/:id',
      async ({ params: { id }, body, principal, state, request }) => {
        const row = await audited(request, state, 200, async (tx) => {
          const current = await visible(tx, id, principal, true)
          state.workspaceId = current.workspace_id
          requireWriter(principal, current.workspace_id)
          const cron = body.cron ?? current.cron
          const timezone = body.timezone ?? current.timezone
          check(s, { cron, timezone, metadata: body.metadata })
          const changes: ScheduleChanges = { ...body }
          // A new calendar, or a schedule enabled again, starts from now: nothing before is due under it.
          const recalendar = body.cron !== undefined || body.timezone !== undefined || (body.enabled === true && !current.enabled)
          if (recalendar) {
            const now = await databaseNow(tx)
            changes.last_tick_at = new Date(now).toISOString()
            const [next] = nextTicks(cron, timezone, now, 1)
            changes.next_tick_at = next === undefined ? null : new Date(next).toISOString()
          }
          return updateSchedule(tx, id, changes)
        })
        return toSchedule(row)
      },
      {
        parse: JSON_BODY,
        params: IdParams,
        body: PatchScheduleBody,
        detail: {
          summary: 'Change a schedule; a new cron, time zone or re-enabling starts its ticks from now (extension)',
          tags: ['schedules'],
          responses: documented({ 200: ['OK', Schedule], ...errors, ...bodyErrors }),
        },
      },
    )
    .delete(
      '/:id',
      async ({ params: { id }, principal, state, request, set }) => {
        await audited(request, state, 204, async (tx) => {
          const current = await visible(tx, id, principal, true)
          state.workspaceId = current.workspace_id
          requireWriter(principal, current.workspace_id)
          await deleteSchedule(tx, id, principal.workspaceIds)
        })
        set.status = 204
        return null
      },
      {
        params: IdParams,
        detail: {
          summary: 'Delete a schedule (its processes stay) (extension)',
          tags: ['schedules'],
          responses: documented({ 204: ['Deleted', null], ...errors }),
        },
      },
    )
    .get(
      '/:id/runs',
      async ({ params: { id }, query, principal, state }) => {
        const row = await visible(s.sql, id, principal, false)
        state.workspaceId = row.workspace_id
        return listRuns(s.sql, id, query.limit === undefined ? 100 : Number(query.limit), query.before)
      },
      {
        params: IdParams,
        query: RunsQuery,
        detail: {
          summary: "A schedule's ticks handled, newest first: each tick's process, or why it has none (extension)",
          tags: ['schedules'],
          responses: documented({ 200: ['OK', t.Array(ScheduleRun)], ...errors }),
        },
      },
    )
}
