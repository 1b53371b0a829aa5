// Reference ceiling for `bench fanout` / `bench ingest`: a trivial Bun.serve SSE broadcast server speaking just
// enough of the real protocol for the same clients: `GET /processes/{id}/stream` (a plain ReadableStream per
// client, a snapshot first) and a worker WebSocket at /workers/ws whose `progress` frames are broadcast at once
// to every stream of that process and acked, and whose `output` frames (bench output) go out as `event: output`
// with a `<version>.<seq>` id, as the real server's do. No auth, no database, no hub, no conflation: the cost
// of the sockets alone.
import type { ServerWebSocket } from 'bun'

const encoder = new TextEncoder()
const streams = new Map<number, Set<ReadableStreamDefaultController<Uint8Array>>>()
const versions = new Map<number, number>()
const outputSeqs = new Map<number, number>()
const startedAt = new Date().toISOString()

// The same shape (and so about the same size) as the real server's process JSON.
function processJson(id: number, version: number, progress: number, message: string | null) {
  return JSON.stringify({
    id,
    workspace_id: 1,
    type: 'bench_job',
    status: 'running',
    progress,
    message,
    error: null,
    attempts: 1,
    version,
    worker_id: 'bench-broadcaster',
    created_by: null,
    created_at: startedAt,
    updated_at: new Date().toISOString(),
    started_at: startedAt,
    finished_at: null,
    metadata: { n: id },
    result_summary: null,
  })
}

/** Writes one event to every stream of a process (the text is made only when there is one). */
function broadcast(id: number, event: () => string) {
  const watchers = streams.get(id)
  if (!watchers || watchers.size === 0) return
  const chunk = encoder.encode(event())
  for (const controller of watchers) {
    try {
      controller.enqueue(chunk)
    } catch {
      watchers.delete(controller)
    }
  }
}

Bun.serve({
  port: Number(process.env.PORT ?? 0),
  hostname: '127.0.0.1',
  development: false,
  idleTimeout: 255,
  fetch(request, server) {
    const path = new URL(request.url).pathname
    if (path === '/health') return new Response('ok')
    if (path === '/workers/ws') return server.upgrade(request) ? undefined : new Response('upgrade expected', { status: 426 })
    const match = /^\/processes\/(\d+)\/stream$/.exec(path)
    if (!match) return new Response('not found', { status: 404 })
    const id = Number(match[1])
    let set = streams.get(id)
    if (!set) streams.set(id, (set = new Set()))
    const watchers = set
    let self: ReadableStreamDefaultController<Uint8Array>
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        self = controller
        watchers.add(controller)
        const version = versions.get(id) ?? 1
        controller.enqueue(encoder.encode(`retry: 1000\n\nid: ${version}\ndata: ${processJson(id, version, 0, 'Started')}\n\n`))
      },
      cancel() {
        watchers.delete(self)
      },
    })
    return new Response(body, { headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' } })
  },
  websocket: {
    perMessageDeflate: false,
    idleTimeout: 120,
    message(ws: ServerWebSocket<unknown>, raw) {
      let frame: { op?: string; ref?: unknown; process_id?: number; progress?: number; message?: string | null; chunk?: unknown }
      try {
        frame = JSON.parse(String(raw))
      } catch {
        ws.send(JSON.stringify({ op: 'error', code: 'invalid_message', message: 'frame is not valid JSON' }))
        return
      }
      const ref = frame.ref === undefined ? {} : { ref: frame.ref }
      if (frame.op === 'progress' && typeof frame.process_id === 'number') {
        const version = (versions.get(frame.process_id) ?? 1) + 1
        versions.set(frame.process_id, version)
        const id = frame.process_id
        broadcast(id, () => `id: ${version}\ndata: ${processJson(id, version, frame.progress ?? 0, frame.message ?? null)}\n\n`)
        ws.send(JSON.stringify({ op: 'ack', version, ...ref }))
      } else if (frame.op === 'output' && typeof frame.process_id === 'number') {
        const seq = (outputSeqs.get(frame.process_id) ?? 0) + 1
        outputSeqs.set(frame.process_id, seq)
        const version = versions.get(frame.process_id) ?? 1
        broadcast(frame.process_id, () => `id: ${version}.${seq}\nevent: output\ndata: ${JSON.stringify({ seq, chunk: frame.chunk })}\n\n`)
        ws.send(JSON.stringify({ op: 'ack', seq, ...ref }))
      } else ws.send(JSON.stringify({ op: 'ack', ...ref }))
    },
  },
})
