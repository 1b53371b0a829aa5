// Public (end-user) tokens, `ppt_…` (README: Public tokens): what a customer's backend mints for the browser
// of one of its end users, so the browser can follow some processes without the customer's API token. Read
// only, short-lived (TTL ≤ 24 h, default 15 min), scoped to process ids and/or tags of one workspace. Accepted
// as `Authorization: Bearer` anywhere it may read, and as `?access_token=` on the stream routes only (an
// EventSource cannot send headers): the only token ever taken from a URL, and the request log never shows a
// query string. Look-ups are cached for AUTH_CACHE_MS; open streams are checked every half of it and closed
// once the token is revoked or expired (or the API token that minted it is, or the minter left the workspace).
import type { Sql } from '../db/client'
import { forbidden, unauthenticated } from '../errors'
import type { Logger } from '../ops/log'
import type { Principal, PublicScope } from './authenticator'
import { hashToken } from './tokens'
import { randomBytes } from 'node:crypto'

export const PUBLIC_TOKEN_PREFIX = 'ppt_'
export const PUBLIC_TTL_DEFAULT_S = 900
export const PUBLIC_TTL_MAX_S = 86_400

export const covers = (scope: PublicScope, p: { id: number; tags: string[] }) =>
  (scope.processIds?.includes(p.id) ?? false) || (scope.tags?.some((t) => p.tags.includes(t)) ?? false)

/** The routes a public token may call (GET or HEAD): the reads and streams of the processes it covers. */
const READ_ROUTES = [/^\/processes\/?$/, /^\/processes\/stream\/?$/, /^\/processes\/\d+\/?$/, /^\/processes\/\d+\/(events|output|stream)\/?$/]
const STREAM_ROUTES = [/^\/processes\/stream\/?$/, /^\/processes\/\d+\/stream\/?$/]

interface Row {
  id: number
  workspace_id: number
  user_id: number
  api_token_id: number
  process_ids: number[] | null
  tags: string[] | null
  expires_at: string
}

/** A valid public token's row (not revoked or expired, nor its API token; its minter still a member). */
async function findPublicToken(sql: Sql, hash: string): Promise<Row | null> {
  const [row] = await sql<Row[]>`
    select p.id, p.workspace_id, p.user_id, p.api_token_id, p.process_ids, p.tags, p.expires_at
      from public_tokens p
      join api_tokens a on a.id = p.api_token_id
      join memberships m on m.user_id = p.user_id and m.workspace_id = p.workspace_id
     where p.token_hash = ${hash} and p.revoked_at is null and p.expires_at > now()
       and a.revoked_at is null and (a.expires_at is null or a.expires_at > now())`
  return row ?? null
}

/** Of these public tokens, the ones still valid (findPublicToken's rule). */
async function validPublicTokens(sql: Sql, ids: number[]): Promise<Set<number>> {
  const rows = await sql<{ id: number }[]>`
    select p.id from public_tokens p
      join api_tokens a on a.id = p.api_token_id
      join memberships m on m.user_id = p.user_id and m.workspace_id = p.workspace_id
     where p.id = any(${ids}::bigint[]) and p.revoked_at is null and p.expires_at > now()
       and a.revoked_at is null and (a.expires_at is null or a.expires_at > now())`
  return new Set(rows.map((r) => Number(r.id)))
}

export class PublicTokens {
  private readonly cache = new Map<string, { principal: Principal | null; at: number }>()
  private readonly open = new Map<number, Set<() => void>>()
  private timer: Timer | null = null
  private checking = false
  /** Streams closed because their public token was revoked or expired (tests). */
  closed = 0

  constructor(
    private readonly sql: Sql,
    private readonly log: Logger,
    private readonly cacheMs: number,
  ) {}

  /**
   * The public token a request carries, or null: `Authorization: Bearer ppt_…`, or `?access_token=ppt_…` on a
   * stream route. Any other token in `access_token` is not taken (only this kind is ever read from a URL).
   */
  static tokenOf(request: Request, bearer: string | null): string | null {
    if (bearer?.startsWith(PUBLIC_TOKEN_PREFIX)) return bearer
    if (bearer !== null || !request.url.includes('access_token=')) return null
    const url = new URL(request.url)
    const token = url.searchParams.get('access_token')
    if (!token?.startsWith(PUBLIC_TOKEN_PREFIX) || !STREAM_ROUTES.some((r) => r.test(url.pathname))) return null
    return token
  }

  /** The principal of a public token (read-only, one workspace, with its scope); 401 when not valid, 403 off its routes. */
  async authenticate(token: string, request: Request): Promise<Principal> {
    if (token.length > 512) throw unauthenticated()
    const hash = hashToken(token)
    const now = Date.now()
    let entry = this.cache.get(hash)
    if (!entry || now - entry.at >= this.cacheMs) {
      const row = await findPublicToken(this.sql, hash)
      const principal: Principal | null = row
        ? {
            userId: Number(row.user_id),
            tokenId: Number(row.api_token_id),
            sessionId: null,
            memberships: [{ workspace_id: Number(row.workspace_id), role: 'viewer' }],
            workspaceIds: [Number(row.workspace_id)],
            writableWorkspaceIds: [],
            expiresAt: new Date(row.expires_at).getTime(),
            scope: { tokenId: Number(row.id), processIds: row.process_ids?.map(Number) ?? null, tags: row.tags },
          }
        : null
      entry = { principal, at: now }
      if (principal) {
        if (this.cache.size >= 50_000) this.cache.clear()
        this.cache.set(hash, entry)
      } else this.cache.delete(hash)
    }
    const principal = entry.principal
    if (!principal || (principal.expiresAt !== null && principal.expiresAt <= now)) throw unauthenticated('Unknown, revoked or expired public token')
    const path = new URL(request.url).pathname
    if ((request.method !== 'GET' && request.method !== 'HEAD') || !READ_ROUTES.some((r) => r.test(path)))
      throw forbidden('A public token may only read the processes it covers (GET, events, output, streams)')
    return principal
  }

  /** Mints one; the token is shown once. */
  async mint(o: {
    workspaceId: number
    userId: number
    apiTokenId: number
    processIds: number[] | null
    tags: string[] | null
    ttlS: number
  }): Promise<{ id: number; token: string; expires_at: string }> {
    const token = `${PUBLIC_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`
    // Tokens long expired are cleared as new ones are made: the table holds about a day's worth.
    await this.sql`delete from public_tokens where id in (select id from public_tokens where expires_at < now() - interval '1 day' limit 1000)`
    const [row] = await this.sql<{ id: number; expires_at: string }[]>`
      insert into public_tokens (token_hash, workspace_id, user_id, api_token_id, process_ids, tags, expires_at)
      values (${hashToken(token)}, ${o.workspaceId}, ${o.userId}, ${o.apiTokenId}, ${o.processIds}, ${o.tags},
              now() + ${o.ttlS} * interval '1 second')
      returning id, expires_at`
    return { id: Number(row!.id), token, expires_at: row!.expires_at }
  }

  /** Revokes one of a workspace's public tokens; false when there is none such. */
  async revoke(id: number, workspaceIds: number[]): Promise<boolean> {
    const rows = await this.sql`
      update public_tokens set revoked_at = coalesce(revoked_at, now())
       where id = ${id} and workspace_id = any(${workspaceIds}::bigint[]) returning id`
    return rows.length > 0
  }

  /** Registers an open stream of a public token; returns the function that forgets it. */
  track(tokenId: number, close: () => void): () => void {
    let set = this.open.get(tokenId)
    if (!set) this.open.set(tokenId, (set = new Set()))
    set.add(close)
    this.timer ??= setInterval(() => void this.check(), Math.max(100, Math.floor(this.cacheMs / 2)))
    this.timer.unref?.()
    return () => {
      const current = this.open.get(tokenId)
      if (!current) return
      current.delete(close)
      if (current.size === 0) this.open.delete(tokenId)
    }
  }

  count(tokenId: number): number {
    return this.open.get(tokenId)?.size ?? 0
  }

  /** One pass: closes every open stream whose public token is no longer valid. */
  async check() {
    if (this.checking || this.open.size === 0) return
    this.checking = true
    try {
      const valid = await validPublicTokens(this.sql, [...this.open.keys()])
      for (const [id, closers] of this.open) {
        if (valid.has(id)) continue
        this.open.delete(id)
        for (const close of closers) {
          this.closed++
          close()
        }
      }
    } catch (error) {
      this.log.warn('public token check failed', { error: String(error) })
    } finally {
      this.checking = false
    }
  }

  stop() {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }
}
