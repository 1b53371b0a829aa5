// A standard EventSource (the `eventsource` package, WHATWG-compliant) with the bearer token added,
// recording everything it receives.
import { EventSource } from 'eventsource'

export interface Received {
  messages: Array<{ id: string; data: any }>
  done: Array<{ id: string; data: any }>
  opens: number
  errors: number
}

export function openEventSource(url: string, token: string, o: { lastEventId?: string } = {}) {
  const received: Received = { messages: [], done: [], opens: 0, errors: 0 }
  const source = new EventSource(url, {
    fetch: (input, init) =>
      fetch(input, {
        ...init,
        headers: {
          ...(init?.headers as Record<string, string>),
          authorization: `Bearer ${token}`,
          ...(o.lastEventId && received.opens === 0 ? { 'last-event-id': o.lastEventId } : {}),
        },
      }),
  })
  source.onopen = () => received.opens++
  source.onerror = () => received.errors++
  source.onmessage = (event) => received.messages.push({ id: event.lastEventId, data: JSON.parse(event.data) })
  source.addEventListener('done', (event) => {
    received.done.push({ id: (event as MessageEvent).lastEventId, data: JSON.parse((event as MessageEvent).data) })
    source.close()
  })
  return { source, received }
}

/** Reads a raw SSE response into frames (for what EventSource hides: comments, retry lines, the end). */
export async function readFrames(response: Response, o: { untilDone?: boolean; maxMs?: number } = {}) {
  const reader = response.body!.getReader()
  const decoder = new TextDecoder()
  let text = ''
  const deadline = Date.now() + (o.maxMs ?? 30_000)
  let ended = false
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) break
    const result = await Promise.race([reader.read(), Bun.sleep(left).then(() => null)])
    if (result === null) break
    if (result.done) {
      ended = true
      break
    }
    text += decoder.decode(result.value, { stream: true })
    if (o.untilDone && text.includes('event: done')) {
      // Read on to see the server end the response.
    }
  }
  if (!ended) await reader.cancel().catch(() => {})
  const frames = text
    .split('\n\n')
    .filter((f) => f.length > 0)
    .map((f) => {
      const lines = f.split('\n')
      const field = (name: string) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2)
      const data = field('data')
      return { raw: f, id: field('id'), event: field('event'), retry: field('retry'), comment: lines[0]!.startsWith(':'), data: data ? JSON.parse(data) : undefined }
    })
  return { text, frames, ended }
}
