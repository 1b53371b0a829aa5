// The worker gateway, WebSocket `GET /workers/ws` (README: Worker protocol): workers claim, start, report and finish processes.
// Every reply to a change is sent after the change commits. Leases belong to the worker id, so a worker that
// reconnects (here or on another instance) with the same id keeps its processes. The gateway watches each
// process its workers hold; a committed change that takes the process away from them (a user's cancel, the
// lease sweep) is pushed to the worker as `cancel`, wherever that change was made.
//
// Frames about one process from one socket take effect in the order they were sent, though each is handled
// asynchronously and the worker need not wait for acks: each chains onto the one before it (`tails`). A
// progress frame waits only until the one before it is queued in the coalescer, so a burst still becomes one
// row write; any other frame waits until everything before it is applied (queued progress written first).
// Frames about different processes, and hello and claim, never wait for each other.
import type { ServerWebSocket } from 'bun'
import { HttpError, isUnavailable } from '../errors'
import { MAX_METADATA_DEPTH, type Process, unstorableJson } from '../processes/model'
import { failProcess } from '../processes/queries/failures'
import { findState, getProcesses } from '../processes/queries/reads'
import { appendLog, touchHeartbeat } from '../processes/queries/reports'
import { transitionProcess, workerTransition } from '../processes/queries/transitions'
import type { Status } from '../processes/states'
import type { WorkerPrincipal } from '../auth/authenticator'
import type { Services } from '../wiring'
import { FinishBatcher } from './finish'
import { claim } from './leases'
import { type Frame, MAX_FRAME_BYTES, OPS, type WorkerErrorCode, checkByOp, checkFrame } from './model'

export interface WorkerSocketData {
  kind: 'worker'
  connId: string
  tokenId: number
  /** The worker token and its scope: leases are bound to it (#12). */
  token: WorkerPrincipal
  workerId: string
  /** `claim`s waiting for work now (MAX_WAITING_CLAIMS_PER_SOCKET). */
  waitingClaims: number
  /** Frames received and not yet answered (MAX_FRAMES_IN_FLIGHT_PER_SOCKET). */
  inFlight: number
  /** Forgets the socket in the credential watch (which closes it when its token is revoked). */
  untrack: () => void
  closed: AbortController
  /** Per process with frames still being handled: settles when the next frame about it may go ahead. */
  tails: Map<number, Promise<void>>
  /** Replies of this turn not written yet: they go out together, in one write (see send). */
  outbox: string[]
  /** For the workers page (sessions.ts): when it connected, its last frame, the types of its last claim. */
  connectedAt: number
  lastFrameAt: number
  types: string[] | null
}

type Socket = ServerWebSocket<WorkerSocketData>
type Reply = Record<string, unknown> & { op: string }
type ProcessFrame = Extract<Frame, { process_id: number }>

class FrameError extends Error {
  constructor(
    readonly code: WorkerErrorCode,
    message: string,
  ) {
    super(message)
  }
}

export class WorkerGateway {
  private readonly sockets = new Map<string, Set<Socket>>()
  /** Leases this instance speaks for: process id → its worker (and token) and the version the lease was taken at. */
  private readonly held = new Map<number, { workerId: string; tokenId: number; version: number }>()
  /** One hub watch per worker with held processes (its `worker:<id>` channel), however many it holds. */
  private readonly watches = new Map<string, { count: number; unwatch: Promise<() => void> }>()
  private readonly all = new Set<Socket>()
  /** Sockets closed because their worker did not read its replies (MAX_WORKER_BUFFERED_BYTES). */
  closedSlow = 0
  /** Frames refused at once because the socket had too many in hand, or too many claims waiting. */
  refusedBusy = 0

  /** Told when a socket opens, says hello or closes (sessions.ts writes it down for the workers page). */
  onSessionsChanged: (() => void) | null = null

  /** complete/review frames of every socket, group-committed with their claim-next (finish.ts). */
  readonly finisher: FinishBatcher

  constructor(private readonly s: Services) {
    this.finisher = new FinishBatcher(s.sql, s.hub, s.queue)
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
      // Text Postgres cannot store (U+0000, lone surrogates) or absurd nesting is refused here, per frame:
      // inside a batched progress write it would fail the other processes' frames too.
      const unstorable = unstorableJson(parsed, MAX_METADATA_DEPTH + 1)
      if (unstorable) throw new FrameError('invalid_message', `invalid ${parsed.op}: ${unstorable}`)
      frame = parsed
      // A frame acts as the worker id current when it arrived: a hello sent after it does not change that,
      // and one sent before it (whose dispatch sets the id synchronously, here) does.
      const workerId = ws.data.workerId
      const reply = await ('process_id' in frame ? this.inOrder(ws, frame, workerId) : this.dispatch(ws, frame, workerId))
      this.send(ws, ref === undefined ? reply : { ...reply, ref })
    } catch (error) {
      const { code, message } = this.explainError(error, frame)
      this.send(ws, { op: 'error', ...(ref === undefined ? {} : { ref }), code, message })
    } finally {
      ws.data.inFlight--
    }
  }

  /** Runs a frame about a process once the frames before it about that process allow (see the top). */
  private async inOrder(ws: Socket, frame: ProcessFrame, workerId: string): Promise<Reply> {
    const tails = ws.data.tails
    const id = frame.process_id
    const before = tails.get(id)
    const { promise: tail, resolve } = Promise.withResolvers<void>()
    tails.set(id, tail)
    const next = () => {
      resolve()
      // Nothing newer queued behind this frame: forget the process, so the map holds only busy ones.
      if (tails.get(id) === tail) tails.delete(id)
    }
    try {
      if (before) await before
      // Everything sent before this frame is applied first: the progress it left queued is written now, so a
      // status change never coalesces it away. (Progress sent after this frame is not queued yet: it waits.)
      if (frame.op !== 'progress') await this.s.progress.flushNow(id)
      return await this.dispatch(ws, frame, workerId, next)
    } finally {
      next()
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
   * of a coalesced progress statement, hundreds at once, cost one syscall instead of one each (measured,
   * 100 acks: 0.45 ms written one by one, 0.03 ms corked), and are written before the fan-out of the same
   * states to this instance's streams (Hub.publishAll, afterReplies).
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

  /** `queued` is called once a progress frame is in the coalescer: the next frame about its process may start. */
  private async dispatch(ws: Socket, frame: Frame, workerId: string, queued?: () => void): Promise<Reply> {
    const { sql, hub, progress } = this.s
    switch (frame.op) {
      case 'hello': {
        if (frame.worker_id !== workerId) {
          this.removeSocket(workerId, ws)
          ws.data.workerId = frame.worker_id
          this.addSocket(frame.worker_id, ws)
          this.onSessionsChanged?.()
        }
        // Leases belong to the token that took them: another token's hello with this worker id gets none, and
        // the socket goes back to the id it had (frames about those processes are refused by the token guard
        // in any case). The id switched above synchronously, so frames sent right after the hello act as it.
        const [foreign] = await sql<{ id: number }[]>`
          select id from processes
           where status = 'running' and worker_id = ${frame.worker_id}
             and worker_token_id is not null and worker_token_id <> ${ws.data.tokenId}
           limit 1`
        if (foreign) {
          if (ws.data.workerId === frame.worker_id && frame.worker_id !== workerId) {
            this.removeSocket(frame.worker_id, ws)
            ws.data.workerId = workerId
            this.addSocket(workerId, ws)
          }
          throw new FrameError('not_owner', 'this worker id holds leases of another worker token')
        }
        // A worker that comes back keeps its leases: watch them again from this instance.
        const rows = await sql<{ id: number; version: number }[]>`
          select id, version from processes where status = 'running' and worker_id = ${frame.worker_id} order by id`
        for (const row of rows) await this.hold(frame.worker_id, ws.data.tokenId, row.id, row.version)
        return { op: 'ack', worker_id: frame.worker_id, processes: rows.map((r) => r.id) }
      }
      case 'claim': {
        const processes = await this.claimFor(ws, workerId, frame)
        // `process` is the first, for workers that ask for one at a time (the protocol's original reply).
        return { op: 'claimed', process: processes[0] ?? null, processes }
      }
      case 'start': {
        const changed = await transitionProcess(sql, frame.process_id, workerTransition(sql, 'start', workerId, undefined, {}, ws.data.token))
        if (!changed) {
          const code = await this.refusal(ws, frame.process_id, workerId, undefined, 'running')
          if (code !== 'ack') throw new FrameError(code, refusalMessage(code, 'start'))
          const [current] = await getProcesses(sql, [frame.process_id])
          return { op: 'ack', process: current }
        }
        await this.hold(workerId, ws.data.tokenId, changed.id, changed.version)
        hub.publish(changed)
        return { op: 'ack', process: changed }
      }
      case 'progress': {
        const outcome = await progress.submit(
          {
            id: frame.process_id,
            progress: frame.progress,
            message: frame.message ?? null,
            worker_id: workerId,
            attempt: frame.attempt ?? null,
            worker_token_id: ws.data.tokenId,
          },
          queued,
        )
        if (outcome.ok) return { op: 'ack', version: outcome.process.version }
        if (outcome.error) throw outcome.error
        const code = await this.refusal(ws, frame.process_id, workerId, frame.attempt, null)
        throw new FrameError(code === 'ack' ? 'invalid_transition' : code, refusalMessage(code, 'progress'))
      }
      case 'heartbeat': {
        if (await touchHeartbeat(sql, frame.process_id, workerId, frame.attempt, ws.data.tokenId)) return { op: 'ack' }
        const code = await this.refusal(ws, frame.process_id, workerId, frame.attempt, null)
        throw new FrameError(code === 'ack' ? 'invalid_transition' : code, refusalMessage(code, 'heartbeat'))
      }
      case 'log': {
        const changed = await appendLog(sql, frame.process_id, workerId, frame.attempt, frame.message, ws.data.tokenId)
        if (changed) {
          hub.publish(changed)
          return { op: 'ack', version: changed.version }
        }
        const code = await this.refusal(ws, frame.process_id, workerId, frame.attempt, null)
        throw new FrameError(code === 'ack' ? 'invalid_transition' : code, refusalMessage(code, 'log'))
      }
      case 'complete':
      case 'fail': {
        const op = frame.op === 'fail' ? 'fail' : frame.review ? 'review' : 'complete'
        let changed: Process | null
        let outcome: Status
        /** What the claim-next took in the change's own transaction (null: claim after it, as before). */
        let claimed: Process[] | null = null
        if (frame.op === 'fail') {
          // With attempts left the process goes back to pending, due after a backoff; else failed.
          changed = await failProcess(sql, frame.process_id, {
            workerId,
            attempt: frame.attempt,
            error: frame.error,
            backoff: this.s.queue.backoff,
            tokenId: ws.data.tokenId,
          })
          outcome = 'failed'
          if (changed) hub.publish(changed)
        } else {
          // Group commit (finish.ts): with this turn's other terminal frames, and a claim-next that does not
          // wait taken in the same transaction. The batch publishes what it committed.
          const types = frame.claim?.types && frame.claim.types.length > 0 ? frame.claim.types : null
          const claimNow = frame.claim && !((frame.claim.wait_ms ?? 0) > 0)
          const done = await this.finisher.submit(
            {
              id: frame.process_id,
              worker_id: workerId,
              attempt: frame.attempt ?? null,
              worker_token_id: ws.data.tokenId,
              review: op === 'review',
              ...(frame.result_summary === undefined || frame.result_summary === null ? {} : { result_summary: frame.result_summary }),
            },
            claimNow
              ? {
                  key: `${ws.data.connId} ${workerId} ${JSON.stringify(types)}`,
                  workerId,
                  types,
                  max: frame.claim!.max ?? 1,
                  token: ws.data.token,
                  signal: ws.data.closed.signal,
                }
              : undefined,
          )
          changed = done.changed
          claimed = done.claimed
          outcome = op === 'review' ? 'waiting_review' : 'completed'
        }
        if (!changed) {
          // A repeated terminal frame for the outcome already committed is acked again, not applied twice.
          const code = await this.refusal(ws, frame.process_id, workerId, frame.attempt, outcome)
          if (code !== 'ack') throw new FrameError(code, refusalMessage(code, frame.op))
          return { op: 'ack', repeated: true, ...(frame.claim ? { processes: await this.claimFor(ws, workerId, frame.claim) } : {}) }
        }
        this.release(changed.id)
        if (changed.status === 'pending') hub.announceWork(changed.type, 1, Date.parse(changed.run_at))
        else if (this.s.queue.capsAffect(changed.type)) hub.announceWork(changed.type)
        if (claimed) {
          ws.data.types = frame.claim?.types && frame.claim.types.length > 0 ? frame.claim.types : null
          for (const process of claimed) await this.hold(workerId, ws.data.tokenId, process.id, process.version)
          return { op: 'ack', version: changed.version, processes: claimed }
        }
        // Complete-and-claim-next: the claim runs after the terminal change committed.
        if (frame.claim) return { op: 'ack', version: changed.version, processes: await this.claimFor(ws, workerId, frame.claim) }
        return { op: 'ack', version: changed.version }
      }
    }
  }

  /** A claim for this socket's worker; each claimed process is held (watched) before the reply goes out. */
  private async claimFor(ws: Socket, workerId: string, o: { types?: string[]; wait_ms?: number; max?: number }): Promise<Process[]> {
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
    for (const process of processes) await this.hold(workerId, ws.data.tokenId, process.id, process.version)
    return processes
  }

  /** Why a worker's change found no row to change; 'ack' when it was already applied with this outcome. */
  private async refusal(ws: Socket, id: number, workerId: string, attempt: number | undefined, outcome: Status | null): Promise<WorkerErrorCode | 'ack'> {
    const state = await findState(this.s.sql, id)
    if (!state) return 'not_found'
    // Outside a scoped token's workspaces and types a process does not exist for it (no hint that it does).
    const { workspaceIds, types } = ws.data.token
    if ((workspaceIds && !workspaceIds.includes(Number(state.workspace_id))) || (types && !types.includes(state.type))) return 'not_found'
    if (attempt !== undefined && state.attempts !== attempt) return 'not_owner'
    if (state.worker_token_id !== null && Number(state.worker_token_id) !== ws.data.tokenId) return 'not_owner'
    if (outcome === 'running' && state.status === 'running' && state.worker_id === workerId) return 'ack'
    if (state.status === 'cancelled') return 'cancelled'
    if (state.worker_id !== workerId) return 'not_owner'
    if (outcome && state.status === outcome) return 'ack'
    // A repeated fail of an attempt that was put back to pending for a retry (the same worker, the same attempt).
    if (outcome === 'failed' && state.status === 'pending' && attempt !== undefined && state.attempts === attempt) return 'ack'
    return 'invalid_transition'
  }

  private async hold(workerId: string, tokenId: number, processId: number, version: number) {
    const current = this.held.get(processId)
    if (current?.workerId === workerId && current.tokenId === tokenId) {
      current.version = Math.max(current.version, version)
      return
    }
    if (current) this.release(processId)
    this.held.set(processId, { workerId, tokenId, version })
    let watch = this.watches.get(workerId)
    if (!watch) {
      watch = { count: 0, unwatch: this.s.hub.watchWorker(workerId, (p) => this.onLeaseEnded(workerId, p)) }
      this.watches.set(workerId, watch)
    }
    watch.count++
    await watch.unwatch
  }

  private release(processId: number) {
    const entry = this.held.get(processId)
    if (!entry) return
    this.held.delete(processId)
    const watch = this.watches.get(entry.workerId)
    if (!watch || --watch.count > 0) return
    this.watches.delete(entry.workerId)
    void watch.unwatch.then((unwatch) => unwatch())
  }

  /**
   * A process of this worker left `running` (leaseEnded), not by its worker's own terminal frame (that one
   * releases first): tell the worker to stop. A state older than the lease (a late copy from before a retry
   * and a new claim) is not about this lease.
   */
  private onLeaseEnded(workerId: string, process: Process) {
    const entry = this.held.get(process.id)
    if (entry?.workerId !== workerId || process.version <= entry.version) return
    this.release(process.id)
    // Only the sockets of the token holding the lease: another token using the same worker id learns nothing.
    for (const ws of this.sockets.get(workerId) ?? []) {
      if (ws.data.tokenId === entry.tokenId) this.send(ws, { op: 'cancel', process_id: process.id, status: process.status })
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
    // Nobody here speaks for this worker any more: stop watching its leases (they stay in the database).
    for (const [id, entry] of this.held) if (entry.workerId === workerId) this.release(id)
  }
}

function describeInvalid(parsed: unknown): string {
  const op = (parsed as { op?: unknown })?.op
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'frame must be a JSON object'
  if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op)) return `unknown op ${JSON.stringify(op)}; expected one of ${OPS.join(', ')}`
  const first = checkByOp.get(op)?.Errors(parsed).First()
  return first ? `invalid ${op}: ${first.path || '/'} ${first.message}` : `invalid ${op}`
}

function refusalMessage(code: WorkerErrorCode | 'ack', op: string): string {
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
