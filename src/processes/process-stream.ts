// Server-Sent Events for one process, `GET /processes/{id}/stream`.
import type { ProcessHub } from './hub-rules'
import { LIVE_VERSION_JUMP } from './live'
import type { Process } from './model'
import { SseSession, type StreamSettings } from './sse-session'
import { isDone } from './states'

/** Parses Last-Event-ID: a version the client holds, or null when absent, malformed or nonsense. */
export function parseLastEventId(header: string | null, query: string | undefined): number | null {
  const raw = header ?? query
  if (raw === undefined || raw === null || !/^\d{1,15}$/.test(raw.trim())) return null
  return Number(raw.trim())
}

/** `/processes/{id}/stream`: subscribe first, then read, then drop what the snapshot covers. */
export async function openProcessStream(o: {
  hub: ProcessHub
  settings: StreamSettings
  id: number
  lastEventId: number | null
  read: () => Promise<Process | null>
  /** Hands the stream's close to its owner (the credential watch); returns the function that forgets it. */
  register?: (close: () => void) => () => void
}): Promise<Response | null> {
  const session = new SseSession({ settings: o.settings, endsOnDone: true, withIds: true })
  if (o.register) session.addUnsubscribe(o.register(() => session.close()))
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
  return session.response()
}
