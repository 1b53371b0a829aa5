// The browser's sign-in exchange: `POST /auth/session {token}` trades an API token for a session of its
// own (an opaque `pss_` secret in an HttpOnly cookie, SESSION_TTL_MS, revocable), so the dashboard never keeps
// a raw API token where a script can read it. `DELETE /auth/session` revokes it and clears the cookie.
import { Elysia, t } from 'elysia'
import { Authenticator } from './authenticator'
import { rateLimited } from './limits'
import { authenticateFrom, checkSameOrigin, trustedOrigins } from './plugin'
import { createSession, findUser, revokeSession } from './queries'
import { badRequest, ErrorSchema, HttpError, unauthenticated } from '../errors'
import { requestState } from './request-state'
import { PUBLIC, documented } from '../ops/docs'
import type { Services } from '../wiring'

export const SESSION_COOKIE = 'ps_session'

/**
 * `Secure` when the request came over https, directly or as a proxy's `X-Forwarded-Proto: https` says, a proxy
 * in TRUSTED_PROXIES (from anyone else the header is ignored).
 */
function isHttps(request: Request): boolean {
  if (request.url.startsWith('https:')) return true
  if (!requestState(request).viaTrustedProxy()) return false
  const forwarded = request.headers.get('x-forwarded-proto')
  return forwarded !== null && forwarded.split(',')[0]!.trim().toLowerCase() === 'https'
}

function cookie(request: Request, value: string, maxAgeS: number): string {
  return `${SESSION_COOKIE}=${value}; HttpOnly; SameSite=Lax; Path=/; Max-Age=${maxAgeS}${isHttps(request) ? '; Secure' : ''}`
}

export function sessions(s: Services) {
  const trusted = trustedOrigins(s.config.CORS_ORIGINS)
  return new Elysia({ prefix: '/auth/session' })
    .post(
      '',
      async ({ request, set }) => {
        const state = requestState(request)
        state.authenticated = true
        // Login CSRF: a page elsewhere must not sign this browser in as someone else.
        if (request.headers.has('origin') || request.headers.has('sec-fetch-site')) checkSameOrigin(request, trusted, false)
        if (!/^application\/json\s*(;|$)/i.test(request.headers.get('content-type') ?? '')) {
          throw new HttpError(422, 'invalid_request', 'Expected Content-Type: application/json')
        }
        let body: unknown
        try {
          body = JSON.parse(await request.text())
        } catch {
          throw badRequest('Request body is not valid JSON')
        }
        const token = (body as { token?: unknown })?.token
        if (typeof token !== 'string' || token.length === 0)
          throw new HttpError(422, 'invalid_request', 'Invalid body /token: expected a string', [{ path: '/token', message: 'Expected string' }])
        // Only an API token opens a session (not a session secret: a session cannot extend itself).
        if (token.startsWith('pss_')) throw unauthenticated('Sign in with an API token')
        const principal = await authenticateFrom(s, state, token)
        state.principal = principal
        // Sign-ins per API token: a session is a credential of its own, so minting them is limited.
        const wait = s.limits.signIn.take(`t${principal.tokenId}`)
        if (wait > 0) throw rateLimited(wait, 'token (SIGN_IN_PER_MIN sign-ins a minute)')
        const ttlEnd = Date.now() + s.config.SESSION_TTL_MS
        const expiresAt = new Date(principal.expiresAt === null ? ttlEnd : Math.min(ttlEnd, principal.expiresAt))
        const session = await createSession(s.sql, principal.userId, principal.tokenId, expiresAt, s.config.MAX_SESSIONS_PER_TOKEN)
        const user = await findUser(s.sql, principal.userId)
        set.headers['set-cookie'] = cookie(request, session.secret, Math.max(1, Math.floor((session.expiresAt.getTime() - Date.now()) / 1000)))
        set.headers['cache-control'] = 'no-store'
        return { user, expires_at: session.expiresAt.toISOString() }
      },
      {
        parse: () => null,
        detail: {
          summary: 'Sign in: exchange an API token for an HttpOnly session cookie (extension)',
          tags: ['auth'],
          requestBody: { content: { 'application/json': { schema: t.Object({ token: t.String() }) } } },
          responses: documented({
            200: [
              'Signed in; Set-Cookie: ps_session (HttpOnly, SameSite=Lax)',
              t.Object({ user: t.Object({ id: t.Integer(), email: t.String() }), expires_at: t.String({ format: 'date-time' }) }),
            ],
            400: ['Body is not JSON', ErrorSchema],
            401: ['Unknown, expired or revoked API token', ErrorSchema],
            429: ['Too many sign-ins with this token, or failed authentications from this address', ErrorSchema],
            403: ['From another origin', ErrorSchema],
            422: ['Not application/json, or no token', ErrorSchema],
            500: ['Internal error (with a request_id)', ErrorSchema],
            503: ['Database unavailable', ErrorSchema],
          }),
        },
      },
    )
    .delete(
      '',
      async ({ request }) => {
        const state = requestState(request)
        state.authenticated = true
        const secret = Authenticator.cookieOf(request)
        if (secret?.startsWith('pss_')) {
          checkSameOrigin(request, trusted, false)
          const principal = await s.auth.authenticate(secret).catch(() => null)
          if (principal?.sessionId != null) {
            state.principal = principal
            await revokeSession(s.sql, principal.sessionId)
            s.auth.forget(secret)
            // Its open streams end now, not at the next check.
            await s.credentials.check()
          }
        }
        return new Response(null, { status: 204, headers: { 'set-cookie': cookie(request, '', 0), 'cache-control': 'no-store' } })
      },
      {
        parse: () => null,
        detail: {
          summary: 'Sign out: revoke the session and clear its cookie (extension); needs no valid session',
          tags: ['auth'],
          ...PUBLIC,
          responses: documented({
            204: ['Signed out; the cookie is cleared', null],
            403: ['From another origin', ErrorSchema],
            500: ['Internal error (with a request_id)', ErrorSchema],
            503: ['Database unavailable', ErrorSchema],
          }),
        },
      },
    )
}
