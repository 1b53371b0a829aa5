// The queue routes (README: Queues): GET /queues (per type: pending, running, paused, oldest pending age,
// rate), and pausing or resuming a type in the active workspace (admin or owner). A type paused in every
// workspace is the operators' act, by the CLI (pause-type / resume-type): no tenant's role reaches the others.
import { Elysia, t } from 'elysia'
import { writeAuditRows } from '../auth/audit'
import { activeWorkspace, auditRowFor, authPlugin, requireAdmin } from '../auth/plugin'
import { documented } from '../ops/docs'
import { noBody } from '../processes/routes/body'
import { ErrorSchema, TypePattern } from '../processes/model'
import type { Services } from '../wiring'
import { countPending, listPauses, pauseQueue, queueCounts, resumeQueue } from './queries'

const RateLimit = t.Union([t.Object({ max: t.Integer(), per_ms: t.Integer() }), t.Null()], { description: 'TYPE_DEFAULTS.<type>.rate, over every instance' })

export const QueueSummary = t.Object({
  type: t.String(),
  pending: t.Integer(),
  due: t.Integer({ description: 'pending and due: claimable now, pause and rate aside' }),
  running: t.Integer(),
  paused: t.Boolean(),
  paused_in: t.Union([t.Literal('workspace'), t.Literal('all'), t.Null()], { description: 'this workspace, every workspace (an operator), or not paused' }),
  oldest_pending_age_s: t.Union([t.Number(), t.Null()], { description: 'since the oldest due pending process came due' }),
  finished_last_minute: t.Integer(),
  rate: RateLimit,
})

export const Queues = t.Object({ workspace_id: t.Integer(), queues: t.Array(QueueSummary) })
const PauseState = t.Object({
  type: t.String(),
  workspace_id: t.Integer(),
  paused: t.Boolean(),
  paused_at: t.Union([t.String({ format: 'date-time' }), t.Null()]),
})

const WorkspaceQuery = t.Object({ workspace_id: t.Optional(t.String({ pattern: '^[1-9][0-9]{0,15}$' })) }, { additionalProperties: true })
const TypeParams = t.Object({ type: t.String({ pattern: TypePattern }) })

const errors = {
  401: ['unauthenticated', ErrorSchema],
  403: ['forbidden', ErrorSchema],
  422: ['invalid_request', ErrorSchema],
  500: ['internal', ErrorSchema],
  503: ['unavailable', ErrorSchema],
} as const satisfies Record<number, [string, typeof ErrorSchema]>

export function queues(s: Services) {
  const workspaceOf = (query: { workspace_id?: string }) => (query.workspace_id === undefined ? undefined : Number(query.workspace_id))
  return new Elysia({ prefix: '/queues' })
    .use(authPlugin(s))
    .get(
      '',
      async ({ query, principal, state }) => {
        const workspaceId = activeWorkspace(principal, state, workspaceOf(query))
        const [counts, pauses] = await Promise.all([queueCounts(s.sql, workspaceId), listPauses(s.sql, workspaceId)])
        const rate = s.queue.rate ?? {}
        const types = new Set([...counts.map((c) => c.type), ...pauses.map((p) => p.type)])
        const queues = [...types].sort().map((type) => {
          const c = counts.find((x) => x.type === type) ?? { pending: 0, due: 0, running: 0, oldest_pending_age_s: null, finished_last_minute: 0 }
          const own = pauses.find((p) => p.type === type && p.workspace_id === workspaceId)
          const all = pauses.find((p) => p.type === type && p.workspace_id === null)
          return {
            type,
            pending: c.pending,
            due: c.due,
            running: c.running,
            paused: Boolean(own || all),
            paused_in: all ? ('all' as const) : own ? ('workspace' as const) : null,
            oldest_pending_age_s: c.oldest_pending_age_s,
            finished_last_minute: c.finished_last_minute,
            rate: rate[type] ?? null,
          }
        })
        return { workspace_id: workspaceId, queues }
      },
      {
        query: WorkspaceQuery,
        detail: {
          summary: 'Per type in the active workspace: pending, running, paused, oldest pending age, rate limit (extension)',
          tags: ['queues'],
          responses: documented({ 200: ['OK', Queues], ...errors }),
        },
      },
    )
    .post(
      '/:type/pause',
      async ({ params: { type }, query, principal, state, request }) => {
        const workspaceId = activeWorkspace(principal, state, workspaceOf(query))
        requireAdmin(principal, workspaceId)
        const pause = await s.sql.begin(async (tx) => {
          const p = await pauseQueue(tx, type, workspaceId, principal.userId)
          await writeAuditRows(tx, [auditRowFor(request, state, 200)])
          return p
        })
        state.audited = true
        return { type, workspace_id: workspaceId, paused: true, paused_at: pause.paused_at }
      },
      {
        parse: noBody,
        params: TypeParams,
        query: WorkspaceQuery,
        detail: {
          summary: 'Pause a type in the active workspace: claims on every instance stop handing it out at once; running ones finish (extension; admin)',
          tags: ['queues'],
          responses: documented({ 200: ['OK', PauseState], ...errors }),
        },
      },
    )
    .post(
      '/:type/resume',
      async ({ params: { type }, query, principal, state, request }) => {
        const workspaceId = activeWorkspace(principal, state, workspaceOf(query))
        requireAdmin(principal, workspaceId)
        await s.sql.begin(async (tx) => {
          await resumeQueue(tx, type, workspaceId)
          await writeAuditRows(tx, [auditRowFor(request, state, 200)])
        })
        state.audited = true
        // Claims waiting on any instance look again (unless the type is still paused everywhere).
        s.hub.announceWork(type, Math.max(1, await countPending(s.sql, type, workspaceId)))
        return { type, workspace_id: workspaceId, paused: false, paused_at: null }
      },
      {
        parse: noBody,
        params: TypeParams,
        query: WorkspaceQuery,
        detail: {
          summary: 'Resume a type in the active workspace; waiting claims on every instance are woken (extension; admin)',
          tags: ['queues'],
          responses: documented({ 200: ['OK', PauseState], ...errors }),
        },
      },
    )
}
