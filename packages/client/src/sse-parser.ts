// SSE parsing (WHATWG "event stream interpretation"), incremental, for streams read with fetch.

export interface SseEvent {
  /** `event:` field, `message` when absent. */
  type: string
  /** `data:` lines joined with `\n`. */
  data: string
  /** The last `id:` seen on this stream so far, as EventSource's `lastEventId`. */
  id: string | null
}

export interface SseHandlers {
  onEvent: (event: SseEvent) => void
  onRetry?: (ms: number) => void
  onComment?: (text: string) => void
}

/** Incremental parser: feed it decoded text in chunks of any size. CRLF, LF and CR all end lines. */
export class SseParser {
  private buffer = ''
  private dataLines: string[] = []
  private eventType = ''
  private lastEventId: string | null = null
  private atStart = true
  // A chunk that ended in CR may be half of a CRLF: drop an LF that starts the next one.
  private skipLeadingLf = false

  constructor(private readonly handlers: SseHandlers) {}

  push(chunk: string): void {
    let text = chunk
    if (this.atStart && text.length > 0) {
      if (text.startsWith('\uFEFF')) text = text.slice(1)
      this.atStart = false
    }
    if (this.skipLeadingLf && text.length > 0) {
      if (text.startsWith('\n')) text = text.slice(1)
      this.skipLeadingLf = false
    }
    this.buffer += text
    const lineEnd = /\r\n|\r|\n/g
    let consumed = 0
    for (let match = lineEnd.exec(this.buffer); match; match = lineEnd.exec(this.buffer)) {
      const line = this.buffer.slice(consumed, match.index)
      consumed = lineEnd.lastIndex
      if (match[0] === '\r' && consumed === this.buffer.length) this.skipLeadingLf = true
      this.processLine(line)
    }
    this.buffer = this.buffer.slice(consumed)
  }

  private processLine(line: string): void {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) return this.handlers.onComment?.(line.slice(1).trimStart())
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event':
        this.eventType = value
        break
      case 'data':
        this.dataLines.push(value)
        break
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.handlers.onRetry?.(Number(value))
        break
      // Unknown fields are ignored, as the spec says.
    }
  }

  private dispatch(): void {
    const type = this.eventType || 'message'
    this.eventType = ''
    if (this.dataLines.length === 0) return
    const data = this.dataLines.join('\n')
    this.dataLines = []
    this.handlers.onEvent({ type, data, id: this.lastEventId })
  }
}
