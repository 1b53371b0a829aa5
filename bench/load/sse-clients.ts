// A load-generator process holding many EventSource-style streams at once: one raw TCP socket each
// (Bun.connect), a minimal HTTP/1.1 + chunked + SSE reader, `Last-Event-ID` sent on every reconnect, as a
// browser's EventSource does. Each received event whose process `message` is `t=<ms>` (the worker's send time,
// performance.timeOrigin + performance.now(), comparable across processes on one machine) records
// receipt − send in a histogram.
//
// Config: JSON in BENCH_CLIENT. Commands, one per line on stdin: `reset` (start a measurement window),
// `report` (print the window's figures), `stop`. Output: JSON lines on stdout.
//
// With `reconnect`, a stream the server ends (SSE_MAX_MS) is re-opened at once on a NEW TCP connection, so
// every window end is a real connect; without it, an ended stream stays closed (counted).
import type { Socket } from 'bun'
import { Histogram, now } from '../histogram'

interface Config {
  host: string
  port: number
  token: string | null
  /** Stream i (of this process) opens paths[(offset + i) % paths.length]. */
  paths: string[]
  /** Optional, parallel to paths: a stream's group, recorded with each burst it receives (see bursts). */
  groups?: number[]
  count: number
  offset: number
  /** New streams per second while ramping up. */
  rampPerSec: number
  reconnect: boolean
  statusEveryMs: number
}

const config = JSON.parse(process.env.BENCH_CLIENT!) as Config

const latency = new Histogram()
/** Per burst (frames tagged `t=<ms>/<burst>`): its group and every latency of it received here. */
let bursts = new Map<number, { group: number; ms: number[] }>()
function recordBurst(burst: number, group: number, ms: number) {
  let entry = bursts.get(burst)
  if (!entry) bursts.set(burst, (entry = { group, ms: [] }))
  entry.ms.push(ms)
}
const connectMs = new Histogram()
const counters = {
  attempts: 0,
  established: 0,
  failures: 0,
  events: 0,
  keepalives: 0,
  doneEvents: 0,
  windowsEnded: 0,
  dropped: 0,
  bytes: 0,
}
let failureSamples: string[] = []
let stopping = false
let open = 0
/** Streams that have received their first event (or their first bytes after a Last-Event-ID). */
let ready = 0

type State = 'connecting' | 'head' | 'body' | 'closed'

class Stream {
  socket: Socket<Stream> | null = null
  state: State = 'closed'
  lastId: string | null = null
  startedAt = 0
  buf = ''
  sse = ''
  chunked = true
  /** -1: expecting a chunk-size line; -2: expecting the CRLF after a chunk; ≥ 0: bytes left in this chunk. */
  chunkLeft = -1
  everReady = false
  attemptDone = false

  constructor(
    readonly path: string,
    readonly group: number | undefined,
  ) {}

  open() {
    if (stopping) return
    this.state = 'connecting'
    this.buf = ''
    this.sse = ''
    this.chunkLeft = -1
    this.attemptDone = false
    this.startedAt = now()
    counters.attempts++
    Bun.connect<Stream>({ hostname: config.host, port: config.port, data: this, socket: handlers }).catch((error) =>
      this.fail(`connect: ${String(error?.code ?? error)}`),
    )
  }

  request(): string {
    return (
      `GET ${this.path} HTTP/1.1\r\nHost: ${config.host}:${config.port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n` +
      (config.token ? `Authorization: Bearer ${config.token}\r\n` : '') +
      (this.lastId !== null ? `Last-Event-ID: ${this.lastId}\r\n` : '') +
      '\r\n'
    )
  }

  fail(why: string) {
    if (this.attemptDone) return
    this.attemptDone = true
    if (this.state === 'body') open--
    this.state = 'closed'
    counters.failures++
    if (failureSamples.length < 10) failureSamples.push(why)
    this.socket?.end()
    this.socket = null
    // Keep the stream count: try again a second later (EventSource's default retry).
    if (!stopping) setTimeout(() => this.open(), 1000)
  }

  /** The server ended the response cleanly (SSE_MAX_MS or after `done`). */
  ended() {
    if (this.attemptDone) return
    this.attemptDone = true
    open--
    this.state = 'closed'
    counters.windowsEnded++
    this.socket?.end()
    this.socket = null
    if (config.reconnect) this.open()
  }

  onData(text: string, at: number) {
    counters.bytes += text.length
    this.buf += text
    if (this.state === 'head') {
      const end = this.buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = this.buf.slice(0, end)
      this.buf = this.buf.slice(end + 4)
      const status = Number(head.slice(9, 12))
      if (status !== 200) {
        this.fail(`HTTP ${status}`)
        return
      }
      this.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head)
      this.state = 'body'
      open++
      counters.established++
      connectMs.record(at - this.startedAt)
      // A resumed stream whose Last-Event-ID is current gets no snapshot: it is ready once the head arrives.
      if (this.lastId !== null) this.markReady()
    }
    if (this.chunked) {
      for (;;) {
        if (this.chunkLeft === -1) {
          const nl = this.buf.indexOf('\r\n')
          if (nl < 0) break
          const size = parseInt(this.buf.slice(0, nl), 16)
          this.buf = this.buf.slice(nl + 2)
          if (size === 0) {
            this.parseSse(at)
            this.ended()
            return
          }
          this.chunkLeft = size
        } else if (this.chunkLeft === -2) {
          if (this.buf.length < 2) break
          this.buf = this.buf.slice(2)
          this.chunkLeft = -1
        } else {
          if (this.buf.length === 0) break
          const take = Math.min(this.chunkLeft, this.buf.length)
          this.sse += this.buf.slice(0, take)
          this.buf = this.buf.slice(take)
          this.chunkLeft -= take
          if (this.chunkLeft === 0) this.chunkLeft = -2
        }
      }
    } else {
      this.sse += this.buf
      this.buf = ''
    }
    this.parseSse(at)
  }

  parseSse(at: number) {
    for (;;) {
      const end = this.sse.indexOf('\n\n')
      if (end < 0) return
      const block = this.sse.slice(0, end)
      this.sse = this.sse.slice(end + 2)
      if (block.charCodeAt(0) === 58 /* ':' */) {
        counters.keepalives++
        continue
      }
      if (block.startsWith('retry:')) continue
      if (block.startsWith('id: ')) {
        const nl = block.indexOf('\n')
        this.lastId = block.slice(4, nl < 0 ? undefined : nl)
      }
      const dataAt = block.indexOf('data: ')
      if (dataAt < 0) continue
      counters.events++
      if (block.includes('event: done')) counters.doneEvents++
      this.markReady()
      // A state's message, or an output chunk (bench output): `"chunk":"t=` is as long as `"message":"t=` less 2.
      const m = block.indexOf('"message":"t=', dataAt)
      const c = m < 0 ? block.indexOf('"chunk":"t=', dataAt) : -1
      const t = m >= 0 ? m : c
      if (t >= 0) {
        const from = t + (m >= 0 ? 13 : 11)
        const text = block.slice(from, block.indexOf('"', from))
        const slash = text.indexOf('/')
        const sent = Number(slash < 0 ? text : text.slice(0, slash))
        if (Number.isFinite(sent)) {
          latency.record(at - sent)
          if (this.group !== undefined && slash >= 0) recordBurst(Number(text.slice(slash + 1)), this.group, at - sent)
        }
      }
    }
  }

  markReady() {
    if (this.everReady) return
    this.everReady = true
    ready++
  }
}

const handlers = {
  open(socket: Socket<Stream>) {
    const stream = socket.data
    stream.socket = socket
    stream.state = 'head'
    socket.write(stream.request())
  },
  data(socket: Socket<Stream>, data: Buffer) {
    // latin1: one char per byte, so chunk sizes count right; JSON's multi-byte text never contains \r, \n or ".
    socket.data.onData(data.toString('latin1'), now())
  },
  close(socket: Socket<Stream>) {
    const stream = socket.data
    if (stream.attemptDone || stopping) return
    if (stream.state === 'body') {
      // The server closed the socket without ending the response: a dropped stream.
      counters.dropped++
      stream.attemptDone = true
      open--
      stream.state = 'closed'
      stream.socket = null
      if (config.reconnect) stream.open()
    } else stream.fail(`closed before the response (${stream.state})`)
  },
  error(socket: Socket<Stream>, error: Error) {
    socket.data.fail(`socket error: ${String((error as { code?: string }).code ?? error)}`)
  },
  connectError(socket: Socket<Stream>, error: Error) {
    socket.data.fail(`connect: ${String((error as { code?: string }).code ?? error)}`)
  },
}

const streams: Stream[] = []
for (let i = 0; i < config.count; i++) {
  const k = (config.offset + i) % config.paths.length
  streams.push(new Stream(config.paths[k]!, config.groups?.[k]))
}

// Ramp up at rampPerSec, in 10 ms steps.
let next = 0
const perStep = Math.max(1, Math.round(config.rampPerSec / 100))
const ramp = setInterval(() => {
  for (let k = 0; k < perStep && next < streams.length; k++) streams[next++]!.open()
  if (next >= streams.length) clearInterval(ramp)
}, 10)

const emit = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`)
const status = () => ({ type: 'status', open, ready, opened: next, ...counters })
const statusTimer = setInterval(() => emit(status()), config.statusEveryMs)

function reset() {
  latency.reset()
  bursts = new Map()
  connectMs.reset()
  for (const key of Object.keys(counters) as Array<keyof typeof counters>) counters[key] = 0
  failureSamples = []
}

for await (const line of console) {
  const command = line.trim()
  if (command === 'reset') {
    reset()
    emit({ type: 'reset-ok' })
  } else if (command === 'report') {
    emit({
      ...status(),
      type: 'report',
      latency: latency.toJSON(),
      bursts: [...bursts].map(([burst, e]) => [burst, e.group, e.ms.map((x) => Math.round(x * 100) / 100)]),
      connect: connectMs.toJSON(),
      failureSamples,
    })
  } else if (command === 'stop') break
}
stopping = true
clearInterval(ramp)
clearInterval(statusTimer)
for (const stream of streams) stream.socket?.end()
emit({ type: 'stopped' })
process.exit(0)
