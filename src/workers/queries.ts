// The workers feature's SQL: the connected-worker rows each instance writes (worker_sessions,
// sql/006_workers.sql) and what the workers page reads of the leases and the queue.
import type { Sql } from '../db/client'

/** Rows not refreshed for this long belong to an instance that is gone. */
export const STALE_MS = 30_000

/** Every worker socket some live instance has written down, by worker. */
/**
 * Connected workers whose token's scope includes the workspace (an unscoped token's: every workspace): a
 * worker scoped to other tenants is none of this one's business, and one whose token is unknown
 * is not shown at all.
 */
export function listSessions(sql: Sql, workspaceId: number) {
  return sql<{ worker_id: string; instance_id: string; types: string[] | null; connected_at: Date; last_frame_at: Date }[]>`
    select s.worker_id, s.instance_id, s.types, s.connected_at, s.last_frame_at
      from worker_sessions s join worker_tokens t on t.id = s.token_id
     where s.refreshed_at >= now() - ${STALE_MS} * interval '1 millisecond'
       and (t.workspace_ids is null or ${workspaceId}::bigint = any(t.workspace_ids))
     order by s.worker_id, s.connected_at`
}

/** The running processes of a workspace with their lease holders. */
export function listLeasesIn(sql: Sql, workspaceId: number) {
  return sql<
    {
      id: number
      type: string
      progress: number
      message: string | null
      worker_id: string
      attempts: number
      started_at: Date | null
      heartbeat_at: Date | null
    }[]
  >`
    select id::float8 as id, type, progress, message, worker_id, attempts, started_at, heartbeat_at
      from processes
     where workspace_id = ${workspaceId} and status = 'running' and worker_id is not null
     order by id`
}

/** Pending processes of a workspace, counted by type. */
export function countPendingByType(sql: Sql, workspaceId: number) {
  return sql<{ type: string; count: number }[]>`
    select type, count(*)::int as count from processes
     where workspace_id = ${workspaceId} and status = 'pending'
     group by type order by type`
}

export interface SessionRow {
  conn_id: string
  worker_id: string
  token_id: number
  types: string[] | null
  connected_at: string
  last_frame_at: string
}

/** An instance's sockets as they are now: its other rows and every stale row go, these are written. */
export async function writeSessions(sql: Sql, instanceId: string, rows: SessionRow[]) {
  await sql.begin(async (tx) => {
    await tx`
      delete from worker_sessions
       where (instance_id = ${instanceId} and conn_id <> all(${rows.map((r) => r.conn_id)}::text[]))
          or refreshed_at < now() - ${STALE_MS} * interval '1 millisecond'`
    if (rows.length === 0) return
    await tx`
      insert into worker_sessions (conn_id, worker_id, instance_id, token_id, types, connected_at, last_frame_at, refreshed_at)
      select r.conn_id, r.worker_id, ${instanceId}, r.token_id,
             case when r.types is null then null else array(select jsonb_array_elements_text(r.types)) end,
             r.connected_at, r.last_frame_at, now()
        from jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb)
          as r(conn_id text, worker_id text, token_id bigint, types jsonb, connected_at timestamptz, last_frame_at timestamptz)
      on conflict (conn_id) do update
         set worker_id = excluded.worker_id, types = excluded.types, last_frame_at = excluded.last_frame_at, refreshed_at = now()`
  })
}

/** An instance's rows, at its shutdown. */
export async function deleteSessionsOf(sql: Sql, instanceId: string) {
  await sql`delete from worker_sessions where instance_id = ${instanceId}`
}
