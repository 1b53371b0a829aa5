// The worker SDK's public types: the handler's context and result, options, events, the handle, the errors.
import type { Process } from './shapes.ts'

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
   * Report progress (rounded and clamped to 0–100). Resolves true once the server
   * has accepted it (progress is live state: acked from memory, shown to streams at
   * once and written to the database behind the ack), false when dropped
   * (connection down) or refused. Never rejects, so it is safe to call without awaiting.
   */
  progress(percent: number, message?: string): Promise<boolean>
  /** Append an event to the process's log; resolves true once it is committed, otherwise as `progress`. */
  log(message: string): Promise<boolean>
  /**
   * Append a chunk of live output (text as a model writes it, or any JSON value but null): streamed to
   * watchers as `event: output` and kept with the process (up to the server's OUTPUT_MAX_BYTES). Live state,
   * resolving as `progress` does; false also when the process's output is full (`output_too_large`).
   */
  output(chunk: string | number | boolean | unknown[] | Record<string, unknown>): Promise<boolean>
  /**
   * Merge a JSON merge patch (RFC 7386) into the process's result_summary while it runs (`null` removes a
   * key), and optionally set its message: "1,200 rows imported, 3 errors". Live state, resolving as
   * `progress` does. The result the handler returns supersedes it; returning none keeps it.
   */
  update(patch: { result_summary: Record<string, unknown>; message?: string }): Promise<boolean>
  /**
   * Trees: make children of this process, committed before it resolves with their ids (sent in
   * frames of at most ~48 KiB each). The process then waits for them when the handler returns (it stays
   * `running`, with no lease, until they end). Rejects with a WorkerProtocolError (`cancelled`, `not_owner`, …).
   */
  spawn(children: ChildSpec[]): Promise<number[]>
  /** A page of this process's children, oldest first (a finalize run reads them here); `next_after` for the next. */
  children(options?: { status?: string; after?: number; limit?: number }): Promise<{ children: ChildInfo[]; next_after: number | null }>
}

/** A child to spawn: as a create's item (type, metadata, queue options), with its share of the progress. */
export interface ChildSpec {
  type: string
  metadata?: Record<string, unknown>
  priority?: number
  max_attempts?: number
  delay_ms?: number
  run_at?: string
  weight?: number
  child_failures?: 'fail' | 'tolerate'
  finalize?: boolean
}

/** What ctx.children tells of each child. */
export interface ChildInfo {
  id: number
  type: string
  status: string
  progress: number
  message: string | null
  error: string | null
  attempts: number
  metadata: Record<string, unknown>
  result_summary: Record<string, unknown> | null
  finished_at: string | null
}

/** What a handler returns. Review is requested here, not through the context. */
export interface JobResult {
  result_summary?: Record<string, unknown>
  /** Hand the result to a human: the process goes to `waiting_review` instead of `completed`. */
  review?: boolean
}

/** Return (or resolve) to complete the process; throw (or reject) to fail it with the error's message. */
export type JobHandler = (process: Process, ctx: JobContext) => Promise<JobResult | void> | JobResult | void

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
/** A WebSocket class; the second argument is passed only to those known to take `{ headers }` (Bun's, `ws`). */
export type WebSocketConstructor = new (url: string, options?: { headers: Record<string, string> }) => WebSocketLike

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
  /**
   * The WebSocket class. Default: the global `WebSocket` (browsers, Bun, Node 22+), else the `ws` package's,
   * which the SDK imports by itself (`npm install ws`: an optional peer dependency).
   */
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
   * Rejects (a TypeError saying `npm install ws`) when the runtime has no WebSocket and `ws` is not installed.
   */
  readonly stopped: Promise<{ reason: 'closed' | 'unauthenticated'; error?: WorkerAuthError }>
}

/** The server refused the worker token at the upgrade (HTTP 401 or 403): retrying cannot help. */
export class WorkerAuthError extends Error {
  override readonly name = 'WorkerAuthError'

  constructor(
    readonly status: number,
    /** The API's error code: `unauthenticated` or `forbidden`. */
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
