// One Server-Sent Events response (SseSession), shared by the process stream (process-stream.ts) and the
// workspace stream (workspace-stream.ts): framing, conflation for slow readers, keepalive, the 25-second end.
//
// A state is written the moment it arrives if the socket keeps up (the body stream's one-chunk queue is
// empty); otherwise it waits in `pending`, conflated per process id to the newest version, until the socket
// drains and pull() writes it. So a slow reader costs one queued chunk plus one pending state per process it
// watches, never a growing queue.
//
// Fan-out is the hot path (one state, thousands of streams), so nothing is done per stream and per event that
// can be done once per state: the hub hands every listener the same Process object, whose JSON and encoded
// frame are built once and shared; a stream that keeps up gets the shared bytes enqueued directly, with no
// promise, map entry or timer per event (one timer per stream, for its keepalive or its end). Measured with
// `npm run bench -- fanout` (5,000 streams, 100 processes, a broadcast every 500 ms): server CPU per 100k events
// 3.9 → 2.3 s and RSS per stream 31 → 13 KiB, against a JSON.stringify per stream, a promise round trip and a
// new timer per event before.
import type { HubMessage } from '../hub/hub'
import { processJson } from './hub-rules'
import type { Process } from './model'
import { isDone } from './states'

export interface StreamSettings {
  maxMs: number
  keepaliveMs: number
  retryMs: number
  /** A client ahead of every state known here looks at the row again after this (a write-behind interval and more). */
  liveRecheckMs: number
}

const encoder = new TextEncoder()
const KEEPALIVE = encoder.encode(': keepalive\n\n')

function frameText(process: Process, withIds: boolean, done: boolean): string {
  return `${withIds ? `id: ${process.version}\n` : ''}${done ? 'event: done\n' : ''}data: ${processJson(process)}\n\n`
}

/** A state's encoded SSE frames (with/without `id:`, with/without `event: done`), built on first use. */
const framesOfState = new WeakMap<Process, Array<Uint8Array | undefined>>()

/** The same bytes go to every stream sending this state (a chunk is only read, never transferred). */
function frameBytes(process: Process, withIds: boolean, done: boolean): Uint8Array {
  let frames = framesOfState.get(process)
  if (frames === undefined) framesOfState.set(process, (frames = []))
  const key = (withIds ? 2 : 0) + (done ? 1 : 0)
  return (frames[key] ??= encoder.encode(frameText(process, withIds, done)))
}

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  'X-Accel-Buffering': 'no',
  Connection: 'keep-alive',
}

/** Counts open streams for /metrics and tests, and the workspace snapshot rows read (tests). */
/** `conflated`: unsent states replaced by a newer one of the same process (a slow reader skipping them). */
export const streamStats = { open: 0, opened: 0, snapshotRows: 0, conflated: 0 }

export type Filter = (process: Process) => boolean

interface SessionOptions {
  settings: StreamSettings
  /** Per-process streams end with `event: done` on a done status; workspace streams never do. */
  endsOnDone: boolean
  /** Workspace streams carry no `id:` line: a process's own `version` says what is newer. */
  withIds: boolean
  filter?: Filter
  /**
   * Workspace streams: queues the next snapshot page in the head (sendSnapshot); resolves false once the
   * snapshot is all read. Called again only when the socket has taken everything queued before.
   */
  readMore?: () => Promise<boolean>
  onClose?: () => void
  /**
   * Process streams: live output (README: Live output). Reads the chunks after `after` (and before `before`)
   * from the table, ascending: what a reconnect missed, or a gap between live chunks (published before this
   * stream subscribed and not yet written when it read).
   */
  output?: OutputSource
}

export interface OutputSource {
  read(after: number, before: number | undefined, limit: number): Promise<{ seq: number; text: string }[]>
  /** Output bytes a stream may hold unsent (a slow reader); past it the stream ends and the client resumes. */
  maxQueuedBytes: number
  /** After the catch-up, the table is read once more after this (ms): a few output write-behind intervals. */
  recheckMs: number
}

/** A gap between live chunks is looked for in the table this many times (ms between), then given up on. */
const GAP_RETRIES_MS = [0, 20, 50, 100, 250, 500]
const OUTPUT_PAGE = 1000

/**
 * Event ids of a process stream with output (README: Live output): `<version>` while it has sent no chunk,
 * then `<version>.<seq>` on every event: the last state's version and the last chunk's seq it has sent, so
 * the one Last-Event-ID an EventSource sends back says where both resume.
 */
export interface EventCursor {
  version: number
  seq: number
}

/** Every open stream, for shutdown. */
const sessions = new Set<SseSession>()

export class SseSession {
  private readonly pending = new Map<number, Process>()
  private readonly sent = new Map<number, number>()
  private head: string[] = []
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null
  private closed = false
  /** End once what is queued is written: `event: done` was sent, or the window is over. */
  private ending = false
  /** The head carries `event: done` (a done snapshot): nothing may follow it. */
  private doneInHead = false
  private readonly startedAt = Date.now()
  private lastWriteAt = Date.now()
  private unsubscribes: Array<() => void> = []
  private timer: Timer | null = null
  /** The rest of a workspace snapshot, while some is left to read; `reading` while a page is on its way. */
  private readMoreFn: (() => Promise<boolean>) | null
  private reading = false
  /** Live output: chunks queued to write, the highest seq queued or sent, and the cursor of the event ids. */
  private outQueue: { seq: number; text: string }[] = []
  private outQueuedBytes = 0
  private outHigh = 0
  /** While a gap (or a reconnect's catch-up) is read from the table: live chunks wait here, states in pending. */
  private filling = false
  private held: HubMessage[] = []
  private idVersion = 0
  private idSeq = 0

  constructor(private readonly o: SessionOptions) {
    this.readMoreFn = o.readMore ?? null
    streamStats.open++
    streamStats.opened++
    sessions.add(this)
  }

  /** The hub's listener: keep only the newest unsent state per process, and write it if the socket is ready. */
  readonly offer = (process: Process) => {
    if (this.closed) return
    if (this.o.filter && !this.o.filter(process)) return
    if (process.version <= (this.sent.get(process.id) ?? 0)) return
    if (this.pending.size === 0 && this.head.length === 0 && !this.ending && this.outQueue.length === 0 && !this.filling) {
      const controller = this.controller
      if (controller !== null && (controller.desiredSize ?? 0) > 0) {
        // The common case, a socket that keeps up: straight out, nothing kept.
        const done = this.o.endsOnDone && isDone(process.status)
        this.sent.set(process.id, process.version)
        this.lastWriteAt = Date.now()
        controller.enqueue(this.stateBytes(process, done))
        if (done) this.close()
        return
      }
    }
    const queued = this.pending.get(process.id)
    if (queued && queued.version >= process.version) return
    if (queued) streamStats.conflated++
    this.pending.set(process.id, process)
    this.flush()
  }

  /** A state's frame: the shared bytes, or (once this stream has sent output) its own, with a `<version>.<seq>` id. */
  private stateBytes(process: Process, done: boolean): Uint8Array {
    this.idVersion = Math.max(this.idVersion, process.version)
    if (this.idSeq === 0 || !this.o.withIds) return frameBytes(process, this.o.withIds, done)
    return encoder.encode(this.stateText(process, done))
  }

  private stateText(process: Process, done: boolean): string {
    this.idVersion = Math.max(this.idVersion, process.version)
    if (this.idSeq === 0 || !this.o.withIds) return frameText(process, this.o.withIds, done)
    return `id: ${process.version}.${this.idSeq}\n${done ? 'event: done\n' : ''}data: ${processJson(process)}\n\n`
  }

  private outputText(seq: number, text: string): string {
    this.idSeq = seq
    return `id: ${this.idVersion}.${seq}\nevent: output\ndata: ${text}\n\n`
  }

  /** Where the client's Last-Event-ID says it is: chunks up to `seq` are not sent again. */
  resumeAt(cursor: EventCursor) {
    this.idVersion = Math.max(this.idVersion, cursor.version)
    this.idSeq = cursor.seq
    this.outHigh = cursor.seq
  }

  /**
   * The chunks the client has not had, from the table, queued in the head now (before a done snapshot, after a
   * live one); live chunks arriving meanwhile wait, and follow. Ends with a live chunk's gap, if any, filled.
   */
  async catchUpOutput(): Promise<void> {
    const source = this.o.output
    if (!source) return
    this.filling = true
    try {
      for (;;) {
        const rows = await source.read(this.outHigh, undefined, OUTPUT_PAGE)
        for (const row of rows) {
          if (row.seq <= this.outHigh) continue
          this.head.push(this.outputText(row.seq, row.text))
          this.outHigh = row.seq
        }
        if (rows.length < OUTPUT_PAGE) break
      }
    } finally {
      this.filling = false
    }
    this.releaseHeld()
  }

  /** The hub's output listener: every chunk once, in seq order; a gap is read from the table first. */
  readonly offerOutput = (message: HubMessage) => {
    if (this.closed || !this.o.output) return
    if (this.filling) {
      this.held.push(message)
      return
    }
    if (message.seq <= this.outHigh) return
    if (message.seq > this.outHigh + 1) {
      this.held.push(message)
      void this.fillGap(message.seq)
      return
    }
    this.queueOutput(message.seq, message.text)
    this.flush()
  }

  private queueOutput(seq: number, text: string) {
    this.outQueue.push({ seq, text })
    this.outHigh = seq
    this.outQueuedBytes += text.length
    // A reader this far behind is ended: it resumes from the table with its Last-Event-ID.
    if (this.outQueuedBytes > this.o.output!.maxQueuedBytes) this.close()
  }

  /**
   * Looks at the table once more for chunks past the last one here: those accepted just before this stream
   * subscribed, not yet written when the catch-up read, with no live chunk after them to show the gap.
   */
  async recheckOutput(): Promise<void> {
    if (this.filling || this.closed || !this.o.output) return
    this.filling = true
    try {
      const rows = await this.o.output.read(this.outHigh, undefined, OUTPUT_PAGE)
      for (const row of rows) if (row.seq > this.outHigh) this.queueOutput(row.seq, row.text)
    } catch {
      // The database is away: the next live chunk's gap (or the client's next window) reads again.
    } finally {
      this.filling = false
    }
    this.releaseHeld()
  }

  private async fillGap(before: number) {
    const source = this.o.output!
    this.filling = true
    try {
      for (const waitMs of GAP_RETRIES_MS) {
        if (waitMs > 0) await Bun.sleep(waitMs)
        if (this.closed) return
        const rows = await source.read(this.outHigh, before, OUTPUT_PAGE)
        for (const row of rows) if (row.seq > this.outHigh) this.queueOutput(row.seq, row.text)
        if (this.outHigh >= before - 1 || this.closed) break
      }
    } catch {
      // The database is away: handled below, as a gap the table did not fill.
    } finally {
      this.filling = false
    }
    // Still a gap (the write-behind is late, or the database away): skipping it would lose chunks, so the
    // response ends and the client resumes from its Last-Event-ID, which names the last chunk it got.
    if (this.outHigh < before - 1) {
      this.close()
      return
    }
    this.releaseHeld()
  }

  /** Live chunks that waited for a catch-up or a gap, in order (a new gap starts another fill). */
  private releaseHeld() {
    const held = this.held
    this.held = []
    for (let i = 0; i < held.length; i++) {
      const message = held[i]!
      if (message.seq <= this.outHigh) continue
      if (message.seq > this.outHigh + 1) {
        this.held = held.slice(i)
        void this.fillGap(message.seq)
        return
      }
      this.queueOutput(message.seq, message.text)
    }
    this.flush()
  }

  addUnsubscribe(fn: () => void) {
    if (this.closed) fn()
    else this.unsubscribes.push(fn)
  }

  /** The client already holds this version (Last-Event-ID, or a snapshot this stream sent). */
  markSent(process: Process) {
    this.idVersion = Math.max(this.idVersion, process.version)
    this.sent.set(process.id, Math.max(this.sent.get(process.id) ?? 0, process.version))
    const queued = this.pending.get(process.id)
    if (queued && queued.version <= process.version) this.pending.delete(process.id)
  }

  /** The client holds this version of a process (a Last-Event-ID ahead of what is known here): send only newer. */
  markSentVersion(id: number, version: number) {
    this.idVersion = Math.max(this.idVersion, version)
    this.sent.set(id, Math.max(this.sent.get(id) ?? 0, version))
  }

  /** Queues text to go out before any update (the retry line, the snapshot). */
  write(text: string) {
    this.head.push(text)
  }

  /** Sends a state now (the snapshot) unless the client has it; returns whether the stream is over. */
  sendState(process: Process): boolean {
    const done = this.o.endsOnDone && isDone(process.status)
    if (process.version > (this.sent.get(process.id) ?? 0) || done) {
      this.head.push(this.stateText(process, done))
      this.markSent(process)
    }
    if (done) this.ending = this.doneInHead = true
    return done
  }

  /**
   * Queues a workspace snapshot row unless the client has that version or a newer one (sent live); returns
   * the frame's length, 0 if not sent. The caller keeps what the snapshot sent (SnapshotLedger), not `sent`.
   */
  sendSnapshot(process: Process): number {
    if (this.closed || process.version <= (this.sent.get(process.id) ?? 0)) return 0
    const frame = frameText(process, this.o.withIds, false)
    this.head.push(frame)
    const queued = this.pending.get(process.id)
    if (queued && queued.version <= process.version) this.pending.delete(process.id)
    return frame.length
  }

  /** Reads the next snapshot page into the head, if any is left and none is on its way. */
  async readMore(): Promise<void> {
    const read = this.readMoreFn
    if (read === null || this.reading || this.closed) return
    this.reading = true
    try {
      if (!(await read())) this.readMoreFn = null
    } finally {
      this.reading = false
    }
  }

  /**
   * The body. Chunks are pushed, not pulled, but only while the stream's queue is empty (desiredSize > 0 with
   * a high-water mark of one chunk): a socket that keeps up gets each state as it arrives, with no promise or
   * timer per event; a socket that does not leaves one chunk queued, further states wait conflated in
   * `pending`, and pull() — called once the queue drains — writes the newest.
   */
  response(): Response {
    const body = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.controller = controller
          if (this.closed) {
            // Closed while the snapshot was read (shutdown): end at once.
            controller.close()
            return
          }
          this.armTimer()
          this.flush()
        },
        pull: () => this.flush(),
        cancel: () => this.close(),
      },
      { highWaterMark: 1 },
    )
    return new Response(body, { headers: SSE_HEADERS })
  }

  /** Writes the head and the pending states if the socket is ready for more; ends the stream when it should. */
  private flush() {
    const controller = this.controller
    if (controller === null || this.closed) return
    if ((controller.desiredSize ?? 0) <= 0) return
    let chunk: Uint8Array | null = null
    const wroteHead = this.head.length > 0
    if (wroteHead) {
      chunk = encoder.encode(this.head.join(''))
      this.head = []
    }
    const updates = this.doneInHead ? null : this.drain()
    if (updates !== null) chunk = chunk === null ? updates : Buffer.concat([chunk, updates])
    if (chunk !== null) {
      this.lastWriteAt = Date.now()
      controller.enqueue(chunk)
    }
    if (this.ending) this.close()
    // The socket has taken the last page: read the next. (Not after writing a page, which is now queued: a
    // reader that stops reading leaves that page queued and stops the reads. Live updates alone do not
    // hold the snapshot back.)
    else if (this.readMoreFn !== null && !wroteHead && !this.reading)
      this.readMore().then(
        () => this.flush(),
        () => this.close(),
      )
  }

  /** One timer per stream, for its next keepalive or its end; writing an event never touches it. */
  private armTimer() {
    if (this.closed) return
    const at = Math.min(this.startedAt + this.o.settings.maxMs, this.lastWriteAt + this.o.settings.keepaliveMs)
    this.timer = setTimeout(this.onTimer, Math.max(0, at - Date.now()))
  }

  private readonly onTimer = () => {
    this.timer = null
    if (this.closed) return
    const now = Date.now()
    if (now >= this.startedAt + this.o.settings.maxMs) {
      // The window is over: what is pending goes out if the socket takes it now, then the clean end. A socket
      // that does not is ended anyway (after its queued chunk); the client reconnects and gets the newest state.
      this.ending = true
      this.flush()
      this.close()
      return
    }
    if (now >= this.lastWriteAt + this.o.settings.keepaliveMs) {
      const controller = this.controller
      // A socket that is not ready still has data queued to send: a keepalive would add nothing.
      if (controller !== null && (controller.desiredSize ?? 0) > 0) controller.enqueue(KEEPALIVE)
      this.lastWriteAt = now
    }
    this.armTimer()
  }

  private drain(): Uint8Array | null {
    let first: Uint8Array | null = null
    let more: Uint8Array[] | null = null
    if (this.outQueue.length > 0) {
      // Chunks first: a state queued with them (a done above all) goes after what came before it.
      first = encoder.encode(this.outQueue.map((o) => this.outputText(o.seq, o.text)).join(''))
      this.outQueue = []
      this.outQueuedBytes = 0
    }
    // While a gap is read, states wait too: a done must not pass the chunks before it.
    if (this.pending.size === 0 || this.filling) return first
    for (const process of this.pending.values()) {
      if (process.version <= (this.sent.get(process.id) ?? 0)) continue
      const done = this.o.endsOnDone && isDone(process.status)
      const bytes = this.stateBytes(process, done)
      if (first === null) first = bytes
      else (more ??= [first]).push(bytes)
      this.sent.set(process.id, process.version)
      if (done) {
        this.ending = true
        break
      }
    }
    this.pending.clear()
    return more ? Buffer.concat(more) : first
  }

  /** Ends the stream (its queued chunks still go out) and releases its subscriptions. */
  close() {
    if (this.closed) return
    this.closed = true
    streamStats.open--
    sessions.delete(this)
    for (const fn of this.unsubscribes) fn()
    this.unsubscribes = []
    this.pending.clear()
    this.outQueue = []
    this.held = []
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    try {
      this.controller?.close()
    } catch {
      // Already cancelled by the client.
    }
    this.o.onClose?.()
  }
}

/** Shutdown: every open stream ends cleanly (the client reconnects to another instance). */
export function closeAllStreams() {
  for (const session of [...sessions]) session.close()
}
