// The worker: claim loops over free slots, one job per claimed process, terminal frames kept until acked, close.
import type { Process } from './shapes.ts'
import { abortableSleep, asError } from './util.ts'
import {
  type ChildInfo,
  type ChildSpec,
  type CloseOptions,
  type JobContext,
  JobStoppedError,
  type WebSocketConstructor,
  type WorkerAuthError,
  type WorkerEvent,
  type WorkerOptions,
  WorkerProtocolError,
} from './worker-api.ts'
import {
  ABANDON_ACK_MS,
  CLAIM_ERROR_DELAY_MS,
  type ConnectionConfig,
  type Frame,
  LOSING_CODES,
  REPLY_TIMEOUT_MS,
  TRANSIENT_CODES,
  WorkerConnection,
} from './worker-connection.ts'

/** A spawn frame's children stay under this many bytes of JSON: frames over 64 KiB are refused. */
const SPAWN_FRAME_BYTES = 48 * 1024

type StopOutcome = { reason: 'closed' | 'unauthenticated'; error?: WorkerAuthError }

/** Stands in for the WebSocket class while `ws` loads; the connection opens only once it has. */
const NotLoadedYet = class {
  constructor() {
    throw new Error('the WebSocket class is still loading')
  }
} as unknown as WebSocketConstructor

interface RunningJob {
  process: Process
  controller: AbortController
  context: JobContext
  /** The server's code when it stopped the job (`cancelled`, `not_owner`, …). */
  stopCode?: string
}

type Outcome = { op: 'complete'; result_summary?: Record<string, unknown>; review: boolean } | { op: 'fail'; error: string; stack?: string }

/** The server keeps a fail's stack up to this many characters (STACK_MAX_CHARS); cut here, the frame stays under 64 KiB. */
const STACK_MAX_CHARS = 8000
/** The thrown error's stack, if it has one, cut to what the server keeps. */
function stackOf(error: unknown): string | undefined {
  const stack = error instanceof Error && typeof error.stack === 'string' ? error.stack : undefined
  return stack ? stack.slice(0, STACK_MAX_CHARS) : undefined
}

export class Worker {
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
  /** `stopped` is settled and its event emitted once, by whichever comes first: a refusal, a close, no WebSocket. */
  private hasStopped = false
  private resolveStopped!: (outcome: StopOutcome) => void
  private rejectStopped!: (error: Error) => void
  readonly stopped = new Promise<StopOutcome>((resolve, reject) => {
    this.resolveStopped = resolve
    this.rejectStopped = reject
  })
  /** Set once the WebSocket class is known (at once, or when `ws` has been loaded). */
  private readonly connectionConfig: ConnectionConfig
  private readonly webSocketLoad: Promise<WebSocketConstructor> | null

  constructor(
    url: string,
    workerId: string,
    WebSocketImpl: WebSocketConstructor | Promise<WebSocketConstructor>,
    private readonly options: WorkerOptions,
    headers?: Record<string, string>,
  ) {
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1))
    this.webSocketLoad = WebSocketImpl instanceof Promise ? WebSocketImpl : null
    this.connectionConfig = {
      url,
      workerId,
      WebSocket: WebSocketImpl instanceof Promise ? NotLoadedYet : WebSocketImpl,
      headers,
      reconnectMinMs: options.reconnectMinMs ?? 500,
      reconnectMaxMs: options.reconnectMaxMs ?? 30_000,
      onReady: () => this.heartbeatAll(),
      onPush: (frame) => this.onPush(frame),
      onError: (error) => this.report(error),
      onEvent: (event) => this.emit(event),
      onRefused: (error) => this.refused(error),
    }
    this.connection = new WorkerConnection(this.connectionConfig)
  }

  private settleStopped(outcome: StopOutcome): void {
    if (this.hasStopped) return
    this.hasStopped = true
    this.emit({ type: 'stopped', ...outcome })
    this.resolveStopped(outcome)
  }

  /** The token was refused: report it once and stop; running jobs are abandoned (nothing can report for them). */
  private refused(error: WorkerAuthError): void {
    this.report(error)
    this.settleStopped({ reason: 'unauthenticated', error })
    void this.close({ timeoutMs: 0 })
  }

  start(): void {
    if (!this.webSocketLoad) this.connection.open()
    else {
      this.webSocketLoad.then(
        (WebSocketImpl) => {
          this.connectionConfig.WebSocket = WebSocketImpl
          this.connection.open()
        },
        (error: Error) => {
          // No WebSocket at all: `stopped` rejects, so an unhandled one ends a Node process with the message.
          this.report(error)
          this.hasStopped = true
          this.rejectStopped(error)
          void this.close({ timeoutMs: 0 })
        },
      )
    }
    this.slots.push(this.claimLoop())
  }

  close(options: CloseOptions = {}): Promise<void> {
    this.closed ??= this.shutDown(options.timeoutMs ?? Infinity).then(() => this.settleStopped({ reason: 'closed' }))
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
        progress: (percent, message) => this.sendForJob(job, { op: 'progress', progress: clampPercent(percent), message }),
        log: (message) => this.sendForJob(job, { op: 'log', message }),
        output: (chunk) => this.sendForJob(job, { op: 'output', chunk }),
        update: ({ result_summary, message }) => this.sendForJob(job, { op: 'update', result_summary, ...(message === undefined ? {} : { message }) }),
        spawn: (children) => this.spawnFor(job, children),
        children: async (o = {}) => {
          const reply = await this.connection.request({ op: 'children', process_id: job.process.id, attempt: job.process.attempts, ...o })
          return { children: reply.children as ChildInfo[], next_after: (reply.next_after as number | null) ?? null }
        },
      },
    }
    this.jobs.set(process.id, job)
    this.emit({ type: 'claimed', process })
    const heartbeat = setInterval(() => void this.sendForJob(job, { op: 'heartbeat' }), this.options.heartbeatIntervalMs ?? 10_000)
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
      const stack = stackOf(error)
      return { op: 'fail', error: asError(error).message || 'failed', ...(stack ? { stack } : {}) }
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
        : {
            op: 'fail',
            process_id: process.id,
            attempt: process.attempts,
            error: outcome.error,
            ...(outcome.stack ? { stack: outcome.stack } : {}),
            ...next,
          }
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
          await abortableSleep(Math.min(30_000, 1000 * 2 ** refusals))
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

  /** ctx.spawn: the children in frames under the 64 KiB frame limit, one after another; their ids in order. */
  private async spawnFor(job: RunningJob, children: ChildSpec[]): Promise<number[]> {
    const ids: number[] = []
    let chunk: ChildSpec[] = []
    let bytes = 0
    const send = async () => {
      if (chunk.length === 0) return
      const reply = await this.connection.request({ op: 'spawn', process_id: job.process.id, attempt: job.process.attempts, children: chunk })
      ids.push(...(reply.process_ids as number[]))
      chunk = []
      bytes = 0
    }
    for (const child of children) {
      const size = JSON.stringify(child).length + 1
      if (bytes + size > SPAWN_FRAME_BYTES || chunk.length >= 10_000) await send()
      chunk.push(child)
      bytes += size
    }
    await send()
    return ids
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

function clampPercent(percent: number): number {
  return Number.isFinite(percent) ? Math.min(100, Math.max(0, Math.round(percent))) : 0
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
