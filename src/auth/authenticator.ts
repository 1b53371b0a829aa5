// Resolves a bearer token or the ps_session cookie to a principal. Look-ups are cached in memory for
// AUTH_CACHE_MS (≤ 5 s), so revocation and expiry still take effect within that window on every instance.
import type { Sql } from '../db/client'
import { unauthenticated } from '../errors'
import { findApiToken, findSession, findWorkerToken, type Membership } from './queries'
import { hashToken } from './tokens'

/** Roles (README "Roles"): viewer reads and streams; member, admin and owner also create, cancel, retry, review. */
export const ROLES = ['owner', 'admin', 'member', 'viewer'] as const
const WRITER_ROLES: ReadonlySet<string> = new Set(['owner', 'admin', 'member'])

export interface Principal {
  userId: number
  /** The API token, also for a browser session (the token it was opened with). */
  tokenId: number
  /** Set when the credential is a browser session (`pss_…` in the ps_session cookie). */
  sessionId: number | null
  memberships: Membership[]
  workspaceIds: number[]
  /** The workspaces where the caller's role may change processes (not viewer, nor a role we do not know). */
  writableWorkspaceIds: number[]
  expiresAt: number | null
  /** A public (end-user) token's scope (src/auth/public-tokens.ts): read-only, these processes only. */
  scope?: PublicScope
}

/** What a public token covers: a process whose id is listed, or that carries one of the tags. */
export interface PublicScope {
  tokenId: number
  processIds: number[] | null
  tags: string[] | null
}

/** A worker token and its scope: null = any workspace / any type. */
export interface WorkerPrincipal {
  tokenId: number
  workspaceIds: number[] | null
  types: string[] | null
}

export type CredentialSource = 'bearer' | 'cookie'

interface Cached<T> {
  value: T
  fetchedAt: number
}

// Bounds the cache against a flood of distinct valid tokens; entries are cheap, a refill is one query.
const MAX_CACHED = 50_000
/**
 * Unknown and revoked tokens are remembered this long, or AUTH_CACHE_MS if shorter (2,000 random
 * tokens cost 2,000 look-ups). A new token works at once all the same: its secret is random, so no one can
 * have tried it before it existed.
 */
const NEGATIVE_CACHE_MS = 2000
/** Separate from the valid tokens' cache, so a flood of random tokens never evicts a valid one. */
const MAX_NEGATIVE = 10_000
/**
 * Tokens found valid in this long are still looked up for an address past its failed-authentication
 * allowance (they are not guesses): a colleague behind the same NAT keeps working after the cache entry ends.
 */
const RECENTLY_VALID_MS = 10 * 60_000
const MAX_TOKEN_LENGTH = 512

/** The wrong kind of token, said so (both kinds are `Bearer`, and "unknown token" sent people looking for a typo). */
export const WORKER_TOKEN_ON_REST = 'This is a worker token (psw_…): it opens the worker WebSocket (/workers/ws) only; REST routes need an API token (ps_…)'
export const API_TOKEN_ON_WORKERS =
  'This is an API token (ps_…): /workers/ws needs a worker token (psw_…, from `npm run cli -- create-worker-token --workspace ID`)'

export class Authenticator {
  private readonly api = new Map<string, Cached<Principal | null>>()
  private readonly workers = new Map<string, Cached<WorkerPrincipal | null>>()
  /** API token hash → when it was last found valid (see RECENTLY_VALID_MS). */
  private readonly recentlyValid = new Map<string, number>()
  /** Token hash → when it was found unknown or revoked (either kind). */
  private readonly negative = new Map<string, number>()
  /** Look-ups spared by the negative cache (tests, metrics). */
  negativeHits = 0
  readonly usedApiTokens = new Set<number>()
  readonly usedWorkerTokens = new Set<number>()

  constructor(
    private readonly sql: Sql,
    private readonly cacheMs: number,
  ) {}

  /** The token a request carries: the Authorization header first, then the browser's cookie. */
  static tokenOf(request: Request): string | null {
    return Authenticator.credentialOf(request).token
  }

  /** The token and where it came from: a cookie-borne credential is what CSRF checks guard. */
  static credentialOf(request: Request): { token: string | null; via: CredentialSource } {
    const header = request.headers.get('authorization')
    if (header) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
      return { token: match ? match[1]! : null, via: 'bearer' }
    }
    return { token: Authenticator.cookieOf(request), via: 'cookie' }
  }

  static cookieOf(request: Request): string | null {
    const cookie = request.headers.get('cookie')
    if (cookie) {
      for (const part of cookie.split(';')) {
        const eq = part.indexOf('=')
        if (eq > 0 && part.slice(0, eq).trim() === 'ps_session') {
          let value = part.slice(eq + 1).trim()
          // RFC 6265 allows a cookie value in double quotes, which are not part of it.
          if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
          try {
            return decodeURIComponent(value) || null
          } catch {
            return null
          }
        }
      }
    }
    return null
  }

  async authenticate(token: string | null): Promise<Principal> {
    if (!token || token.length > MAX_TOKEN_LENGTH) throw unauthenticated()
    // Told by its prefix (an API token is `ps_…`, never `psw_…`), so no look-up is spent on it.
    if (token.startsWith('psw_')) throw unauthenticated(WORKER_TOKEN_ON_REST)
    const hash = hashToken(token)
    const now = Date.now()
    if (this.knownBad(hash, now)) throw unauthenticated('Unknown or revoked token')
    let entry = this.api.get(hash)
    if (!entry || now - entry.fetchedAt >= this.cacheMs) {
      // A session secret (`pss_`) is looked up as a session; anything else as an API token.
      const row = token.startsWith('pss_') ? await findSession(this.sql, hash) : await findApiToken(this.sql, hash)
      const principal: Principal | null =
        row && !row.revoked_at
          ? {
              userId: Number(row.user_id),
              tokenId: Number(row.token_id),
              sessionId: 'session_id' in row ? Number(row.session_id) : null,
              memberships: row.memberships,
              workspaceIds: row.memberships.map((m) => m.workspace_id),
              writableWorkspaceIds: row.memberships.filter((m) => WRITER_ROLES.has(m.role)).map((m) => m.workspace_id),
              expiresAt: row.expires_at ? new Date(row.expires_at).getTime() : null,
            }
          : null
      entry = { value: principal, fetchedAt: now }
      // Unknown tokens are not cached: a token created a moment ago must work at once.
      if (principal) {
        this.remember(this.api, hash, entry)
        if (this.recentlyValid.size >= MAX_CACHED) this.recentlyValid.clear()
        this.recentlyValid.set(hash, now)
      } else {
        this.api.delete(hash)
        this.rememberBad(hash, now)
      }
    }
    const principal = entry.value
    if (!principal) throw unauthenticated('Unknown or revoked token')
    if (principal.expiresAt !== null && principal.expiresAt <= now) throw unauthenticated('Token expired')
    this.usedApiTokens.add(principal.tokenId)
    return principal
  }

  /**
   * The principal when the token is valid in the cache (no look-up), else null: what an address past its
   * failed-authentication allowance is still served, so a flood from a shared address (a NAT, a proxy not in
   * TRUSTED_PROXIES) does not lock out a colleague whose token is in use.
   */
  cached(token: string | null): Principal | null {
    if (!token || token.length > MAX_TOKEN_LENGTH) return null
    const entry = this.api.get(hashToken(token))
    const now = Date.now()
    const principal = entry && now - entry.fetchedAt < this.cacheMs ? entry.value : null
    if (!principal || (principal.expiresAt !== null && principal.expiresAt <= now)) return null
    this.usedApiTokens.add(principal.tokenId)
    return principal
  }

  /** Whether this API token was found valid within RECENTLY_VALID_MS (so looking it up again is no guess). */
  validRecently(token: string | null): boolean {
    if (!token || token.length > MAX_TOKEN_LENGTH) return false
    const at = this.recentlyValid.get(hashToken(token))
    return at !== undefined && Date.now() - at < RECENTLY_VALID_MS
  }

  /** Returns the worker token's id and scope, or throws 401. */
  async authenticateWorker(token: string | null): Promise<WorkerPrincipal> {
    if (!token || token.length > MAX_TOKEN_LENGTH) throw unauthenticated()
    if (!token.startsWith('psw_') && (token.startsWith('ps_') || token.startsWith('pss_'))) throw unauthenticated(API_TOKEN_ON_WORKERS)
    const hash = hashToken(token)
    const now = Date.now()
    if (this.knownBad(hash, now)) throw unauthenticated('Unknown or revoked worker token')
    let entry = this.workers.get(hash)
    if (!entry || now - entry.fetchedAt >= this.cacheMs) {
      const row = await findWorkerToken(this.sql, hash)
      const valid = row && !row.revoked_at && (!row.expires_at || new Date(row.expires_at).getTime() > now)
      entry = {
        value: valid ? { tokenId: Number(row.id), workspaceIds: row.workspace_ids?.map(Number) ?? null, types: row.types ?? null } : null,
        fetchedAt: now,
      }
      if (valid) this.remember(this.workers, hash, entry)
      else {
        this.workers.delete(hash)
        // Expired or revoked or unknown: none of them comes back.
        this.rememberBad(hash, now)
      }
    }
    if (entry.value === null) throw unauthenticated('Unknown or revoked worker token')
    this.usedWorkerTokens.add(entry.value.tokenId)
    return entry.value
  }

  /** Drops a credential from the cache (its revocation on this instance takes effect at once). */
  forget(token: string) {
    const hash = hashToken(token)
    this.api.delete(hash)
    this.workers.delete(hash)
  }

  private knownBad(hash: string, now: number): boolean {
    const at = this.negative.get(hash)
    if (at === undefined) return false
    if (now - at < Math.min(NEGATIVE_CACHE_MS, this.cacheMs)) {
      this.negativeHits++
      return true
    }
    this.negative.delete(hash)
    return false
  }

  private rememberBad(hash: string, now: number) {
    if (this.negative.size >= MAX_NEGATIVE) this.negative.clear()
    this.negative.set(hash, now)
  }

  private remember<T>(map: Map<string, Cached<T>>, key: string, entry: Cached<T>) {
    if (map.size >= MAX_CACHED) map.clear()
    map.set(key, entry)
  }
}
