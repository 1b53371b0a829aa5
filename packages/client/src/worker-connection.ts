// The worker's connection: hello, request/reply by ref, reconnect with backoff, and the token probe that
// tells a refused token from a server that is down.
import { loadWebSocket } from './node-websocket.ts'
import { type WebSocketConstructor, type WebSocketLike, WorkerAuthError, type WorkerEvent, WorkerProtocolError } from './worker-api.ts'
import { asError } from './util.ts'

export const REPLY_TIMEOUT_MS = 15_000
/** Failing the leftover jobs at close: how long to wait for those acks. */
export const ABANDON_ACK_MS = 2000
/** A refused claim (bad `types`, say) is retried this much later rather than in a tight loop. */
export const CLAIM_ERROR_DELAY_MS = 5000
/** The codes by which the server says a process is no longer this worker's to report on. */
export const LOSING_CODES = new Set(['cancelled', 'not_owner', 'not_found', 'invalid_transition'])
/** Beyond the protocol's codes, the server answers these when its database is down: worth retrying. */
export const TRANSIENT_CODES = new Set(['unavailable', 'internal'])

export type Frame = { op: string; ref?: string; [field: string]: unknown }

/** The connection dropped before the reply came (or the worker was closed). */
export class ConnectionLostError extends Error {
  override readonly name = 'ConnectionLostError'
}

export interface PendingRequest {
  frame: Frame & { ref: string }
  /** Kept across reconnects and re-sent after the next hello. */
  retry: boolean
  timeoutMs: number
  timer?: ReturnType<typeof setTimeout>
  resolve: (reply: Frame) => void
  reject: (error: Error) => void
}

export interface ConnectionConfig {
  url: string
  workerId: string
  WebSocket: WebSocketConstructor
  /** Sent with the upgrade where the WebSocket class takes them (Bun, the `ws` package): the token's header. */
  headers?: Record<string, string>
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

export class WorkerConnection {
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
      socket = this.config.headers ? new this.config.WebSocket(this.config.url, { headers: this.config.headers }) : new this.config.WebSocket(this.config.url)
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
    // 1012 is the server restarting (README: Worker protocol): expected, not an error.
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

export const PROBE_TIMEOUT_MS = 5000

/** The server's refusal of this socket URL's token (401/403 over plain HTTP), or null: no fetch, no answer, or not refused. */
export async function probeToken(socketUrl: string): Promise<WorkerAuthError | null> {
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
      // Not the API's error body (a proxy's page): the status says enough.
    }
    return new WorkerAuthError(response.status, code, message)
  } catch {
    return null
  } finally {
    clearTimeout(timer)
  }
}

/** The socket URL; with a token, carrying it as `?token=` (for runtimes that cannot send a header: browsers). */
export function workerSocketUrl(url: string, token: string | null): string {
  const target = new URL(url)
  if (target.protocol === 'http:') target.protocol = 'ws:'
  else if (target.protocol === 'https:') target.protocol = 'wss:'
  if (!target.pathname.endsWith('/workers/ws')) {
    target.pathname = `${target.pathname.replace(/\/+$/, '')}/workers/ws`
  }
  if (token !== null) target.searchParams.set('token', token)
  return target.toString()
}

export function parseFrame(data: unknown): Frame | null {
  if (typeof data !== 'string') return null
  try {
    const value = JSON.parse(data) as unknown
    return value && typeof value === 'object' && typeof (value as Frame).op === 'string' ? (value as Frame) : null
  } catch {
    return null
  }
}

export type Transport =
  | { kind: 'header'; WebSocket: WebSocketConstructor }
  | { kind: 'query'; WebSocket: WebSocketConstructor }
  /** Node: the `ws` package, loading; if it is not installed, `fallback` (the global class) with `?token=`. */
  | { kind: 'ws-or-query'; WebSocket: Promise<WebSocketConstructor>; fallback: WebSocketConstructor | undefined }

/** Which WebSocket class carries the worker token, and how (exported for the tests: each runtime's choice). */
export function chooseTransport(o: {
  passed: WebSocketConstructor | undefined
  global: WebSocketConstructor | undefined
  isBun: boolean
  isNode: boolean
  load?: () => Promise<WebSocketConstructor>
}): Transport {
  if (o.passed) return { kind: 'query', WebSocket: o.passed }
  if (o.global && o.isBun) return { kind: 'header', WebSocket: o.global }
  if (o.isNode || !o.global) return { kind: 'ws-or-query', WebSocket: (o.load ?? loadWebSocket<WebSocketConstructor>)(), fallback: o.global }
  return { kind: 'query', WebSocket: o.global }
}

/** A WebSocket class that ignores the headers it is offered and puts the token in the URL instead. */
export function withQueryToken(Base: WebSocketConstructor, token: string): WebSocketConstructor {
  return function QueryTokenWebSocket(url: string) {
    const target = new URL(url)
    target.searchParams.set('token', token)
    return new Base(target.toString())
  } as unknown as WebSocketConstructor
}
