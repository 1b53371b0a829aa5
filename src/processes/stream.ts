// Server-Sent Events: per process (`/processes/{id}/stream`) and per workspace (`/processes/stream`).
//
// A stream is pulled, not pushed: the response body is a ReadableStream whose pull() resolves with the next
// chunk only when the socket wants more. Updates that arrive meanwhile are conflated per process id to the
// newest version, so a slow reader costs one pending state per process it watches and never a growing queue.
import type { Hub } from '../hub/hub'
import type { Process } from './model'
import { isDone } from './states'

export interface StreamSettings {
  maxMs: number
  keepaliveMs: number
  retryMs: number
}

const encoder = new TextEncoder()

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
    this.wake?.()
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
      this.head.push(this.frame(process, done))
      this.markSent(process)
    }
    if (done) this.ended = true
    return done
  }

  private frame(process: Process, done: boolean): string {
    const id = this.o.withIds ? `id: ${process.version}\n` : ''
    return `${id}${done ? 'event: done\n' : ''}data: ${JSON.stringify(process)}\n\n`
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
          } else controller.enqueue(encoder.encode(chunk))
        },
        cancel: () => this.close(),
      },
      { highWaterMark: 0 },
    )
    return new Response(body, { headers: SSE_HEADERS })
  }

  /** The next chunk to write, or null when the stream should end. */
  private async next(): Promise<string | null> {
    for (;;) {
      if (this.head.length > 0) {
        const text = this.head.join('')
        this.head = []
        this.lastWriteAt = Date.now()
        return text
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
        return ': keepalive\n\n'
      }
      await this.sleep(Math.min(endAt, keepaliveAt) - now)
    }
  }

  private drain(): string | null {
    if (this.pending.size === 0) return null
    let text = ''
    for (const process of this.pending.values()) {
      if (process.version <= (this.sent.get(process.id) ?? 0)) continue
      const done = this.o.endsOnDone && isDone(process.status)
      text += this.frame(process, done)
      this.sent.set(process.id, process.version)
      if (done) {
        this.ended = true
        break
      }
    }
    this.pending.clear()
    return text || null
  }

  private sleep(ms: number) {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      const self = this
      function done() {
        clearTimeout(timer)
        self.wake = null
        resolve()
      }
      this.wake = done
    })
  }

  close() {
    if (this.closed) return
    this.closed = true
    streamStats.open--
    untrackSession(this)
    for (const fn of this.unsubscribes) fn()
    this.unsubscribes = []
    this.pending.clear()
    this.wake?.()
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
