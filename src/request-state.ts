// What the server knows about one request across Elysia's hooks and the outer handler:
// its id, when it started, which route matched, and who made it (for the log, metrics and audit).
import type { Principal } from './auth/authenticator'

export interface RequestState {
  requestId: string
  startedAt: number
  ip: string | null
  route: string | null
  /** The request reached an authenticated route: it is audited, successful or not. */
  authenticated: boolean
  principal: Principal | null
  workspaceId: number | null
  /** A mutation already wrote its audit row inside its own transaction. */
  audited: boolean
}

const states = new WeakMap<Request, RequestState>()

export function beginRequest(request: Request, requestId: string, ip: string | null): RequestState {
  const state: RequestState = {
    requestId,
    startedAt: performance.now(),
    ip,
    route: null,
    authenticated: false,
    principal: null,
    workspaceId: null,
    audited: false,
  }
  states.set(request, state)
  return state
}

export function requestState(request: Request): RequestState {
  let state = states.get(request)
  if (!state) state = beginRequest(request, crypto.randomUUID(), null)
  return state
}

/** A request rebuilt from another (a buffered body) keeps the original's state. */
export function shareState(original: Request, copy: Request) {
  const state = states.get(original)
  if (state) states.set(copy, state)
}
