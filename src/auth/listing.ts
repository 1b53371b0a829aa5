// SQL for the CLI's list commands: what was created, so lost or stale credentials can be found and revoked.
// Ids, names, scopes and times only: a token's secret is never stored, and its hash is never shown.
import type { Sql } from '../db/client'

// int8 as numbers and timestamps as ISO strings already (src/db/client.ts parsers); arrays through JSON.

export async function listWorkspaces(sql: Sql) {
  return [
    ...(await sql<{ id: number; name: string; created_at: string; members: number }[]>`
      select w.id, w.name, w.created_at, (select count(*)::int from memberships m where m.workspace_id = w.id) as members
        from workspaces w
       order by w.id`),
  ]
}

/** Every user, or the members of one workspace; each with its memberships. */
export async function listUsers(sql: Sql, workspaceId: number | null) {
  return [
    ...(await sql<{ id: number; email: string; created_at: string; workspaces: { id: number; role: string }[] }[]>`
      select u.id, u.email, u.created_at,
             coalesce((select json_agg(json_build_object('id', m.workspace_id, 'role', m.role) order by m.workspace_id)
                         from memberships m where m.user_id = u.id), '[]') as workspaces
        from users u
       where ${workspaceId === null ? sql`true` : sql`exists (select 1 from memberships m where m.user_id = u.id and m.workspace_id = ${workspaceId})`}
       order by u.id`),
  ]
}

/** API tokens, every user's or one's, revoked and expired ones included (they say so). */
export async function listApiTokens(sql: Sql, userId: number | null) {
  return [
    ...(await sql<ApiTokenListing[]>`
      select t.id, t.user_id, u.email, t.name, t.created_at, t.expires_at, t.revoked_at, t.last_used_at
        from api_tokens t join users u on u.id = t.user_id
       where ${userId === null ? sql`true` : sql`t.user_id = ${userId}`}
       order by t.id`),
  ]
}

export interface ApiTokenListing {
  id: number
  user_id: number
  email: string
  name: string | null
  created_at: string
  expires_at: string | null
  revoked_at: string | null
  last_used_at: string | null
}

/** Worker tokens with their scope (`workspace_ids`, `types`: null = any). */
export async function listWorkerTokens(sql: Sql) {
  return [
    ...(await sql<WorkerTokenListing[]>`
      select id, name, to_json(workspace_ids) as workspace_ids, to_json(types) as types,
             created_at, expires_at, revoked_at, last_used_at
        from worker_tokens
       order by id`),
  ]
}

export interface WorkerTokenListing {
  id: number
  name: string | null
  workspace_ids: number[] | null
  types: string[] | null
  created_at: string
  expires_at: string | null
  revoked_at: string | null
  last_used_at: string | null
}
