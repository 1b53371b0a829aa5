// auth:api + auth_session + audit for a feature: resolves the caller before validation (so an anonymous
// request gets 401, not 422) and marks the request as audited-on-exit.
import { Elysia } from 'elysia'
import type { AuditRow } from './audit'
import { Authenticator, type Principal } from './authenticator'
import { rateLimited } from './limits'
import { forbidden, HttpError } from '../errors'
import { PublicTokens } from './public-tokens'
import { requestState, type RequestState } from './request-state'
import type { Services } from '../wiring'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

export function authPlugin(s: Services) {
  const trusted = trustedOrigins(s.config.CORS_ORIGINS)
  const authenticate = async (request: Request) => {
    const state = requestState(request)
    state.authenticated = true
    if (!state.principal) {
      const { token, via } = Authenticator.credentialOf(request)
      const publicToken = PublicTokens.tokenOf(request, via === 'bearer' ? token : null)
      const principal = publicToken ? await s.publicTokens.authenticate(publicToken, request) : await authenticateFrom(s, state, token)
      state.principal = principal
      // A browser sends its cookie with a request another site started: a change made with the cookie must
      // come from our own pages (README "Browser sessions and CSRF").
      if (via === 'cookie' && !SAFE_METHODS.has(request.method)) checkSameOrigin(request, trusted, true)
      // Per API token: its browser sessions share its bucket, so minting sessions buys no allowance; a public
      // token has its own.
      const wait = s.limits.token.take(principal.scope ? `p${principal.scope.tokenId}` : `t${principal.tokenId}`)
      if (wait > 0) throw rateLimited(wait, 'token')
      state.limitWorkspace = (id) => {
        const wait = s.limits.workspace.take(String(id))
        if (wait > 0) throw rateLimited(wait, 'workspace')
      }
    }
    return { principal: state.principal, state }
  }
  return (
    new Elysia()
      // Elysia parses a body before derive runs: authenticate first, so a bad body from an anonymous caller
      // is 401, not 400, and a request that fails to parse is audited like any other. A route's own parse
      // hook (the process routes' jsonBody) runs after this one.
      .onParse({ as: 'scoped' }, async ({ request, route }) => {
        requestState(request).route = route
        await authenticate(request)
      })
      .derive({ as: 'scoped' }, ({ request }) => authenticate(request))
  )
}

/**
 * Authenticates a credential, throttling failures per client address (AUTH_FAILURES_PER_MIN): an address past
 * its allowance gets 429 before any look-up, so a flood of random tokens costs neither a query nor, through
 * the audit log's aggregation, a row per request.
 */
export async function authenticateFrom(s: Pick<Services, 'auth' | 'limits'>, state: RequestState, token: string | null): Promise<Principal> {
  const address = state.ip()
  if (address !== null) {
    const wait = s.limits.failures.peek(address)
    if (wait > 0) {
      const known = s.auth.cached(token)
      if (known) return known
      // Valid a few minutes ago from anywhere: a user sharing the address with a flood, not a guess.
      if (s.auth.validRecently(token)) return s.auth.authenticate(token)
      throw new HttpError(429, 'rate_limited', `Too many failed authentications from this address; retry after ${wait} s`, undefined, {
        'Retry-After': String(wait),
      })
    }
  }
  try {
    return await s.auth.authenticate(token)
  } catch (error) {
    if (address !== null && error instanceof HttpError && error.status === 401) s.limits.failures.take(address)
    throw error
  }
}

/** The active workspace: the one asked for (if a member), else the caller's first membership. */
export function activeWorkspace(principal: Principal, state: RequestState, asked: number | undefined): number {
  const id = asked ?? principal.workspaceIds[0]
  if (id === undefined) throw forbidden('You are not a member of any workspace')
  if (!principal.workspaceIds.includes(id)) throw forbidden('You are not a member of this workspace')
  state.workspaceId = id
  state.limitWorkspace?.(id)
  return id
}

/** Changes need a role above viewer in the workspace (README "Roles"). */
export function requireWriter(principal: Principal, workspaceId: number) {
  if (!principal.writableWorkspaceIds.includes(workspaceId)) throw forbidden('Your role in this workspace is read-only')
}

/** Roles that manage a workspace's webhooks and pause its queues (README "Roles"). */
const ADMIN_ROLES: ReadonlySet<string> = new Set(['owner', 'admin'])

/** Webhooks (which send the workspace's processes elsewhere) and pausing need admin or owner in the workspace. */
export function requireAdmin(principal: Principal, workspaceId: number) {
  const role = principal.memberships.find((m) => Number(m.workspace_id) === workspaceId)?.role
  if (role === undefined || !ADMIN_ROLES.has(role)) throw forbidden('This needs the admin or owner role in this workspace')
}

/** CORS_ORIGINS as a set, without `*` (which never grants credentials, nor trust for a cookie's change). */
export function trustedOrigins(corsOrigins: string): Set<string> {
  return new Set(
    corsOrigins
      .split(',')
      .map((o) => o.trim())
      .filter((o) => o && o !== '*'),
  )
}

/**
 * A cookie-authenticated change must come from this origin (or one listed in CORS_ORIGINS): its `Origin`
 * names our host (`Host`, or `X-Forwarded-Host` behind a proxy), or, without Origin, `Sec-Fetch-Site` says
 * same-origin. Neither header: refused, since every current browser sends one of them. A body must be
 * `application/json`, which a cross-site form cannot send without a CORS preflight.
 */
export function checkSameOrigin(request: Request, trusted: Set<string>, needJsonBody: boolean) {
  const headers = request.headers
  const origin = headers.get('origin')
  if (origin !== null && origin !== 'null') {
    if (!trusted.has(origin) && !sameHost(origin, request)) throw forbidden('Cross-origin request refused for cookie authentication')
  } else {
    const site = headers.get('sec-fetch-site')
    if (site !== 'same-origin' && site !== 'none') throw forbidden('Cookie-authenticated changes need a same-origin Origin or Sec-Fetch-Site header')
  }
  if (needJsonBody && hasBody(request)) {
    const type = headers.get('content-type') ?? ''
    if (!/^application\/json\s*(;|$)/i.test(type)) throw forbidden('Cookie-authenticated changes must send Content-Type: application/json')
  }
}

function sameHost(origin: string, request: Request): boolean {
  let host: string
  try {
    host = new URL(origin).host
  } catch {
    return false
  }
  const own = request.headers.get('host') ?? new URL(request.url).host
  return host === own || host === request.headers.get('x-forwarded-host')
}

function hasBody(request: Request): boolean {
  const length = request.headers.get('content-length')
  return (length !== null && length !== '0') || request.headers.has('transfer-encoding') || (length === null && request.body !== null)
}

/** The audit row for this request, as it will read if it succeeds with `status`. */
export function auditRowFor(request: Request, state: RequestState, status: number): AuditRow {
  return {
    user_id: state.principal?.userId ?? null,
    token_id: state.principal?.tokenId ?? null,
    workspace_id: state.workspaceId,
    method: request.method,
    route: state.route ?? 'unmatched',
    status,
    ip: state.ip(),
    user_agent: request.headers.get('user-agent'),
    request_id: state.requestId,
    created_at: new Date().toISOString(),
    request_id_from_client: state.requestIdFromClient,
  }
}
