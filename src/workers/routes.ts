// GET /workers (extension): the workers page. Connected workers across every instance (worker_sessions), the
// leases they hold in the caller's workspace with each lease's last heartbeat, and the pending types of that
// workspace no connected worker claims.
//
// Tenancy: the connected workers whose token's scope includes this workspace (unscoped tokens: every
// workspace) may claim its work: those are listed, with their id, types and connection times; a worker scoped
// to other workspaces is not. Leases,
// pending counts and lease-holding workers that are not connected come only from the caller's workspace;
// another workspace's processes are never counted or shown.
import { Elysia, t } from 'elysia'
import { activeWorkspace, authPlugin } from '../auth/plugin'
import type { Sql } from '../db/client'
import { documented } from '../ops/docs'
import { ErrorSchema, IdString } from '../processes/model'
import type { Services } from '../wiring'
import { countPendingByType, listLeasesIn, listSessions } from './queries'

const iso = (value: Date | string | null) => (value === null ? null : new Date(value).toISOString())

export async function listWorkers(sql: Sql, workspaceId: number) {
  const [sessions, leases, pending] = await Promise.all([listSessions(sql, workspaceId), listLeasesIn(sql, workspaceId), countPendingByType(sql, workspaceId)])
  type Worker = WorkersPage['workers'][number]
  const workers = new Map<string, Worker>()
  const entry = (id: string): Worker => {
    let w = workers.get(id)
    if (!w)
      workers.set(id, (w = { worker_id: id, connected: false, connections: 0, instances: [], types: [], connected_at: null, last_frame_at: null, leases: [] }))
    return w
  }
  for (const s of sessions) {
    const w = entry(s.worker_id)
    w.connected = true
    w.connections++
    if (!w.instances.includes(s.instance_id)) w.instances.push(s.instance_id)
    // Any socket of it that claims every type makes the worker claim every type.
    w.types = w.types === null || s.types === null ? null : [...new Set([...w.types, ...s.types])].sort()
    const connectedAt = iso(s.connected_at)!
    const lastFrameAt = iso(s.last_frame_at)!
    if (w.connected_at === null || connectedAt < w.connected_at) w.connected_at = connectedAt
    if (w.last_frame_at === null || lastFrameAt > w.last_frame_at) w.last_frame_at = lastFrameAt
  }
  for (const l of leases) {
    entry(l.worker_id).leases.push({
      process_id: l.id,
      type: l.type,
      progress: l.progress,
      message: l.message,
      attempt: l.attempts,
      started_at: iso(l.started_at),
      heartbeat_at: iso(l.heartbeat_at),
    })
  }
  for (const w of workers.values()) if (!w.connected) w.types = null
  const connected = [...workers.values()].filter((w) => w.connected)
  return {
    workspace_id: workspaceId,
    workers: [...workers.values()],
    pending: pending.map((p) => ({ ...p, covered: connected.some((w) => w.types === null || w.types.includes(p.type)) })),
  }
}

const Time = t.Union([t.String({ format: 'date-time' }), t.Null()])
/** GET /workers: the workers page (the dashboard reads it by this type too). */
export type WorkersPage = typeof WorkersResponse.static
export const WorkersResponse = t.Object({
  workspace_id: t.Integer(),
  workers: t.Array(
    t.Object({
      worker_id: t.String(),
      connected: t.Boolean({ description: 'false: not connected anywhere, yet holding leases here' }),
      connections: t.Integer(),
      instances: t.Array(t.String()),
      types: t.Union([t.Array(t.String()), t.Null()], { description: 'what its claims ask for; null: any type' }),
      connected_at: Time,
      last_frame_at: Time,
      leases: t.Array(
        t.Object({
          process_id: t.Integer(),
          type: t.String(),
          progress: t.Integer(),
          message: t.Union([t.String(), t.Null()]),
          attempt: t.Integer(),
          started_at: Time,
          heartbeat_at: Time,
        }),
      ),
    }),
  ),
  pending: t.Array(t.Object({ type: t.String(), count: t.Integer(), covered: t.Boolean({ description: 'some connected worker claims this type' }) })),
})

export function workers(s: Services) {
  return new Elysia({ prefix: '/workers' })
    .use(authPlugin(s))
    .get(
      '',
      ({ query, principal, state }) =>
        listWorkers(s.sql, activeWorkspace(principal, state, query.workspace_id === undefined ? undefined : Number(query.workspace_id))),
      {
        query: t.Object({ workspace_id: t.Optional(IdString()) }, { additionalProperties: true }),
        detail: {
          summary: 'Connected workers across instances, their leases in this workspace, and pending types no worker claims (extension)',
          tags: ['workers'],
          responses: documented({
            200: ['OK', WorkersResponse],
            401: ['unauthenticated', ErrorSchema],
            403: ['forbidden', ErrorSchema],
            422: ['invalid_request', ErrorSchema],
            500: ['internal', ErrorSchema],
            503: ['unavailable', ErrorSchema],
          }),
        },
      },
    )
}
