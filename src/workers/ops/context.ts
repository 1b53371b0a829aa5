// What a frame handler (one file per op in this folder) gets from the gateway: the services it uses, this
// instance's leases, the socket the frame came on and the worker id it acts as, and the gateway's few
// operations on leases and claims. The gateway (src/workers/gateway.ts) implements GatewayOps.
import type { ServerWebSocket } from 'bun'
import type { WorkerPrincipal } from '../../auth/authenticator'
import type { Process } from '../../processes/model'
import type { Status } from '../../processes/states'
import type { Services } from '../../wiring'
import type { FinishBatcher } from '../finish'
import type { HeldLeases, Lease } from '../held'
import type { Frame, WorkerErrorCode } from '../model'

export interface WorkerSocketData {
  kind: 'worker'
  connId: string
  tokenId: number
  /** The worker token and its scope: leases are bound to it. */
  token: WorkerPrincipal
  workerId: string
  /** `claim`s waiting for work now (MAX_WAITING_CLAIMS_PER_SOCKET). */
  waitingClaims: number
  /** Frames received and not yet answered (MAX_FRAMES_IN_FLIGHT_PER_SOCKET). */
  inFlight: number
  /** Forgets the socket in the credential watch (which closes it when its token is revoked). */
  untrack: () => void
  closed: AbortController
  /** A hello being handled: frames about processes wait for it (they act as the worker it names). */
  hello: Promise<unknown> | null
  /** Per process with frames still being handled: settles when the next frame about it may go ahead. */
  tails: Map<number, Promise<void>>
  /** Replies of this turn not written yet: they go out together, in one write. */
  outbox: string[]
  /** For the workers page (sessions.ts): when it connected, its last frame, the types of its last claim. */
  connectedAt: number
  lastFrameAt: number
  types: string[] | null
}

export type Socket = ServerWebSocket<WorkerSocketData>
export type Reply = Record<string, unknown> & { op: string }
export type FrameOf<K extends Frame['op']> = Extract<Frame, { op: K }>

export class FrameError extends Error {
  constructor(
    readonly code: WorkerErrorCode,
    message: string,
  ) {
    super(message)
  }
}

export type GatewayServices = Pick<Services, 'sql' | 'hub' | 'queue' | 'config' | 'metrics' | 'log'>

export interface ClaimAsk {
  types?: string[]
  wait_ms?: number
  max?: number
}

export interface GatewayOps {
  readonly s: GatewayServices
  readonly held: HeldLeases
  readonly finisher: FinishBatcher
  /** Holds a committed running state for this socket's worker (watching its lease); returns the lease. `base`: its live_base (default: its version, as a claim or start sets it). */
  hold(ws: Socket, workerId: string, state: Process, base?: number): Promise<Lease>
  /** Lets a lease go (its process left running, or its row moved on). */
  release(id: number): void
  /** A claim for this socket's worker; each claimed process is held before the reply goes out. */
  claimFor(ws: Socket, workerId: string, ask: ClaimAsk): Promise<Process[]>
  /** Why a frame about this process found nothing to change; 'ack' when it was applied already with `outcome`. */
  refusal(ws: Socket, id: number, workerId: string, attempt: number | undefined, outcome: Status | null): Promise<WorkerErrorCode | 'ack'>
  /** Accepted live states go to the hub at the end of this turn, together. */
  publishSoon(): void
  /** An accepted output chunk: written behind (output-behind.ts), and to the hub at the end of this turn. */
  acceptOutput(lease: Lease, seq: number, text: string, bytes: number): void
  /** The lease's output so far (its last seq, its bytes): read once per lease, at its first chunk. */
  outputOf(lease: Lease): Promise<{ seq: number; bytes: number }>
  /** Resolves once this process's accepted chunks are written (a terminal frame waits for it). */
  outputDrained(id: number): Promise<void>
  /** The output write-behind holds MAX_QUEUED_CHUNKS: new chunks are refused (rate_limited) until it drains. */
  readonly outputFull: boolean
  /** The socket acts as another worker id from now on (hello). */
  rename(ws: Socket, from: string, to: string): void
}

export type Handler<K extends Frame['op']> = (g: GatewayOps, ws: Socket, workerId: string, frame: FrameOf<K>) => Promise<Reply> | Reply

/** The lease of `id` if this socket's worker holds it under this token and attempt; why not otherwise (null: not held here). */
export function fence(g: GatewayOps, ws: Socket, workerId: string, id: number, attempt: number | undefined): Lease | WorkerErrorCode | null {
  const lease = g.held.get(id)
  if (!lease || lease.moved) return null
  if (lease.workerId !== workerId || lease.tokenId !== ws.data.tokenId) return 'not_owner'
  if (attempt !== undefined && attempt !== lease.attempt) return 'not_owner'
  return lease
}

export function refusalMessage(code: WorkerErrorCode | 'ack', op: string): string {
  switch (code) {
    case 'not_found':
      return 'no such process'
    case 'not_owner':
      return `${op} refused: this worker (or this attempt) does not hold the process`
    case 'cancelled':
      return 'the process was cancelled'
    default:
      return `${op} is not allowed in the process's current status`
  }
}

/** Refuses a frame that found nothing to change, with the reason the database gives ('ack' becomes invalid_transition). */
export async function refuse(g: GatewayOps, ws: Socket, workerId: string, id: number, attempt: number | undefined, op: string): Promise<never> {
  const code = await g.refusal(ws, id, workerId, attempt, null)
  throw new FrameError(code === 'ack' ? 'invalid_transition' : code, refusalMessage(code, op))
}
