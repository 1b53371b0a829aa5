// What the server knows about one request across Elysia's hooks and the outer handler:
// its id, when it started, which route matched, and who made it (for the log, metrics and audit).
// It rides on the Request itself (a symbol-keyed property): a WeakMap keyed by every Request cost more than
// the rest of a GET /health together under `wrk -c50` (weak-map upkeep in the collector).
import type { Principal } from './authenticator'

export interface RequestState {
  requestId: string
  startedAt: number
  /** The client's address (src/auth/client-address.ts), asked of the socket only when needed. */
  ip: () => string | null
  /** The peer is a proxy in TRUSTED_PROXIES: its X-Forwarded-Proto may be believed. */
  viaTrustedProxy: () => boolean
  route: string | null
  /** The request reached an authenticated route: it is audited, successful or not. */
  authenticated: boolean
  principal: Principal | null
  workspaceId: number | null
  /** A mutation already wrote its audit row inside its own transaction. */
  audited: boolean
  /** The X-Request-Id came from the client (marked so in the audit row). */
  requestIdFromClient: boolean
  /** Takes one request from the workspace's rate limit (set once the caller is authenticated). */
  limitWorkspace?: (workspaceId: number) => void
}

const STATE = Symbol('processes.requestState')
type WithState = Request & { [STATE]?: RequestState }
const noIp = () => null
const direct = () => false

export function beginRequest(request: Request, requestId: string, ip: () => string | null = noIp, viaTrustedProxy: () => boolean = direct): RequestState {
  const state: RequestState = {
    requestId,
    startedAt: performance.now(),
    ip,
    viaTrustedProxy,
    route: null,
    authenticated: false,
    principal: null,
    workspaceId: null,
    audited: false,
    requestIdFromClient: false,
  }
  ;(request as WithState)[STATE] = state
  return state
}

export function requestState(request: Request): RequestState {
  return (request as WithState)[STATE] ?? beginRequest(request, newRequestId())
}

/** A request rebuilt from another (a buffered body) keeps the original's state. */
export function shareState(original: Request, copy: Request) {
  const state = (original as WithState)[STATE]
  if (state) (copy as WithState)[STATE] = state
}

// Request ids: this process's random prefix and a counter, unique without a UUID's cost per request.
const ID_PREFIX = crypto.randomUUID().slice(0, 8)
let requestCount = 0
export function newRequestId(): string {
  return `${ID_PREFIX}-${(++requestCount).toString(36)}`
}
