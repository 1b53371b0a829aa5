// Server-Sent Events for one process, `GET /processes/{id}/stream`.
import type { ProcessHub } from './hub-rules'
import { LIVE_VERSION_JUMP } from './live'
import type { Process } from './model'
import { type EventCursor, type OutputSource, SseSession, type StreamSettings } from './sse-session'
import { isDone } from './states'

/** Parses Last-Event-ID: a version the client holds, or null when absent, malformed or nonsense. */
export function parseLastEventId(header: string | null, query: string | undefined): number | null {
  return parseEventCursor(header, query)?.version ?? null
}

/**
 * Parses Last-Event-ID as a cursor: `<version>` (no output seen: seq 0) or `<version>.<seq>` (README: Live
 * output); null when absent, malformed or nonsense.
 */
export function parseEventCursor(header: string | null, query: string | undefined): EventCursor | null {
  const raw = (header ?? query)?.trim()
  if (raw === undefined) return null
  const match = /^(\d{1,15})(?:\.(\d{1,15}))?$/.exec(raw)
  if (!match) return null
  return { version: Number(match[1]), seq: match[2] === undefined ? 0 : Number(match[2]) }
}

/** `/processes/{id}/stream`: subscribe first, then read, then drop what the snapshot covers. */
export async function openProcessStream(o: {
  hub: ProcessHub
  settings: StreamSettings
  id: number
  lastEventId: number | null
  /** The output position of the Last-Event-ID (0: none seen); with `output`, chunks after it are sent. */
  lastSeq?: number
  read: () => Promise<Process | null>
  /** Live output: the stream sends `event: output` chunks too (README: Live output). */
  output?: OutputSource
  /** Hands the stream's close to its owner (the credential watch); returns the function that forgets it. */
  register?: (close: () => void) => () => void
}): Promise<Response | null> {
  const session = new SseSession({ settings: o.settings, endsOnDone: true, withIds: true, output: o.output })
  if (o.register) session.addUnsubscribe(o.register(() => session.close()))
  session.addUnsubscribe(await o.hub.watch(o.id, session.offer))
  // Chunks that arrive while the snapshot and the catch-up are read wait in the session (offerOutput), after them.
  if (o.output) {
    session.resumeAt({ version: o.lastEventId ?? 0, seq: o.lastSeq ?? 0 })
    session.addUnsubscribe(await o.hub.watchMessages(o.id, session.offerOutput))
  }
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
  // A done process: its whole output first, then `done` (nothing may follow it). A live one: the state, then
  // the output the client has not had.
  if (o.output && isDone(current.status)) await catchUp(session)
  const last = o.lastEventId
  if (last !== null && last > current.version && current.status === 'running' && last - current.version < LIVE_VERSION_JUMP) {
    // The client was sent a live state newer than anything known here (src/processes/live.ts): its holder has
    // not written it yet (or crashed before it could). The snapshot would take progress back: the stream waits
    // for the next state past it instead, and looks at the row again once a write-behind interval has passed.
    session.markSentVersion(o.id, last)
    const recheck = setTimeout(
      () =>
        void o.read().then(
          (p) => p && session.offer(p),
          () => {},
        ),
      o.settings.liveRecheckMs,
    )
    session.addUnsubscribe(() => clearTimeout(recheck))
  } else if (last === current.version && !isDone(current.status)) {
    // Only an id equal to the current version means "you are up to date"; unknown or ahead gets the snapshot.
    session.markSent(current)
  } else session.sendState(current)
  if (o.output && !isDone(current.status)) {
    await catchUp(session)
    const recheck = setTimeout(() => void session.recheckOutput(), o.output.recheckMs)
    session.addUnsubscribe(() => clearTimeout(recheck))
  }
  return session.response()
}

async function catchUp(session: SseSession) {
  try {
    await session.catchUpOutput()
  } catch (error) {
    session.close()
    throw error
  }
}
