/**
 * Worker SDK: claim processes over the worker WebSocket (contract §7), run a
 * handler for each, report progress, and complete or fail them — surviving
 * reconnects, server restarts (close code 1012) and cancellation.
 *
 * ```ts
 * const worker = connectWorker('http://localhost:3000', token, {
 *   types: ['csv_import'],
 *   async handler(process, ctx) {
 *     await ctx.progress(50, 'Halfway')
 *     if (ctx.signal.aborted) return
 *     return { result_summary: { rows_imported: 200 } }   // or { review: true, result_summary }
 *   },
 * })
 * await worker.close()
 * ```
 *
 * Delivery rules: `complete`/`fail` are kept until acked and re-sent after a
 * reconnect (the server acks a repeated terminal op without applying it twice);
 * `progress`, `heartbeat` and `log` are best effort — dropped if the connection
 * is down, since the next progress supersedes the last and a re-sent log could
 * be applied twice.
 *
 * No runtime dependency: the global `WebSocket` (browsers, Bun, Node 22+) or an
 * injected one such as the `ws` package's.
 */
import { abortableSleep, type Process } from './monitor.ts'

export type { Process } from './monitor.ts'

// ── Public types ───────────────────────────────────────────────────────────

export interface JobContext {
  /**
   * Aborted when the process is cancelled (the server's `cancel`), when the server
   * says this worker no longer holds it (`cancelled`, `not_owner`, `not_found`,
   * `invalid_transition`), or when `close()` gives up waiting. Whatever the handler
   * returns after that is discarded. `signal.reason` is a `JobStoppedError`.
   */
  readonly signal: AbortSignal
  /** The fencing token sent with every frame: the process's `attempts` when claimed. */
  readonly attempt: number
  /**
   * Report progress (rounded and clamped to 0–100). Resolves true once acked,
   * false when dropped (connection down) or refused. Never rejects, so it is safe
   * to call without awaiting.
   */
  progress(percent: number, message?: string): Promise<boolean>
  /** Append an event to the process's log; same promise rules as `progress`. */
  log(message: string): Promise<boolean>
}

/** What a handler returns. Review is requested here, not through the context. */
export interface JobResult {
  result_summary?: Record<string, unknown>
  /** Hand the result to a human: the process goes to `waiting_review` instead of `completed`. */
  review?: boolean
}

/** Return (or resolve) to complete the process; throw (or reject) to fail it with the error's message. */
export type JobHandler = (
  process: Process,
  ctx: JobContext,
) => Promise<JobResult | void> | JobResult | void

export type WorkerEvent =
  | { type: 'connected'; workerId: string }
  | { type: 'disconnected'; code: number; reason: string; reconnectInMs: number | null }
  | { type: 'claimed'; process: Process }
  | { type: 'completed'; process: Process; review: boolean }
  | { type: 'failed'; process: Process; error: string }
  /** The server cancelled it while it ran; nothing was sent for it. */
  | { type: 'cancelled'; process: Process }
  /** The server no longer lets this worker report on it (`code`): another attempt replaced it, say. */
  | { type: 'lost'; process: Process; code: string }
  /** The worker stopped for good: `close()` was called, or the server refused its token (no more retries). */
  | { type: 'stopped'; reason: 'closed' | 'unauthenticated'; error?: WorkerAuthError }

/** The part of the standard `WebSocket` used here; the `ws` package's class fits too. */
export interface WebSocketLike {
  send(data: string): void
  close(code?: number, reason?: string): void
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void
}
export type WebSocketConstructor = new (url: string) => WebSocketLike

export interface WorkerOptions {
  /** Leases belong to it: keep it stable across restarts to keep them. Default: a random id per `connectWorker`. */
  workerId?: string
  /** Process types to claim; all types when omitted. */
  types?: string[]
  /**
   * Handlers running at once. Default 1. Free slots are claimed together (one `claim {max}` for all of
   * them), and a finished job's `complete`/`fail` claims the next in the same round trip.
   */
  concurrency?: number
  handler: JobHandler
  /** Defaults to the global `WebSocket`. */
  WebSocket?: WebSocketConstructor
  /** Connection failures, refused hellos/claims, and server errors not tied to a request. */
  onError?: (error: Error) => void
  /** One call per lifecycle event, for logging. */
  onEvent?: (event: WorkerEvent) => void
  /** Default 10000; the server fails a process after JOB_TIMEOUT_MS (default 300000) without one. */
  heartbeatIntervalMs?: number
  /** How long one `claim` waits for work on the server (≤ 30000). Default 25000. */
  claimWaitMs?: number
  /** Reconnect backoff: doubles from min to max, with jitter. Defaults 500 and 30000. */
  reconnectMinMs?: number
  reconnectMaxMs?: number
}

export interface CloseOptions {
  /**
   * How long to wait for running handlers (and their final acks). Default: no
   * limit. When it passes, the remaining handlers are aborted (reason `closing`)
   * and their processes failed with "worker shut down before the job finished".
   */
  timeoutMs?: number
}

export interface WorkerHandle {
  readonly workerId: string
  /** Stop claiming, let running handlers finish (see CloseOptions), then close the socket. */
  close(options?: CloseOptions): Promise<void>
  /**
   * Settles when the worker has stopped for good: after `close()`, or when the server refused its token
   * (401/403 at the upgrade: unknown, expired or revoked) — the worker then stops retrying, and `error` says why.
   */
  readonly stopped: Promise<{ reason: 'closed' | 'unauthenticated'; error?: WorkerAuthError }>
}

/** The server refused the worker token at the upgrade (HTTP 401 or 403): retrying cannot help. */
export class WorkerAuthError extends Error {
  override readonly name = 'WorkerAuthError'

  constructor(
    readonly status: number,
    /** The contract's error code: `unauthenticated` or `forbidden`. */
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** The server answered a frame with `error {code, message}`. */
export class WorkerProtocolError extends Error {
  override readonly name = 'WorkerProtocolError'

  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** `ctx.signal.reason`: why the handler should stop. */
export class JobStoppedError extends Error {
  override readonly name = 'JobStoppedError'

  constructor(readonly reason: 'cancelled' | 'lost' | 'closing') {
    super(`job stopped: ${reason}`)
  }
}

// ── Entry point ────────────────────────────────────────────────────────────

/** `url`: the server's base URL (http/https/ws/wss) or the full `…/workers/ws` URL. */
export function connectWorker(url: string, token: string, options: WorkerOptions): WorkerHandle {
  const WebSocketImpl =
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  if (!WebSocketImpl) {
    throw new TypeError('no global WebSocket: pass options.WebSocket (the ws package, for example)')
  }
  const workerId = options.workerId ?? `worker-${crypto.randomUUID()}`
  const worker = new Worker(workerSocketUrl(url, token), workerId, WebSocketImpl, options)
  worker.start()
  return { workerId, close: (closeOptions) => worker.close(closeOptions), stopped: worker.stopped }
}

// ── The connection: hello, request/reply by ref, reconnect ─────────────────

const REPLY_TIMEOUT_MS = 15_000
/** Failing the leftover jobs at close: how long to wait for those acks. */
const ABANDON_ACK_MS = 2000
/** A refused claim (bad `types`, say) is retried this much later rather than in a tight loop. */
const CLAIM_ERROR_DELAY_MS = 5000
/** The codes by which the server says a process is no longer this worker's to report on. */
const LOSING_CODES = new Set(['cancelled', 'not_owner', 'not_found', 'invalid_transition'])
/** Beyond the contract's codes, the server answers these when its database is down: worth retrying. */
const TRANSIENT_CODES = new Set(['unavailable', 'internal'])

type Frame = { op: string; ref?: string; [field: string]: unknown }

/** The connection dropped before the reply came (or the worker was closed). */
class ConnectionLostError extends Error {
  override readonly name = 'ConnectionLostError'
}

interface PendingRequest {
  frame: Frame & { ref: string }
  /** Kept across reconnects and re-sent after the next hello. */
  retry: boolean
  timeoutMs: number
  timer?: ReturnType<typeof setTimeout>
  resolve: (reply: Frame) => void
  reject: (error: Error) => void
}

interface ConnectionConfig {
  url: string
  workerId: string
  WebSocket: WebSocketConstructor
  reconnectMinMs: number
  reconnectMaxMs: number
  /** After each accepted hello. */
  onReady: () => void
  /** Frames that answer no request: `cancel`, and errors without a known ref. */
  onPush: (frame: Frame) => void
  onError: (error: Error) => void
  onEvent: (event: WorkerEvent) => void
  /** The token was refused: the connection is closed for good. */
  onRefused: (error: WorkerAuthError) => void
}

class WorkerConnection {
  private socket: WebSocketLike | null = null
  /** Hello acked on the current socket: requests may be sent. */
  private ready = false
  private closed = false
  /** Consecutive connects that never reached `ready`: drives the backoff. */
  private failedConnects = 0
  private refSeq = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private readonly pending = new Map<string, PendingRequest>()
  private readyWaiters: (() => void)[] = []

  constructor(private readonly config: ConnectionConfig) {}

  get isReady(): boolean {
    return this.ready
  }

  open(): void {
    if (this.closed) return
    let socket: WebSocketLike
    try {
      socket = new this.config.WebSocket(this.config.url)
    } catch (error) {
      this.config.onError(asError(error))
      return this.scheduleReconnect(this.nextDelayMs(true))
    }
    this.socket = socket
    // Every listener checks it still belongs to the current socket: a socket we
    // gave up on (reply timeout) may still fire events later.
    socket.addEventListener('open', () => {
      if (this.socket === socket) this.hello(socket)
    })
    socket.addEventListener('message', (event: { data: unknown }) => {
      if (this.socket === socket) this.receive(event.data)
    })
    socket.addEventListener('close', (event: { code?: number; reason?: string }) => {
      if (this.socket === socket) this.lost(event.code ?? 1006, event.reason ?? '')
    })
    // Browsers give errors no detail; the `close` that follows does the work.
    socket.addEventListener('error', () => {})
  }

  /** Resolves once requests can be sent, or when the connection is closed for good. */
  whenReady(): Promise<void> {
    if (this.ready || this.closed) return Promise.resolve()
    return new Promise((resolve) => this.readyWaiters.push(resolve))
  }

  /**
   * Send a frame and wait for its reply (`ack`/`claimed`); rejects with
   * WorkerProtocolError on `error`, ConnectionLostError if the connection drops
   * first — unless `retry`, which keeps it for the next connection.
   */
  request(frame: Frame, options: { retry?: boolean; timeoutMs?: number } = {}): Promise<Frame> {
    if (this.closed || (!this.ready && !options.retry)) {
      return Promise.reject(new ConnectionLostError('not connected'))
    }
    const request = this.track(frame, options.retry ?? false, options.timeoutMs ?? REPLY_TIMEOUT_MS)
    return request.reply
  }

  /** Closed for good: no reconnect; every pending request is rejected. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.reconnectTimer)
    const socket = this.socket
    this.socket = null
    this.ready = false
    this.settleOnDisconnect(true)
    this.wakeReadyWaiters()
    socket?.close(1000, 'worker closing')
  }

  /** Register a request under a fresh ref; sent now when ready, else after the next hello. */
  private track(frame: Frame, retry: boolean, timeoutMs: number): { reply: Promise<Frame>; request: PendingRequest } {
    let request!: PendingRequest
    const reply = new Promise<Frame>((resolve, reject) => {
      const ref = String(++this.refSeq)
      request = { frame: { ...frame, ref }, retry, timeoutMs, resolve, reject }
    })
    this.pending.set(request.frame.ref, request)
    if (this.ready) this.transmit(request)
    return { reply, request }
  }

  private transmit(request: PendingRequest): void {
    const socket = this.socket
    if (!socket) return
    try {
      socket.send(JSON.stringify(request.frame))
    } catch {
      return this.abandonSocket(socket, 'send failed')
    }
    clearTimeout(request.timer)
    // No reply in time means a half-open connection (a NAT dropped it, say):
    // only a new socket will tell.
    request.timer = setTimeout(() => this.abandonSocket(socket, 'no reply in time'), request.timeoutMs)
  }

  private hello(socket: WebSocketLike): void {
    // Hello goes out before `ready`: it is what makes the connection ready.
    const hello = this.track({ op: 'hello', worker_id: this.config.workerId }, false, REPLY_TIMEOUT_MS)
    this.transmit(hello.request)
    hello.reply.then(
      () => {
        if (this.socket !== socket) return
        this.ready = true
        this.failedConnects = 0
        this.config.onEvent({ type: 'connected', workerId: this.config.workerId })
        for (const request of this.pending.values()) this.transmit(request)
        this.wakeReadyWaiters()
        this.config.onReady()
      },
      (error: unknown) => {
        if (this.socket !== socket || error instanceof ConnectionLostError) return
        this.config.onError(asError(error))
        this.abandonSocket(socket, 'hello refused')
      },
    )
  }

  private receive(data: unknown): void {
    const frame = parseFrame(data)
    if (!frame) return
    const request = frame.ref === undefined ? undefined : this.pending.get(String(frame.ref))
    if (!request) return this.config.onPush(frame)
    this.pending.delete(request.frame.ref)
    clearTimeout(request.timer)
    if (frame.op === 'error') {
      request.reject(new WorkerProtocolError(String(frame.code ?? 'error'), String(frame.message ?? '')))
    } else {
      request.resolve(frame)
    }
  }

  /** Stop listening to a socket we no longer trust, and handle it as closed. */
  private abandonSocket(socket: WebSocketLike, reason: string): void {
    if (this.socket !== socket) return
    try {
      socket.close(4000, reason)
    } catch {
      // Already closing: nothing to do.
    }
    this.lost(4000, reason)
  }

  private lost(code: number, reason: string): void {
    const wasReady = this.ready
    this.socket = null
    this.ready = false
    this.settleOnDisconnect(false)
    if (this.closed) return
    // 1012 is the server restarting (contract §9): expected, not an error.
    if (!wasReady && code !== 1012) return void this.failedToConnect(code, reason)
    const delayMs = this.nextDelayMs(!wasReady)
    this.config.onEvent({ type: 'disconnected', code, reason, reconnectInMs: delayMs })
    this.scheduleReconnect(delayMs)
  }

  /**
   * A WebSocket refused at the upgrade shows only close code 1006, whatever the HTTP status: ask the same URL
   * over plain HTTP, where the server answers 401/403 for a bad token (426 for a good one). A refused token
   * stops the worker; anything else is retried with backoff.
   */
  private async failedToConnect(code: number, reason: string): Promise<void> {
    const refusal = await probeToken(this.config.url)
    if (this.closed) return
    if (refusal) {
      this.close()
      return this.config.onRefused(refusal)
    }
    const delayMs = this.nextDelayMs(true)
    this.config.onEvent({ type: 'disconnected', code, reason, reconnectInMs: delayMs })
    this.config.onError(new Error(`could not connect to the workers gateway (close code ${code}); retrying in ${delayMs} ms`))
    this.scheduleReconnect(delayMs)
  }

  private settleOnDisconnect(forGood: boolean): void {
    for (const [ref, request] of this.pending) {
      clearTimeout(request.timer)
      if (request.retry && !forGood) continue
      this.pending.delete(ref)
      request.reject(new ConnectionLostError(forGood ? 'worker closed' : 'connection lost'))
    }
  }

  /** Exponential, capped, with jitter so a fleet does not reconnect in step after a restart. */
  private nextDelayMs(failed: boolean): number {
    if (failed) this.failedConnects += 1
    const { reconnectMinMs, reconnectMaxMs } = this.config
    const ceiling = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** this.failedConnects)
    return Math.round(ceiling * (0.5 + Math.random() / 2))
  }

  private scheduleReconnect(delayMs: number): void {
    clearTimeout(this.reconnectTimer)
    this.reconnectTimer = setTimeout(() => this.open(), delayMs)
  }

  private wakeReadyWaiters(): void {
    const waiters = this.readyWaiters
    this.readyWaiters = []
    for (const wake of waiters) wake()
  }
}

// ── The worker: claim loops, jobs, close ───────────────────────────────────

interface RunningJob {
  process: Process
  controller: AbortController
  context: JobContext
  /** The server's code when it stopped the job (`cancelled`, `not_owner`, …). */
  stopCode?: string
}

type Outcome =
  | { op: 'complete'; result_summary?: Record<string, unknown>; review: boolean }
  | { op: 'fail'; error: string }

class Worker {
  private readonly connection: WorkerConnection
  private readonly jobs = new Map<number, RunningJob>()
  /** Running jobs including their final frame, for close() to wait on. */
  private readonly running = new Set<Promise<void>>()
  private readonly slots: Promise<void>[] = []
  /** Jobs holding a slot (running, or sending their final frame). */
  private busy = 0
  /** Slots that claims in flight ask for. */
  private claiming = 0
  private readonly concurrency: number
  private slotChanged: (() => void) | null = null
  /** Aborted by close(): cuts claim-error sleeps short. */
  private readonly closing = new AbortController()
  private closed: Promise<void> | undefined
  private stop!: (outcome: { reason: 'closed' | 'unauthenticated'; error?: WorkerAuthError }) => void
  readonly stopped = new Promise<{ reason: 'closed' | 'unauthenticated'; error?: WorkerAuthError }>((resolve) => {
    this.stop = resolve
  })

  constructor(
    url: string,
    private readonly workerId: string,
    WebSocketImpl: WebSocketConstructor,
    private readonly options: WorkerOptions,
  ) {
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1))
    this.connection = new WorkerConnection({
      url,
      workerId,
      WebSocket: WebSocketImpl,
      reconnectMinMs: options.reconnectMinMs ?? 500,
      reconnectMaxMs: options.reconnectMaxMs ?? 30_000,
      onReady: () => this.heartbeatAll(),
      onPush: (frame) => this.onPush(frame),
      onError: (error) => this.report(error),
      onEvent: (event) => this.emit(event),
      onRefused: (error) => this.refused(error),
    })
  }

  /** The token was refused: report it once and stop; running jobs are abandoned (nothing can report for them). */
  private refused(error: WorkerAuthError): void {
    this.report(error)
    this.emit({ type: 'stopped', reason: 'unauthenticated', error })
    this.stop({ reason: 'unauthenticated', error })
    void this.close({ timeoutMs: 0 })
  }

  start(): void {
    this.connection.open()
    this.slots.push(this.claimLoop())
  }

  close(options: CloseOptions = {}): Promise<void> {
    this.closed ??= this.shutDown(options.timeoutMs ?? Infinity).then(() => {
      this.emit({ type: 'stopped', reason: 'closed' })
      this.stop({ reason: 'closed' })
    })
    return this.closed
  }

  private async shutDown(timeoutMs: number): Promise<void> {
    this.closing.abort()
    const drained = await withTimeout(this.drain(), timeoutMs)
    if (!drained) await this.abandonJobs()
    // A claim still waiting on the server is dropped with the socket.
    this.connection.close()
    // Slots are awaited only when their jobs finished: an aborted handler that
    // ignores its signal must not hold close() forever.
    if (drained) await Promise.all(this.slots)
  }

  /** Keeps every free slot covered by a claim in flight: one claim for all the slots free at once. */
  private async claimLoop(): Promise<void> {
    while (!this.closing.signal.aborted) {
      await this.connection.whenReady()
      if (this.closing.signal.aborted) return
      const changed = new Promise<void>((resolve) => (this.slotChanged = resolve))
      const free = this.concurrency - this.busy - this.claiming
      if (free > 0) void this.claimInto(free)
      await changed
    }
  }

  private notifySlots(): void {
    const wake = this.slotChanged
    this.slotChanged = null
    wake?.()
  }

  private async claimInto(slots: number): Promise<void> {
    this.claiming += slots
    try {
      // A process claimed while closing is still ours: run it rather than leave it leased.
      for (const process of await this.claim(slots)) this.launch(process)
    } finally {
      this.claiming -= slots
      this.notifySlots()
    }
  }

  /** Runs a claimed process in a slot; the processes its final frame claimed take the slot next. */
  private launch(process: Process): void {
    this.busy += 1
    void this.track(
      this.runJob(process).then((next) => {
        this.busy -= 1
        for (const p of next) this.launch(p)
        this.notifySlots()
      }),
    )
  }

  private async claim(max: number): Promise<Process[]> {
    const waitMs = Math.min(30_000, this.options.claimWaitMs ?? 25_000)
    try {
      const reply = await this.connection.request(
        { op: 'claim', types: this.options.types, wait_ms: waitMs, ...(max > 1 ? { max } : {}) },
        { timeoutMs: waitMs + REPLY_TIMEOUT_MS },
      )
      if (reply.op !== 'claimed') return []
      // `processes` from a server with batch claims; `process` alone from an older one.
      if (Array.isArray(reply.processes)) return reply.processes as Process[]
      return reply.process ? [reply.process as Process] : []
    } catch (error) {
      if (error instanceof WorkerProtocolError) {
        this.report(error)
        await abortableSleep(CLAIM_ERROR_DELAY_MS, this.closing.signal)
      }
      return [] // a lost connection: the loop waits for the next one
    }
  }

  /** Resolves with the processes the final frame claimed for this slot (complete-and-claim-next). */
  private async runJob(process: Process): Promise<Process[]> {
    const controller = new AbortController()
    const job: RunningJob = {
      process,
      controller,
      context: {
        signal: controller.signal,
        attempt: process.attempts,
        progress: (percent, message) =>
          this.sendForJob(job, { op: 'progress', progress: clampPercent(percent), message }),
        log: (message) => this.sendForJob(job, { op: 'log', message }),
      },
    }
    this.jobs.set(process.id, job)
    this.emit({ type: 'claimed', process })
    const heartbeat = setInterval(
      () => void this.sendForJob(job, { op: 'heartbeat' }),
      this.options.heartbeatIntervalMs ?? 10_000,
    )
    let outcome: Outcome
    try {
      outcome = await this.invokeHandler(job)
    } finally {
      clearInterval(heartbeat)
      this.jobs.delete(process.id)
    }
    if (controller.signal.aborted) {
      this.reportStopped(job)
      return []
    }
    return this.finish(job, outcome)
  }

  private async invokeHandler(job: RunningJob): Promise<Outcome> {
    try {
      const result = await this.options.handler(job.process, job.context)
      return { op: 'complete', result_summary: result?.result_summary, review: result?.review === true }
    } catch (error) {
      return { op: 'fail', error: asError(error).message || 'failed' }
    }
  }

  /**
   * Send the terminal frame: kept across reconnects until the server answers,
   * and re-sent while the server says its database is unavailable.
   */
  private async finish(job: RunningJob, outcome: Outcome): Promise<Process[]> {
    const { process } = job
    // The slot's next process comes with the ack, unless the worker is closing.
    const next = this.closing.signal.aborted ? {} : { claim: { types: this.options.types, max: 1, wait_ms: 0 } }
    const frame: Frame =
      outcome.op === 'complete'
        ? {
            op: 'complete',
            process_id: process.id,
            attempt: process.attempts,
            result_summary: outcome.result_summary,
            review: outcome.review || undefined,
            ...next,
          }
        : { op: 'fail', process_id: process.id, attempt: process.attempts, error: outcome.error, ...next }
    for (let refusals = 0; ; refusals++) {
      try {
        const ack = await this.connection.request(frame, { retry: true })
        if (outcome.op === 'complete') this.emit({ type: 'completed', process, review: outcome.review })
        else this.emit({ type: 'failed', process, error: outcome.error })
        return Array.isArray(ack.processes) ? (ack.processes as Process[]) : []
      } catch (error) {
        if (!(error instanceof WorkerProtocolError)) return [] // closed for good meanwhile
        if (TRANSIENT_CODES.has(error.code)) {
          this.report(error)
          await delay(Math.min(30_000, 1000 * 2 ** refusals))
          continue
        }
        // A result the server will not take (over 64 KiB, say) must not leave the process running.
        if (outcome.op === 'complete' && error.code === 'invalid_message') {
          return this.finish(job, { op: 'fail', error: `result refused: ${error.message}` })
        }
        if (error.code === 'cancelled') this.emit({ type: 'cancelled', process })
        else this.emit({ type: 'lost', process, code: error.code })
        return []
      }
    }
  }

  /** progress/heartbeat/log: best effort; an answer that we lost the job aborts it. */
  private async sendForJob(job: RunningJob, frame: Frame): Promise<boolean> {
    if (job.controller.signal.aborted || !this.jobs.has(job.process.id)) return false
    try {
      await this.connection.request({ ...frame, process_id: job.process.id, attempt: job.process.attempts })
      return true
    } catch (error) {
      if (error instanceof WorkerProtocolError) {
        if (LOSING_CODES.has(error.code)) this.stopJob(job, error.code === 'cancelled' ? 'cancelled' : 'lost', error.code)
        else this.report(error)
      }
      return false
    }
  }

  private onPush(frame: Frame): void {
    if (frame.op === 'cancel') {
      const job = this.jobs.get(Number(frame.process_id))
      // The server also says `cancel` when the lease sweep failed the process (`status: failed`).
      const cancelled = frame.status === undefined || frame.status === 'cancelled'
      if (job) this.stopJob(job, cancelled ? 'cancelled' : 'lost', cancelled ? 'cancelled' : String(frame.status))
    } else if (frame.op === 'error') {
      this.report(new WorkerProtocolError(String(frame.code ?? 'error'), String(frame.message ?? '')))
    }
  }

  private stopJob(job: RunningJob, reason: JobStoppedError['reason'], code: string): void {
    if (job.controller.signal.aborted) return
    job.stopCode = code
    job.controller.abort(new JobStoppedError(reason))
  }

  private reportStopped(job: RunningJob): void {
    const { reason } = job.controller.signal.reason as JobStoppedError
    if (reason === 'cancelled') this.emit({ type: 'cancelled', process: job.process })
    else if (reason === 'lost') {
      this.emit({ type: 'lost', process: job.process, code: job.stopCode ?? 'not_owner' })
    }
    // 'closing': abandonJobs() already failed it.
  }

  /** After a reconnect: tell the server at once we are alive, and learn of cancels we missed. */
  private heartbeatAll(): void {
    for (const job of this.jobs.values()) void this.sendForJob(job, { op: 'heartbeat' })
  }

  private async drain(): Promise<void> {
    // Loop: a claim answered during close starts one more job.
    while (this.running.size > 0) await Promise.all(this.running)
  }

  private async abandonJobs(): Promise<void> {
    const failures = [...this.jobs.values()].map((job) => {
      this.stopJob(job, 'closing', 'closing')
      const error = 'worker shut down before the job finished'
      const frame = { op: 'fail', process_id: job.process.id, attempt: job.process.attempts, error }
      return this.connection.request(frame).then(
        () => this.emit({ type: 'failed', process: job.process, error }),
        () => {}, // not connected: the server's lease timeout will fail it
      )
    })
    await withTimeout(Promise.all(failures), ABANDON_ACK_MS)
  }

  private track(job: Promise<void>): Promise<void> {
    this.running.add(job)
    return job.finally(() => this.running.delete(job))
  }

  private emit(event: WorkerEvent): void {
    try {
      this.options.onEvent?.(event)
    } catch (error) {
      console.error('worker: onEvent threw', error)
    }
  }

  private report(error: Error): void {
    try {
      this.options.onError?.(error)
    } catch (callbackError) {
      console.error('worker: onError threw', callbackError)
    }
  }
}

// ── Helpers ────────────────────────────────────────────────────────────────

const PROBE_TIMEOUT_MS = 5000

/** The server's refusal of this socket URL's token (401/403 over plain HTTP), or null: no fetch, no answer, or not refused. */
async function probeToken(socketUrl: string): Promise<WorkerAuthError | null> {
  const fetchImpl = (globalThis as { fetch?: typeof fetch }).fetch
  if (!fetchImpl) return null
  const url = new URL(socketUrl)
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:'
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), PROBE_TIMEOUT_MS)
  try {
    const response = await fetchImpl(url.toString(), { signal: controller.signal })
    if (response.status !== 401 && response.status !== 403) {
      await response.body?.cancel().catch(() => {})
      return null
    }
    let code = response.status === 401 ? 'unauthenticated' : 'forbidden'
    let message = `worker token refused (HTTP ${response.status})`
    try {
      const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } }
      if (typeof body.error?.code === 'string') code = body.error.code
      if (typeof body.error?.message === 'string') message = `worker token refused: ${body.error.message}`
    } catch {
      // Not the contract's body (a proxy's page): the status says enough.
    }
    return new WorkerAuthError(response.status, code, message)
  } catch {
    return null
  } finally {
    clearTimeout(timer)
  }
}

function workerSocketUrl(url: string, token: string): string {
  const target = new URL(url)
  if (target.protocol === 'http:') target.protocol = 'ws:'
  else if (target.protocol === 'https:') target.protocol = 'wss:'
  if (!target.pathname.endsWith('/workers/ws')) {
    target.pathname = `${target.pathname.replace(/\/+$/, '')}/workers/ws`
  }
  // `?token=` rather than a header: not every WebSocket client can set headers.
  target.searchParams.set('token', token)
  return target.toString()
}

function parseFrame(data: unknown): Frame | null {
  if (typeof data !== 'string') return null
  try {
    const value = JSON.parse(data) as unknown
    return value && typeof value === 'object' && typeof (value as Frame).op === 'string'
      ? (value as Frame)
      : null
  } catch {
    return null
  }
}

function clampPercent(percent: number): number {
  return Number.isFinite(percent) ? Math.min(100, Math.max(0, Math.round(percent))) : 0
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/** True when the promise settled first; clears its timer either way (no lingering handle). */
async function withTimeout(promise: Promise<unknown>, ms: number): Promise<boolean> {
  if (!Number.isFinite(ms)) {
    await promise
    return true
  }
  let timer: ReturnType<typeof setTimeout> | undefined
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([promise.then(() => true), timedOut])
  } finally {
    clearTimeout(timer)
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
