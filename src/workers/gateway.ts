// The worker gateway, WebSocket `GET /workers/ws` (README: Worker protocol): workers claim, start, report and
// finish processes. One handler per op (src/workers/ops/); this file is the socket side: frames in (checked,
// in order per process), replies out (corked, one write per turn), and the leases this instance holds.
//
// Live state (progress, heartbeats) is acked once accepted, fenced against the leases held here in memory;
// status changes, results, events and terminal frames are acked after they commit. Leases belong to the worker
// id, so a worker that reconnects (here or on another instance) with the same id keeps its processes. The
// gateway watches each worker it holds leases for; a committed change that takes a process away from its
// worker (a user's cancel, the lease sweep) is pushed to the worker as `cancel`, wherever it was made.
//
// Frames about one process from one socket take effect in the order they were sent, though each is handled
// asynchronously and the worker need not wait for acks: each waits for the one before it about that process
// (`tails`); an accepted progress frame is done at once, so a burst of them never waits. Frames about
// different processes, and hello and claim, never wait for each other.
import type { WorkerPrincipal } from '../auth/authenticator'
import { HttpError, isUnavailable } from '../errors'
import { MAX_METADATA_DEPTH, type Process, unstorableJson } from '../processes/model'
import { findState } from '../processes/queries/reads'
import type { Status } from '../processes/states'
import type { Services } from '../wiring'
import { FinishBatcher } from './finish'
import { HeldLeases, type Lease } from './held'
import { claim } from './leases'
import { type Frame, MAX_FRAME_BYTES, OPS, type WorkerErrorCode, checkByOp, checkFrame } from './model'
import { claim as claimOp, start } from './ops/claim'
import { type ClaimAsk, FrameError, type GatewayOps, type Handler, type Reply, type Socket, type WorkerSocketData } from './ops/context'
import { finish } from './ops/finish'
import { hello } from './ops/hello'
import { children } from './ops/children'
import { heartbeat, progress, update } from './ops/live'
import { output } from './ops/output'
import { OutputWriter } from './output-behind'
import type { HubMessage } from '../hub/hub'
import { outputTotals } from '../processes/queries/output'
import { log } from './ops/log'
import { spawn } from './ops/spawn'
import { LiveWriter } from './write-behind'

export type { WorkerSocketData } from './ops/context'

const HANDLERS: { [K in Frame['op']]: Handler<K> } = {
  hello,
  claim: claimOp,
  start,
  progress,
  heartbeat,
  update,
  output,
  log,
  complete: finish,
  fail: finish,
  spawn,
  children,
}

type ProcessFrame = Extract<Frame, { process_id: number }>

export class WorkerGateway implements GatewayOps {
  private readonly sockets = new Map<string, Set<Socket>>()
  /** Writes the live state behind the acks. */
  readonly writer: LiveWriter
  /** Writes the live output behind the acks. */
  readonly outputs: OutputWriter
  /** Output chunks accepted this turn, for the hub at its end (before the turn's states). */
  private outbound: HubMessage[] = []
  /** One hub watch per worker with held processes (its `worker:<id>` channel), however many it holds. */
  private readonly watches = new Map<string, { count: number; unwatch: Promise<() => void> }>()
  /** Leases of workers with no socket here any more: written, then let go (unless the worker says hello again). */
  private readonly orphaned = new Set<number>()
  private readonly all = new Set<Socket>()
  private publishScheduled = false
  /** Sockets closed because their worker did not read its replies (MAX_WORKER_BUFFERED_BYTES). */
  closedSlow = 0
  /** Frames refused at once because the socket had too many in hand, or too many claims waiting. */
  refusedBusy = 0

  /** Told when a socket opens, says hello or closes (sessions.ts writes it down for the workers page). */
  onSessionsChanged: (() => void) | null = null

  /** complete/review/fail frames of every socket, group-committed with their claim-next (finish.ts). */
  readonly finisher: FinishBatcher

  constructor(
    readonly s: Services,
    /** The leases this instance holds, with their live state (the processes' reads see them too: Services.live). */
    readonly held: HeldLeases = new HeldLeases(),
  ) {
    this.finisher = new FinishBatcher(s.sql, s.hub, s.queue)
    const beatMs = Math.min(1000, Math.floor(s.config.JOB_TIMEOUT_MS / 20))
    this.outputs = new OutputWriter(s.sql, s.log, s.metrics, s.config.OUTPUT_FLUSH_MS)
    this.writer = new LiveWriter(s.sql, this.held, s.log, s.metrics, s.config.PROGRESS_PERSIST_MS, beatMs, {
      lost: (lease) => this.held.moved(lease),
      publishable: () => this.publishSoon(),
    })
  }

  get openSockets(): ReadonlySet<Socket> {
    return this.all
  }

  /** Reply bytes written but not yet taken by the workers' sockets, over every socket (metrics). */
  get bufferedBytes() {
    let n = 0
    for (const ws of this.all) n += ws.getBufferedAmount()
    return n
  }

  get framesInFlight() {
    let n = 0
    for (const ws of this.all) n += ws.data.inFlight
    return n
  }

  get connected() {
    return this.all.size
  }

  get heldCount() {
    return this.held.size
  }

  /** Processes that open sockets still have frames in order for; drains to 0 when every frame is answered. */
  get orderedProcesses() {
    let n = 0
    for (const ws of this.all) n += ws.data.tails.size
    return n
  }

  /** Sockets per worker token, admitted (before the upgrade) and not yet closed: MAX_SOCKETS_PER_WORKER_TOKEN. */
  private readonly socketsPerToken = new Map<number, number>()

  /** Takes a place for one more socket of this token; false when it holds MAX_SOCKETS_PER_WORKER_TOKEN already. */
  admitSocket(tokenId: number): boolean {
    const cap = this.s.config.MAX_SOCKETS_PER_WORKER_TOKEN
    const n = this.socketsPerToken.get(tokenId) ?? 0
    if (cap > 0 && n >= cap) return false
    this.socketsPerToken.set(tokenId, n + 1)
    return true
  }

  /** Gives back a place taken by admitSocket (the socket closed, or its upgrade failed). */
  releaseSocket(tokenId: number) {
    const n = (this.socketsPerToken.get(tokenId) ?? 1) - 1
    if (n > 0) this.socketsPerToken.set(tokenId, n)
    else this.socketsPerToken.delete(tokenId)
  }

  newSocketData(token: WorkerPrincipal): WorkerSocketData {
    const connId = crypto.randomUUID()
    const now = Date.now()
    return {
      kind: 'worker',
      connId,
      tokenId: token.tokenId,
      token,
      workerId: `conn-${connId}`,
      waitingClaims: 0,
      inFlight: 0,
      hello: null,
      untrack: () => {},
      closed: new AbortController(),
      tails: new Map(),
      outbox: [],
      connectedAt: now,
      lastFrameAt: now,
      types: null,
    }
  }

  open(ws: Socket) {
    this.all.add(ws)
    this.addSocket(ws.data.workerId, ws)
    this.onSessionsChanged?.()
    // A revoked or expired token's sockets are closed within AUTH_CACHE_MS (1008: policy violation).
    ws.data.untrack = this.s.credentials.track('worker', ws.data.tokenId, () => {
      this.flush(ws)
      ws.close(1008, 'worker token revoked or expired')
    })
  }

  close(ws: Socket) {
    this.releaseSocket(ws.data.tokenId)
    ws.data.untrack()
    this.all.delete(ws)
    ws.data.closed.abort()
    this.removeSocket(ws.data.workerId, ws)
    this.onSessionsChanged?.()
  }

  /** Closes every worker socket with 1012 ("service restart"): workers reconnect elsewhere and keep their leases. */
  closeAll(code = 1012, reason = 'server restarting') {
    for (const ws of this.all) {
      this.flush(ws) // replies already made are written first
      ws.close(code, reason)
    }
  }

  async message(ws: Socket, raw: string | Buffer) {
    this.s.metrics.counters.worker_frames++
    ws.data.lastFrameAt = Date.now()
    let frame: Frame | null = null
    let ref: unknown
    ws.data.inFlight++
    try {
      if (typeof raw !== 'string') throw new FrameError('invalid_message', 'frames must be text (JSON)')
      let parsed: unknown
      try {
        parsed = JSON.parse(raw)
      } catch {
        throw new FrameError('invalid_message', 'frame is not valid JSON')
      }
      ref = (parsed as { ref?: unknown })?.ref
      if (typeof ref !== 'string' && typeof ref !== 'number') ref = undefined
      // Back-pressure: a socket with too many frames in hand gets the refusal at once, no work queued for it.
      if (ws.data.inFlight > this.s.config.MAX_FRAMES_IN_FLIGHT_PER_SOCKET) {
        this.refusedBusy++
        throw new FrameError('rate_limited', `more than ${this.s.config.MAX_FRAMES_IN_FLIGHT_PER_SOCKET} frames in hand; wait for replies`)
      }
      // Parsed first so that even an oversized frame's error names its ref (Bun's hard stop is far above 64 KiB).
      if (raw.length > MAX_FRAME_BYTES || Buffer.byteLength(raw) > MAX_FRAME_BYTES) throw new FrameError('invalid_message', 'frame exceeds 64 KiB')
      if (!checkFrame.Check(parsed)) throw new FrameError('invalid_message', describeInvalid(parsed))
      // Text Postgres cannot store (U+0000, lone surrogates) or absurd nesting is refused here, per frame: inside
      // a batched write it would fail the other processes' frames too.
      const unstorable = unstorableJson(parsed, MAX_METADATA_DEPTH + 1)
      if (unstorable) throw new FrameError('invalid_message', `invalid ${parsed.op}: ${unstorable}`)
      frame = parsed
      // A frame acts as the worker id current when it arrived: a hello sent after it does not change that,
      // and one sent before it (whose handler sets the id synchronously) does.
      const workerId = ws.data.workerId
      let reply: Reply
      if ('process_id' in frame) {
        // After a hello, its takeover first: the frame acts as the worker the hello named.
        if (ws.data.hello) await ws.data.hello.catch(() => {})
        reply = await this.inOrder(ws, frame, workerId)
      } else if (frame.op === 'hello') {
        const pending = Promise.resolve(this.dispatch(ws, frame, workerId))
        ws.data.hello = pending
        try {
          reply = await pending
        } finally {
          if (ws.data.hello === pending) ws.data.hello = null
        }
      } else reply = await this.dispatch(ws, frame, workerId)
      this.send(ws, ref === undefined ? reply : { ...reply, ref })
    } catch (error) {
      const { code, message } = this.explainError(error, frame)
      this.send(ws, { op: 'error', ...(ref === undefined ? {} : { ref }), code, message })
    } finally {
      ws.data.inFlight--
    }
  }

  private dispatch(ws: Socket, frame: Frame, workerId: string): Promise<Reply> | Reply {
    return (HANDLERS[frame.op] as Handler<Frame['op']>)(this, ws, workerId, frame)
  }

  /** Runs a frame about a process once the frames before it about that process are done (see the top). */
  private async inOrder(ws: Socket, frame: ProcessFrame, workerId: string): Promise<Reply> {
    const tails = ws.data.tails
    const id = frame.process_id
    const before = tails.get(id)
    if (!before) {
      // Nothing of this process in hand: a live frame is done before anything else can start.
      const reply = this.dispatch(ws, frame, workerId)
      if (!(reply instanceof Promise)) return reply
      return this.tracked(tails, id, reply)
    }
    const { promise: tail, resolve } = Promise.withResolvers<void>()
    tails.set(id, tail)
    try {
      await before
      return await this.dispatch(ws, frame, workerId)
    } finally {
      resolve()
      // Nothing newer queued behind this frame: forget the process, so the map holds only busy ones.
      if (tails.get(id) === tail) tails.delete(id)
    }
  }

  /** A frame being handled: the next frame about its process waits for it. */
  private async tracked(tails: Map<number, Promise<void>>, id: number, reply: Promise<Reply>): Promise<Reply> {
    const tail = reply.then(
      () => {},
      () => {},
    )
    tails.set(id, tail)
    try {
      return await reply
    } finally {
      if (tails.get(id) === tail) tails.delete(id)
    }
  }

  private explainError(error: unknown, frame: Frame | null): { code: WorkerErrorCode; message: string } {
    if (error instanceof FrameError) return { code: error.code, message: error.message }
    if (error instanceof HttpError && error.status === 503) return { code: 'unavailable', message: error.message }
    if (isUnavailable(error)) return { code: 'unavailable', message: 'database unavailable; not applied, retry later' }
    this.s.log.error('worker frame failed', { op: frame?.op, error: String(error), stack: (error as Error)?.stack })
    return { code: 'internal', message: 'internal error' }
  }

  /**
   * Replies made in one turn go out in one write (corked) once its promise continuations have run: the acks
   * of a burst of frames, hundreds at once, cost one syscall instead of one each (measured, 100 acks: 0.45 ms
   * written one by one, 0.03 ms corked), and are written before the fan-out of the states they accepted.
   */
  private send(ws: Socket, reply: Reply) {
    if (ws.readyState !== 1) return
    const outbox = ws.data.outbox
    outbox.push(JSON.stringify(reply))
    if (outbox.length > 1) return
    queueMicrotask(() => this.flush(ws))
  }

  private flush(ws: Socket) {
    const frames = ws.data.outbox.splice(0)
    if (frames.length === 0 || ws.readyState !== 1) return
    ws.cork(() => {
      for (const frame of frames) ws.send(frame)
    })
    // A worker that does not read its replies would grow this socket's send buffer without bound: close it.
    if (ws.getBufferedAmount() > this.s.config.MAX_WORKER_BUFFERED_BYTES) {
      this.closedSlow++
      ws.close(1008, 'worker is not reading its replies')
    }
  }

  /**
   * Accepted live states go to the hub together at the end of the turn (after the acks, queued as microtasks,
   * are written): every stream and instance gets one state per process per turn, however many frames made it.
   */
  publishSoon() {
    this.writer.poke()
    if (this.publishScheduled) return
    this.publishScheduled = true
    setImmediate(() => {
      this.publishScheduled = false
      if (this.outbound.length > 0) {
        const messages = this.outbound
        this.outbound = []
        this.s.hub.publishMessages(messages)
      }
      const states = this.held.takeUnpublished()
      if (states.length > 0) this.s.hub.publishAll(states)
    })
  }

  acceptOutput(lease: Lease, seq: number, text: string, bytes: number) {
    this.outputs.push({ process_id: lease.id, seq, text, bytes, attempt: lease.attempt, base: lease.base })
    this.outbound.push({ id: lease.id, seq, text: `{"process_id":${lease.id},"seq":${seq},"chunk":${text}}` })
    this.publishSoon()
  }

  outputOf(lease: Lease): Promise<{ seq: number; bytes: number }> {
    lease.outputLoad ??= outputTotals(this.s.sql, lease.id).then(
      (totals) => (lease.output ??= totals),
      (error) => {
        lease.outputLoad = null
        throw error
      },
    )
    return lease.outputLoad
  }

  get outputFull() {
    return this.outputs.full
  }

  outputDrained(id: number): Promise<void> {
    return this.outputs.drained(id)
  }

  async claimFor(ws: Socket, workerId: string, o: ClaimAsk): Promise<Process[]> {
    const types = o.types && o.types.length > 0 ? o.types : null
    ws.data.types = types // what the workers page shows it claims
    const waits = (o.wait_ms ?? 0) > 0
    const cap = this.s.config.MAX_WAITING_CLAIMS_PER_SOCKET
    if (waits && cap > 0 && ws.data.waitingClaims >= cap) {
      this.refusedBusy++
      throw new FrameError('rate_limited', `at most ${cap} claims may wait on one socket`)
    }
    if (waits) ws.data.waitingClaims++
    let processes: Process[]
    try {
      processes = await claim(this.s.sql, this.s.hub, this.s.queue, {
        workerId,
        types,
        max: o.max ?? 1,
        waitMs: o.wait_ms ?? 0,
        signal: ws.data.closed.signal,
        token: ws.data.token,
      })
    } finally {
      if (waits) ws.data.waitingClaims--
    }
    for (const process of processes) await this.hold(ws, workerId, process)
    return processes
  }

  async refusal(ws: Socket, id: number, workerId: string, attempt: number | undefined, outcome: Status | null): Promise<WorkerErrorCode | 'ack'> {
    const state = await findState(this.s.sql, id)
    if (!state) return 'not_found'
    // Outside a scoped token's workspaces and types a process does not exist for it (no hint that it does).
    const { workspaceIds, types } = ws.data.token
    if ((workspaceIds && !workspaceIds.includes(Number(state.workspace_id))) || (types && !types.includes(state.type))) return 'not_found'
    if (attempt !== undefined && state.attempts !== attempt) return 'not_owner'
    if (state.worker_token_id !== null && Number(state.worker_token_id) !== ws.data.tokenId) return 'not_owner'
    if (outcome === 'running' && state.status === 'running' && state.worker_id === workerId) return 'ack'
    if (state.status === 'cancelled') return 'cancelled'
    // A parent whose handler's complete was applied waits for its children with no lease: the same
    // complete again, from the same attempt, is acked again.
    if (outcome !== null && state.awaiting === outcome && attempt !== undefined) return 'ack'
    if (state.worker_id !== workerId) return 'not_owner'
    if (outcome && state.status === outcome) return 'ack'
    // A repeated fail of an attempt that was put back to pending for a retry (the same worker, the same attempt).
    if (outcome === 'failed' && state.status === 'pending' && attempt !== undefined && state.attempts === attempt) return 'ack'
    // Running and this worker's, but not held here: its lease moved to another instance (a hello there).
    const lease = this.held.get(id)
    if (state.status === 'running' && (!lease || lease.moved)) return 'not_owner'
    return 'invalid_transition'
  }

  async hold(ws: Socket, workerId: string, state: Process, base = state.version): Promise<Lease> {
    const current = this.held.get(state.id)
    if (current && current.workerId !== workerId) this.release(state.id)
    this.orphaned.delete(state.id)
    const lease = this.held.hold(state, { workerId, tokenId: ws.data.tokenId, base })
    if (current?.workerId === workerId) return lease
    let watch = this.watches.get(workerId)
    if (!watch) {
      watch = { count: 0, unwatch: this.s.hub.watchWorker(workerId, (p) => this.onLeaseEnded(workerId, p)) }
      this.watches.set(workerId, watch)
    }
    watch.count++
    await watch.unwatch
    return lease
  }

  release(processId: number) {
    const lease = this.held.release(processId)
    this.orphaned.delete(processId)
    if (!lease) return
    const watch = this.watches.get(lease.workerId)
    if (!watch || --watch.count > 0) return
    this.watches.delete(lease.workerId)
    void watch.unwatch.then((unwatch) => unwatch())
  }

  rename(ws: Socket, from: string, to: string) {
    this.removeSocket(from, ws)
    ws.data.workerId = to
    this.addSocket(to, ws)
    // A worker that comes back before its leases were let go keeps them as they are.
    for (const lease of this.held.ofWorker(to)) this.orphaned.delete(lease.id)
    this.onSessionsChanged?.()
  }

  /**
   * A process of this worker left `running` (leaseEnded), not by its worker's own terminal frame (that one
   * releases first): tell the worker to stop. A state no newer than the lease's (a late copy from before a
   * retry and a new claim) is not about this lease.
   */
  private onLeaseEnded(workerId: string, process: Process) {
    const lease = this.held.get(process.id)
    if (lease?.workerId !== workerId || process.version <= lease.state.version) return
    this.release(process.id)
    // Only the sockets of the token holding the lease: another token using the same worker id learns nothing.
    for (const ws of this.sockets.get(workerId) ?? []) {
      if (ws.data.tokenId === lease.tokenId) this.send(ws, { op: 'cancel', process_id: process.id, status: process.status })
    }
  }

  private addSocket(workerId: string, ws: Socket) {
    let set = this.sockets.get(workerId)
    if (!set) this.sockets.set(workerId, (set = new Set()))
    set.add(ws)
  }

  private removeSocket(workerId: string, ws: Socket) {
    const set = this.sockets.get(workerId)
    if (!set) return
    set.delete(ws)
    if (set.size > 0) return
    this.sockets.delete(workerId)
    // Nobody here speaks for this worker any more: its live states are written now, then its leases are let
    // go (they stay in the database, for the worker's next hello, here or elsewhere).
    const ids = new Set(this.held.ofWorker(workerId).map((lease) => lease.id))
    if (ids.size === 0) return
    for (const id of ids) this.orphaned.add(id)
    void this.writer.flush(ids).finally(() => {
      for (const id of ids) if (this.orphaned.has(id)) this.release(id)
    })
  }

  /** Shutdown: every live state is written before the sockets close (nothing acked is lost to a clean stop). */
  async stop() {
    await Promise.all([this.writer.stop(), this.outputs.stop()])
  }
}

function describeInvalid(parsed: unknown): string {
  const op = (parsed as { op?: unknown })?.op
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'frame must be a JSON object'
  if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op)) return `unknown op ${JSON.stringify(op)}; expected one of ${OPS.join(', ')}`
  const first = checkByOp.get(op)?.Errors(parsed).First()
  return first ? `invalid ${op}: ${first.path || '/'} ${first.message}` : `invalid ${op}`
}
