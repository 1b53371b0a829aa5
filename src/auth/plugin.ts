// auth:api + auth_session + audit for a feature: resolves the caller before validation (so an anonymous
// request gets 401, not 422) and marks the request as audited-on-exit.
import { Elysia } from 'elysia'
import type { AuditRow } from './audit'
import { Authenticator, type Principal } from './authenticator'
import { forbidden } from '../errors'
import { requestState, type RequestState } from '../request-state'
import type { Services } from '../services'

export function authPlugin(s: Services) {
  const authenticate = async (request: Request) => {
    const state = requestState(request)
    state.authenticated = true
    state.principal ??= await s.auth.authenticate(Authenticator.tokenOf(request))
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

/** The active workspace: the one asked for (if a member), else the caller's first membership. */
export function activeWorkspace(principal: Principal, state: RequestState, asked: number | undefined): number {
  const id = asked ?? principal.workspaceIds[0]
  if (id === undefined) throw forbidden('You are not a member of any workspace')
  if (!principal.workspaceIds.includes(id)) throw forbidden('You are not a member of this workspace')
  state.workspaceId = id
  return id
}

/** The audit row for this request, as it will read if it succeeds with `status`. */
export function auditRowFor(request: Request, state: RequestState, status: number): AuditRow {
  return {
    user_id: state.principal?.userId ?? null,
    token_id: state.principal?.tokenId ?? null,
    workspace_id: state.workspaceId,
    method: request.method,
    route: state.route ?? new URL(request.url).pathname,
    status,
    ip: state.ip(),
    user_agent: request.headers.get('user-agent'),
    request_id: state.requestId,
    created_at: new Date().toISOString(),
  }
}
