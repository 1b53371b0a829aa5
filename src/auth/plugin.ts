// auth:api + auth_session + audit for a feature: resolves the caller before validation (so an anonymous
// request gets 401, not 422) and marks the request as audited-on-exit.
import { Elysia } from 'elysia'
import type { AuditRow } from './audit'
import { Authenticator, type Principal } from './authenticator'
import { forbidden } from '../errors'
import { requestState, type RequestState } from '../request-state'
import type { Services } from '../services'

export function authPlugin(s: Services) {
  return new Elysia().derive({ as: 'scoped' }, async ({ request }) => {
    const state = requestState(request)
    state.authenticated = true
    const principal = await s.auth.authenticate(Authenticator.tokenOf(request))
    state.principal = principal
    return { principal, state }
  })
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
    ip: state.ip,
    user_agent: request.headers.get('user-agent'),
    request_id: state.requestId,
    created_at: new Date().toISOString(),
  }
}
