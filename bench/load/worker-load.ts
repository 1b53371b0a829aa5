// A load-generator process speaking the worker protocol over one WebSocket (`/workers/ws?token=`) per target.
//
// mode `broadcast`: every intervalMs, one `progress` frame for each of `ids` (all at once, or `spread` over the
//   interval), its `message` the send time (`t=<ms>`), so stream clients can measure worker-frame-to-receipt
//   latency. Acks are timed by `ref`.
// mode `ingest`: `progress` frames as fast as the server acks them, round-robin over `ids`, with at most
//   `window` frames unacked (acks come after the coalesced write commits, so many must be in flight).
//
// `alternate` (broadcast only): more targets, each its own server, worker_id and ids, on a socket of its own;
//   tick k broadcasts target k mod (1 + alternate.length) only, so changes made on different instances take
//   turns within one measured window, under the same conditions (bench cluster).
//
// Config: JSON in BENCH_WORKER. Commands on stdin: `start`, `pause`, `reset`, `report`, `stop`. Output: JSON lines.
import { Histogram, now } from '../histogram'

interface Config {
  url: string
  token: string
  workerId: string
  mode: 'broadcast' | 'ingest'
  ids: number[]
  intervalMs: number
  window: number
  /** The fencing token to send with each frame (the `attempts` the processes were claimed with), if any. */
  attempt?: number
  /**
   * broadcast: send each tick's frames spread evenly over the interval (10 ms steps) instead of all at once,
   * as independent workers would; every process still reports once per interval.
   */
  spread?: boolean
  alternate?: Array<{ url: string; workerId: string; ids: number[] }>
  /** ingest: each frame's message is its send time (`t=<ms>`), so stream clients measure latency (bench progress). */
  stamp?: boolean
  /** ingest: `output` frames (chunk `t=<ms>`, bench output) instead of `progress`. */
  op?: 'progress' | 'output'
}

const config = JSON.parse(process.env.BENCH_WORKER!) as Config
const attempt = config.attempt === undefined ? '' : `,"attempt":${config.attempt}`
const emit = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`)

const ackMs = new Histogram()
/** Per target (alternate): the ack time of its frames, i.e. frame → commit on that target's instance. */
const targetAckMs: Histogram[] = []
const counters = { sent: 0, acked: 0, errors: 0, ticks: 0, lateTicks: 0 }
let errorCodes: Record<string, number> = {}
let errorSamples: string[] = []
const sentAt = new Map<number, number>()
let nextRef = 1
let running = false
let tick = 0
let cursor = 0
let outstanding = 0

interface Target {
  ws: WebSocket
  workerId: string
  ids: number[]
  opened: Promise<void>
}

function connect(url: string, workerId: string, ids: number[]): Target {
  const acks = new Histogram()
  targetAckMs.push(acks)
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/workers/ws?token=${encodeURIComponent(config.token)}`)
  ws.binaryType = 'arraybuffer'
  ws.onmessage = (event) => onFrame(JSON.parse(String(event.data)), acks)
  ws.onclose = (event) => {
    emit({ type: 'closed', code: event.code, reason: event.reason })
    if (running) process.exit(1)
  }
  const opened = new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve()
    ws.onerror = (event) => reject(new Error(`websocket error: ${String((event as ErrorEvent).message ?? 'connection failed')}`))
  })
  return { ws, workerId, ids, opened }
}

let helloDone: (() => void) | null = null
function onFrame(frame: { op: string; ref?: number | string; code?: string; message?: string }, acks: Histogram) {
  if (frame.ref === 'hello') {
    helloDone?.()
    return
  }
  if (config.mode === 'ingest') outstanding--
  if (frame.op === 'ack') {
    counters.acked++
    if (typeof frame.ref === 'number') {
      const at = sentAt.get(frame.ref)
      if (at !== undefined) {
        ackMs.record(now() - at)
        acks.record(now() - at)
        sentAt.delete(frame.ref)
      }
    }
  } else if (frame.op === 'error') {
    counters.errors++
    if (typeof frame.ref === 'number') sentAt.delete(frame.ref)
    errorCodes[frame.code ?? '?'] = (errorCodes[frame.code ?? '?'] ?? 0) + 1
    if (errorSamples.length < 5) errorSamples.push(`${frame.code}: ${frame.message}`)
  } else if (frame.op === 'cancel') {
    errorCodes['cancel-push'] = (errorCodes['cancel-push'] ?? 0) + 1
  }
  if (config.mode === 'ingest' && running) pump()
}

const targets = [connect(config.url, config.workerId, config.ids), ...(config.alternate ?? []).map((t) => connect(t.url, t.workerId, t.ids))]
const ws = targets[0]!.ws
for (const target of targets) {
  await target.opened
  await new Promise<void>((resolve) => {
    helloDone = resolve
    target.ws.send(JSON.stringify({ op: 'hello', worker_id: target.workerId, ref: 'hello' }))
  })
}
emit({ type: 'ready' })

const SPREAD_STEP_MS = 10
const steps = config.spread ? Math.max(1, Math.floor(config.intervalMs / SPREAD_STEP_MS)) : 1
let progress = 0

/** One step of a tick: all of `ids`, or (spread) the step's share of them. */
let target = targets[0]!
/** With alternate targets each frame also names its burst (`t=<ms>/<burst>`), so receivers can pair bursts. */
let burstTag = ''
function broadcastStep(step: number) {
  if (step === 0) {
    if (targets.length > 1) burstTag = `/${tick}`
    target = targets[tick % targets.length]!
    progress = Math.floor(tick++ / targets.length) % 101
    counters.ticks++
  }
  const ids = target.ids
  const from = Math.floor((ids.length * step) / steps)
  const to = Math.floor((ids.length * (step + 1)) / steps)
  for (let i = from; i < to; i++) {
    const ref = nextRef++
    const at = now()
    sentAt.set(ref, at)
    target.ws.send(`{"op":"progress","ref":${ref},"process_id":${ids[i]},"progress":${progress},"message":"t=${at}${burstTag}"${attempt}}`)
    counters.sent++
  }
}

let timer: Timer | null = null
function startBroadcast() {
  // Steps on a fixed schedule (not setInterval drift); a tick that starts over 50 ms late is counted.
  const t0 = performance.now()
  let n = 0
  const schedule = () => {
    if (!running) return
    const due = t0 + (n * config.intervalMs) / steps
    timer = setTimeout(
      () => {
        if (!running) return
        const step = n % steps
        if (step === 0 && performance.now() - due > 50) counters.lateTicks++
        broadcastStep(step)
        n++
        schedule()
      },
      Math.max(0, due - performance.now()),
    )
  }
  schedule()
}

let step = 0
function pump() {
  while (outstanding < config.window) {
    const id = config.ids[cursor]!
    cursor = (cursor + 1) % config.ids.length
    step++
    const message = config.stamp ? `t=${now()}` : `step ${step}`
    if (config.op === 'output') ws.send(`{"op":"output","process_id":${id},"chunk":"${message}"${attempt}}`)
    else ws.send(`{"op":"progress","process_id":${id},"progress":${step % 101},"message":"${message}"${attempt}}`)
    outstanding++
    counters.sent++
  }
}

for await (const line of console) {
  const command = line.trim()
  if (command === 'start') {
    if (running) continue
    running = true
    if (config.mode === 'broadcast') startBroadcast()
    else pump()
    emit({ type: 'started' })
  } else if (command === 'pause') {
    // Broadcast only: no new tick; frames already sent still get their acks.
    running = false
    if (timer) clearTimeout(timer)
    emit({ type: 'paused' })
  } else if (command === 'reset') {
    ackMs.reset()
    for (const h of targetAckMs) h.reset()
    for (const key of Object.keys(counters) as Array<keyof typeof counters>) counters[key] = 0
    errorCodes = {}
    errorSamples = []
    emit({ type: 'reset-ok' })
  } else if (command === 'report') {
    emit({ type: 'report', ...counters, outstanding, errorCodes, errorSamples, ack: ackMs.toJSON(), targetAcks: targetAckMs.map((h) => h.toJSON()) })
  } else if (command === 'stop') break
}
running = false
if (timer) clearTimeout(timer)
for (const t of targets) t.ws.close()
emit({ type: 'stopped' })
process.exit(0)
