// SQL for people, workspaces and credentials: the admin CLI and the auth look-ups.
import type { Sql } from '../db/client'
import { hashToken, newToken } from './tokens'

export interface Membership {
  workspace_id: number
  role: string
}

export interface TokenRow {
  token_id: number
  user_id: number
  expires_at: Date | null
  revoked_at: Date | null
  memberships: Membership[]
}

export async function findApiToken(sql: Sql, tokenHash: string): Promise<TokenRow | null> {
  const [row] = await sql<TokenRow[]>`
    select t.id as token_id, t.user_id, t.expires_at, t.revoked_at,
           coalesce(
             (select json_agg(json_build_object('workspace_id', m.workspace_id, 'role', m.role)
                              order by m.created_at, m.workspace_id)
                from memberships m where m.user_id = t.user_id),
             '[]') as memberships
      from api_tokens t
     where t.token_hash = ${tokenHash}`
  return row ?? null
}

export async function findWorkerToken(sql: Sql, tokenHash: string) {
  const [row] = await sql<{ id: number; expires_at: Date | null; revoked_at: Date | null }[]>`
    select id, expires_at, revoked_at from worker_tokens where token_hash = ${tokenHash}`
  return row ?? null
}

export async function touchTokens(sql: Sql, apiTokenIds: number[], workerTokenIds: number[]) {
  if (apiTokenIds.length > 0) await sql`update api_tokens set last_used_at = now() where id = any(${apiTokenIds}::bigint[])`
  if (workerTokenIds.length > 0) await sql`update worker_tokens set last_used_at = now() where id = any(${workerTokenIds}::bigint[])`
}

export async function listWorkspacesOf(sql: Sql, userId: number) {
  return sql<{ id: number; name: string; role: string }[]>`
    select w.id, w.name, m.role from memberships m join workspaces w on w.id = m.workspace_id
     where m.user_id = ${userId} order by m.created_at, w.id`
}

export async function findUser(sql: Sql, id: number) {
  const [row] = await sql<{ id: number; email: string }[]>`select id, email from users where id = ${id}`
  return row ?? null
}

export async function createWorkspace(sql: Sql, name: string) {
  const [row] = await sql<{ id: number; name: string }[]>`insert into workspaces (name) values (${name}) returning id, name`
  return row!
}

export async function createUser(sql: Sql, email: string, workspaceId: number, role: string) {
  return sql.begin(async (tx) => {
    const [user] = await tx<{ id: number; email: string }[]>`insert into users (email) values (${email}) returning id, email`
    await tx`insert into memberships (user_id, workspace_id, role) values (${user!.id}, ${workspaceId}, ${role})`
    return user!
  })
}

export async function addMember(sql: Sql, userId: number, workspaceId: number, role: string) {
  const [row] = await sql<{ user_id: number; workspace_id: number; role: string }[]>`
    insert into memberships (user_id, workspace_id, role) values (${userId}, ${workspaceId}, ${role})
    on conflict (user_id, workspace_id) do update set role = excluded.role
    returning user_id, workspace_id, role`
  return row!
}

export async function createApiToken(sql: Sql, userId: number, name: string | null, ttlDays: number | null) {
  const token = newToken('api')
  const [row] = await sql<{ id: number }[]>`
    insert into api_tokens (user_id, token_hash, name, expires_at)
    values (${userId}, ${hashToken(token)}, ${name},
            ${ttlDays === null ? null : new Date(Date.now() + ttlDays * 86_400_000)})
    returning id`
  return { id: row!.id, token }
}

export async function createWorkerToken(sql: Sql, name: string | null) {
  const token = newToken('worker')
  const [row] = await sql<{ id: number }[]>`
    insert into worker_tokens (token_hash, name) values (${hashToken(token)}, ${name}) returning id`
  return { id: row!.id, token }
}

/** Revokes an API token, or a worker token when no API token has that id and `kind` allows it. */
export async function revokeToken(sql: Sql, id: number, kind: 'api' | 'worker') {
  const rows =
    kind === 'api'
      ? await sql`update api_tokens set revoked_at = coalesce(revoked_at, now()) where id = ${id} returning id`
      : await sql`update worker_tokens set revoked_at = coalesce(revoked_at, now()) where id = ${id} returning id`
  return rows.length > 0
}
