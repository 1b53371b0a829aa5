// Server-Sent Events: per process (`/processes/{id}/stream`) and per workspace (`/processes/stream`).
//
// A stream is pulled, not pushed: the response body is a ReadableStream whose pull() resolves with the next
// chunk only when the socket wants more. Updates that arrive meanwhile are conflated per process id to the
// newest version, so a slow reader costs one pending state per process it watches and never a growing queue.
//
// Fan-out is the hot path (one state, thousands of streams), so nothing per stream is done per event that can be
// done once per state: the hub hands every listener the same Process object, and its JSON and encoded frame are
// built once and shared (bench fanout, 5,000 streams: JSON.stringify per stream was the top JS cost). Nor is a
// timer created per event: each stream has one timer, armed for its next keepalive or its end.
import type { Hub } from '../hub/hub'
import type { Process } from './model'
import { isDone } from './states'

export interface StreamSettings {
  maxMs: number
  keepaliveMs: number
  retryMs: number
}

const encoder = new TextEncoder()
const KEEPALIVE = encoder.encode(': keepalive\n\n')

/** A state's JSON and its SSE frames (with/without `id:`, with/without `event: done`), built on first use. */
interface Encoded {
  json: string | null
  frames: Array<Uint8Array | undefined>
}
const encodedStates = new WeakMap<Process, Encoded>()

function encodedOf(process: Process): Encoded {
  let encoded = encodedStates.get(process)
  if (!encoded) encodedStates.set(process, (encoded = { json: null, frames: [] }))
  return encoded
}

function frameText(process: Process, withIds: boolean, done: boolean): string {
  const encoded = encodedOf(process)
  const json = (encoded.json ??= JSON.stringify(process))
  return `${withIds ? `id: ${process.version}\n` : ''}${done ? 'event: done\n' : ''}data: ${json}\n\n`
}

/** The same bytes go to every stream sending this state (a chunk is only read, never transferred). */
function frameBytes(process: Process, withIds: boolean, done: boolean): Uint8Array {
  const frames = encodedOf(process).frames
  const key = (withIds ? 2 : 0) + (done ? 1 : 0)
  return (frames[key] ??= encoder.encode(frameText(process, withIds, done)))
}

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  'X-Accel-Buffering': 'no',
  Connection: 'keep-alive',
}

/** Counts open streams for /metrics and tests. */
export const streamStats = { open: 0, opened: 0 }

type Filter = (process: Process) => boolean

interface SessionOptions {
  settings: StreamSettings
  /** Per-process streams end with `event: done` on a done status; workspace streams never do. */
  endsOnDone: boolean
  /** Workspace streams carry no `id:` line: a process's own `version` says what is newer. */
  withIds: boolean
  filter?: Filter
  onClose?: () => void
}

export class SseSession {
  private readonly pending = new Map<number, Process>()
  private readonly sent = new Map<number, number>()
  private head: string[] = []
  private wake: (() => void) | null = null
  private closed = false
  private ended = false
  private readonly startedAt = Date.now()
  private lastWriteAt = Date.now()
  private unsubscribes: Array<() => void> = []
  private timer: Timer | null = null
  private timerAt = Infinity

  constructor(private readonly o: SessionOptions) {
    streamStats.open++
    streamStats.opened++
    trackSession(this)
  }

  /** The hub's listener: keep only the newest unsent state per process. */
  readonly offer = (process: Process) => {
    if (this.closed) return
    if (this.o.filter && !this.o.filter(process)) return
    if (process.version <= (this.sent.get(process.id) ?? 0)) return
    const queued = this.pending.get(process.id)
    if (queued && queued.version >= process.version) return
    this.pending.set(process.id, process)
    this.wakeUp()
  }

  private wakeUp() {
    const wake = this.wake
    if (!wake) return
    this.wake = null
    wake()
  }

  addUnsubscribe(fn: () => void) {
    if (this.closed) fn()
    else this.unsubscribes.push(fn)
  }

  /** The client already holds this version (Last-Event-ID, or a snapshot this stream sent). */
  markSent(process: Process) {
    this.sent.set(process.id, Math.max(this.sent.get(process.id) ?? 0, process.version))
    const queued = this.pending.get(process.id)
    if (queued && queued.version <= process.version) this.pending.delete(process.id)
  }

  /** Queues text to go out before any update (the retry line, the snapshot). */
  write(text: string) {
    this.head.push(text)
  }

  /** Sends a state now (the snapshot) unless the client has it; returns whether the stream is over. */
  sendState(process: Process): boolean {
    const done = this.o.endsOnDone && isDone(process.status)
    if (process.version > (this.sent.get(process.id) ?? 0) || done) {
      this.head.push(frameText(process, this.o.withIds, done))
      this.markSent(process)
    }
    if (done) this.ended = true
    return done
  }

  response(): Response {
    const body = new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          const chunk = await this.next()
          if (chunk === null) {
            this.close()
            try {
              controller.close()
            } catch {
              // Already cancelled by the client.
            }
          } else controller.enqueue(chunk)
        },
        cancel: () => this.close(),
      },
      { highWaterMark: 0 },
    )
    return new Response(body, { headers: SSE_HEADERS })
  }

  /** The next chunk to write, or null when the stream should end. */
  private async next(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.head.length > 0) {
        const text = this.head.join('')
        this.head = []
        this.lastWriteAt = Date.now()
        return encoder.encode(text)
      }
      if (this.ended || this.closed) return null
      const updates = this.drain()
      if (updates) {
        this.lastWriteAt = Date.now()
        return updates
      }
      const now = Date.now()
      const endAt = this.startedAt + this.o.settings.maxMs
      if (now >= endAt) return null
      const keepaliveAt = this.lastWriteAt + this.o.settings.keepaliveMs
      if (now >= keepaliveAt) {
        this.lastWriteAt = now
        return KEEPALIVE
      }
      this.armTimer(Math.min(endAt, keepaliveAt))
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }

  /**
   * Wakes next() at a deadline. A timer already armed for an earlier moment stays: when it fires, next()
   * finds the keepalive not due yet (an event was written since) and arms again. So events never touch the
   * timer, and a busy stream costs one timer wake-up per keepalive interval.
   */
  private armTimer(at: number) {
    if (this.timer !== null && this.timerAt <= at) return
    if (this.timer !== null) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(this.onTimer, Math.max(0, at - Date.now()))
  }

  private readonly onTimer = () => {
    this.timer = null
    this.timerAt = Infinity
    this.wakeUp()
  }

  private drain(): Uint8Array | null {
    if (this.pending.size === 0) return null
    let first: Uint8Array | null = null
    let more: Uint8Array[] | null = null
    for (const process of this.pending.values()) {
      if (process.version <= (this.sent.get(process.id) ?? 0)) continue
      const done = this.o.endsOnDone && isDone(process.status)
      const bytes = frameBytes(process, this.o.withIds, done)
      if (first === null) first = bytes
      else (more ??= [first]).push(bytes)
      this.sent.set(process.id, process.version)
      if (done) {
        this.ended = true
        break
      }
    }
    this.pending.clear()
    return more ? Buffer.concat(more) : first
  }

  close() {
    if (this.closed) return
    this.closed = true
    streamStats.open--
    untrackSession(this)
    for (const fn of this.unsubscribes) fn()
    this.unsubscribes = []
    this.pending.clear()
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.wakeUp()
    this.o.onClose?.()
  }
}

/** Parses Last-Event-ID: a version the client holds, or null when absent, malformed or nonsense. */
export function parseLastEventId(header: string | null, query: string | undefined): number | null {
  const raw = header ?? query
  if (raw === undefined || raw === null || !/^\d{1,15}$/.test(raw.trim())) return null
  return Number(raw.trim())
}

/** `/processes/{id}/stream`: subscribe first, then read, then drop what the snapshot covers. */
export async function openProcessStream(o: {
  hub: Hub
  settings: StreamSettings
  id: number
  lastEventId: number | null
  read: () => Promise<Process | null>
}): Promise<Response | null> {
  const session = new SseSession({ settings: o.settings, endsOnDone: true, withIds: true })
  session.addUnsubscribe(await o.hub.watch(o.id, session.offer))
  let current: Process | null
  try {
    current = await o.read()
  } catch (error) {
    session.close()
    throw error
  }
  if (!current) {
    session.close()
    return null
  }
  session.write(`retry: ${o.settings.retryMs}\n\n`)
  // Only an id equal to the current version means "you are up to date"; unknown or ahead gets the snapshot.
  if (o.lastEventId === current.version && !isDone(current.status)) session.markSent(current)
  else session.sendState(current)
  return session.response()
}

/** `/processes/stream`: every non-final matching process first, then each change of a matching one. */
export async function openWorkspaceStream(o: {
  hub: Hub
  settings: StreamSettings
  workspaceId: number
  statuses?: string[]
  type?: string
  read: () => Promise<Process[]>
}): Promise<Response> {
  // A process that leaves the status filter is still sent once, so a dashboard sees it leave.
  const shown = new Set<number>()
  const filter: Filter = (p) => {
    if (p.workspace_id !== o.workspaceId) return false
    if (o.type && p.type !== o.type) return false
    if (!o.statuses || o.statuses.includes(p.status)) {
      shown.add(p.id)
      return true
    }
    return shown.delete(p.id)
  }
  const session = new SseSession({ settings: o.settings, endsOnDone: false, withIds: false, filter })
  session.addUnsubscribe(await o.hub.watchWorkspace(o.workspaceId, session.offer))
  let rows: Process[]
  try {
    rows = await o.read()
  } catch (error) {
    session.close()
    throw error
  }
  session.write(`retry: ${o.settings.retryMs}\n\n`)
  for (const row of rows) {
    shown.add(row.id)
    session.sendState(row)
  }
  return session.response()
}

const sessions = new Set<SseSession>()
export function trackSession(session: SseSession) {
  sessions.add(session)
}
export function untrackSession(session: SseSession) {
  sessions.delete(session)
}
/** Shutdown: every open stream ends cleanly (the client reconnects to another instance). */
export function closeAllStreams() {
  for (const session of [...sessions]) session.close()
}
