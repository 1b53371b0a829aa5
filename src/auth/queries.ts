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

/** A browser session's secret → the same shape as an API token's row, plus the session's id. */
export async function findSession(sql: Sql, secretHash: string): Promise<(TokenRow & { session_id: number }) | null> {
  const [row] = await sql<(TokenRow & { session_id: number })[]>`
    select s.id as session_id, s.api_token_id as token_id, s.user_id,
           least(s.expires_at, t.expires_at) as expires_at, coalesce(s.revoked_at, t.revoked_at) as revoked_at,
           coalesce(
             (select json_agg(json_build_object('workspace_id', m.workspace_id, 'role', m.role)
                              order by m.created_at, m.workspace_id)
                from memberships m where m.user_id = s.user_id),
             '[]') as memberships
      from sessions s join api_tokens t on t.id = s.api_token_id
     where s.secret_hash = ${secretHash}`
  return row ?? null
}

/** Sessions ended (expired, or revoked: which ends them too) longer ago than this are deleted. */
const DEAD_SESSION_KEPT = '1 day'
/** Dead sessions each sign-in deletes: sessions are only made by sign-ins, so this keeps up with any rate. */
const DEAD_SESSIONS_PER_SIGN_IN = 100

/**
 * A new session; beyond `maxOpen` open sessions of the API token, its oldest are revoked; and up to a hundred
 * sessions that ended over a day ago (any token's) are deleted (sessions_expires_idx), so the table holds the
 * open ones and a day's worth, however many sign-ins there are.
 */
export async function createSession(sql: Sql, userId: number, apiTokenId: number, expiresAt: Date, maxOpen = Number.MAX_SAFE_INTEGER) {
  const secret = newToken('session')
  const row = await sql.begin(async (tx) => {
    const [made] = await tx<{ id: number; expires_at: Date }[]>`
      insert into sessions (user_id, api_token_id, secret_hash, expires_at)
      values (${userId}, ${apiTokenId}, ${hashToken(secret)}, ${expiresAt})
      returning id, expires_at`
    await tx`
      update sessions set revoked_at = now(), expires_at = least(expires_at, now())
       where id in (select id from sessions
                     where api_token_id = ${apiTokenId} and revoked_at is null and expires_at > now()
                     order by id desc offset ${Math.min(maxOpen, 2 ** 31 - 1)})`
    await tx`
      delete from sessions where id in (
        select id from sessions where expires_at < now() - ${DEAD_SESSION_KEPT}::interval limit ${DEAD_SESSIONS_PER_SIGN_IN})`
    return made!
  })
  return { id: row.id, secret, expiresAt: new Date(row.expires_at) }
}

/** Revoked, and so ended: its expiry moves to now (what the clean-up in createSession goes by). */
export async function revokeSession(sql: Sql, id: number) {
  await sql`update sessions set revoked_at = coalesce(revoked_at, now()), expires_at = least(expires_at, now()) where id = ${id}`
}

/** A user's open sessions (neither revoked nor expired), newest first: for `cli list-sessions`. */
export async function listSessions(sql: Sql, userId: number) {
  // int8 as numbers and timestamps as ISO strings already (src/db/client.ts parsers).
  return [
    ...(await sql<{ id: number; api_token_id: number; created_at: string; expires_at: string }[]>`
      select id, api_token_id, created_at, expires_at from sessions
       where user_id = ${userId} and revoked_at is null and expires_at > now()
       order by id desc`),
  ]
}

/** Revokes one session (`id`) or all of a user's open ones (`userId`); returns the ids it revoked. */
export async function revokeSessions(sql: Sql, o: { id?: number; userId?: number }): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    update sessions set revoked_at = now()
     where revoked_at is null and expires_at > now()
       and ${o.id !== undefined ? sql`id = ${o.id}` : sql`user_id = ${o.userId!}`}
    returning id`
  return rows.map((r) => r.id).sort((a, b) => a - b)
}

/** Of these credentials, the ones no longer valid (revoked or expired): their sockets and streams are closed. */
export async function invalidCredentials(sql: Sql, kind: 'api' | 'session' | 'worker', ids: number[]): Promise<number[]> {
  if (ids.length === 0) return []
  const rows =
    kind === 'api'
      ? await sql<{ id: number }[]>`
          select t.id from unnest(${ids}::bigint[]) as x(id) left join api_tokens t on t.id = x.id
           where t.id is null or t.revoked_at is not null or t.expires_at <= now()`
      : kind === 'worker'
        ? await sql<{ id: number }[]>`
            select x.id from unnest(${ids}::bigint[]) as x(id) left join worker_tokens t on t.id = x.id
             where t.id is null or t.revoked_at is not null or t.expires_at <= now()`
        : await sql<{ id: number }[]>`
            select x.id from unnest(${ids}::bigint[]) as x(id)
              left join sessions s on s.id = x.id left join api_tokens t on t.id = s.api_token_id
             where s.id is null or s.revoked_at is not null or s.expires_at <= now()
                or t.revoked_at is not null or t.expires_at <= now()`
  return rows.map((r) => Number(r.id))
}

export interface WorkerTokenRow {
  id: number
  expires_at: Date | null
  revoked_at: Date | null
  workspace_ids: number[] | null
  types: string[] | null
}

export async function findWorkerToken(sql: Sql, tokenHash: string) {
  const [row] = await sql<WorkerTokenRow[]>`
    select id, expires_at, revoked_at, workspace_ids, types from worker_tokens where token_hash = ${tokenHash}`
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

/**
 * Takes a user out of a workspace. API tokens are the user's, not a workspace's: they stop reaching this one
 * at once (their next look-up; a cached one within AUTH_CACHE_MS), and are revoked when `revokeTokens` is
 * asked or no membership is left (a user in no workspace has no use for one). Null: not a member.
 */
export async function removeMember(sql: Sql, userId: number, workspaceId: number, o: { revokeTokens?: boolean } = {}) {
  return sql.begin(async (tx) => {
    const [gone] = await tx<{ role: string }[]>`
      delete from memberships where user_id = ${userId} and workspace_id = ${workspaceId} returning role`
    if (!gone) return null
    const [{ left } = { left: 0 }] = await tx<{ left: number }[]>`select count(*)::int as left from memberships where user_id = ${userId}`
    const revoke = o.revokeTokens === true || left === 0
    const revoked = revoke
      ? await tx<{ id: number }[]>`update api_tokens set revoked_at = now() where user_id = ${userId} and revoked_at is null returning id`
      : []
    return {
      user_id: userId,
      workspace_id: workspaceId,
      removed: true as const,
      role: gone.role,
      memberships_left: left,
      tokens_revoked: revoked.map((r) => r.id).sort((a, b) => a - b),
    }
  })
}

/** Of these (user, workspace) pairs, the ones that are no longer a membership: their open streams are closed. */
export async function missingMemberships(sql: Sql, pairs: { userId: number; workspaceId: number }[]) {
  if (pairs.length === 0) return []
  return [
    ...(await sql<{ user_id: number; workspace_id: number }[]>`
      select x.user_id, x.workspace_id
        from unnest(${pairs.map((p) => p.userId)}::bigint[], ${pairs.map((p) => p.workspaceId)}::bigint[]) as x(user_id, workspace_id)
       where not exists (select 1 from memberships m where m.user_id = x.user_id and m.workspace_id = x.workspace_id)`),
  ]
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

/** A worker token, for any workspace and type unless scoped (`workspaceIds`, `types`: null or empty = any). */
export async function createWorkerToken(sql: Sql, name: string | null, scope: { workspaceIds?: number[]; types?: string[] } = {}) {
  const token = newToken('worker')
  const workspaceIds = scope.workspaceIds?.length ? scope.workspaceIds : null
  const types = scope.types?.length ? scope.types : null
  const [row] = await sql<{ id: number }[]>`
    insert into worker_tokens (token_hash, name, workspace_ids, types)
    values (${hashToken(token)}, ${name}, ${workspaceIds}::bigint[], ${types}::text[]) returning id`
  const out: { id: number; token: string; workspace_ids?: number[]; types?: string[] } = { id: row!.id, token }
  if (workspaceIds) out.workspace_ids = workspaceIds
  if (types) out.types = types
  return out
}

/** Revokes an API token, or a worker token when no API token has that id and `kind` allows it. */
export async function revokeToken(sql: Sql, id: number, kind: 'api' | 'worker') {
  const rows =
    kind === 'api'
      ? await sql`update api_tokens set revoked_at = coalesce(revoked_at, now()) where id = ${id} returning id`
      : await sql`update worker_tokens set revoked_at = coalesce(revoked_at, now()) where id = ${id} returning id`
  return rows.length > 0
}
