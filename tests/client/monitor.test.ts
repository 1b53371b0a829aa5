import { describe, expect, it, afterEach } from 'bun:test'
import { EventSource as NpmEventSource } from 'eventsource'
import { waitFor as until } from '../support/wait'
import { monitorProcess, monitorWorkspace, SseParser, MonitorError, type Process, type SseEvent } from '@processes/client'

const proc = (version: number, status: Process['status'] = 'running', id = 1): Process => ({
  id,
  workspace_id: 1,
  type: 'csv_import',
  status,
  progress: Math.min(100, version * 10),
  message: null,
  metadata: {},
  result_summary: null,
  error: null,
  attempts: 1,
  version,
  worker_id: 'w',
  created_by: 1,
  created_at: '',
  updated_at: '',
  started_at: null,
  finished_at: null,
  priority: 0,
  run_at: '',
  max_attempts: 1,
  tags: [],
  parent_id: null,
  root_id: 1,
  children: null,
  error_stack: null,
})
const sse = (chunks: string[], delayMs = 20, end = true) =>
  new ReadableStream({
    async start(c) {
      for (const ch of chunks) {
        c.enqueue(new TextEncoder().encode(ch))
        await Bun.sleep(delayMs)
      }
      if (end) c.close()
    },
  })
const streamResponse = (body: ReadableStream) => new Response(body, { headers: { 'Content-Type': 'text/event-stream' } })
let servers: ReturnType<typeof Bun.serve>[] = []
const serve = (fetch: (req: Request) => Response | Promise<Response>) => {
  const s = Bun.serve({ port: 0, fetch, idleTimeout: 0 })
  servers.push(s)
  return `http://localhost:${s.port}`
}
afterEach(() => {
  for (const s of servers) s.stop(true)
  servers = []
})

describe('SseParser', () => {
  it('parses CRLF, LF, CR, multi-line data, comments, id, retry across arbitrary chunk splits', () => {
    const text =
      '\uFEFFretry: 1000\r\n: keepalive\r\nid: 1\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: done\rdata: x\r\r: c\ndata\n\nid: 7\nfoo: bar\ndata:  two spaces\n\n'
    for (let size = 1; size <= text.length; size++) {
      const events: SseEvent[] = []
      const retries: number[] = []
      const comments: string[] = []
      const p = new SseParser({ onEvent: (e) => events.push(e), onRetry: (r) => retries.push(r), onComment: (c) => comments.push(c) })
      for (let i = 0; i < text.length; i += size) p.push(text.slice(i, i + size))
      expect(events).toEqual([
        { type: 'message', data: '{"a":\n1}', id: '1' },
        { type: 'done', data: 'x', id: '1' },
        { type: 'message', data: '', id: '1' },
        { type: 'message', data: ' two spaces', id: '7' },
      ])
      expect(retries).toEqual([1000])
      expect(comments).toEqual(['keepalive', 'c'])
    }
  })
})

describe('monitorProcess', () => {
  it('streams with a token, reconnects with Last-Event-ID after each window, completes only on done', async () => {
    const seen: (string | null)[] = []
    let n = 0
    const base = serve((req) => {
      const url = new URL(req.url)
      if (url.pathname !== '/processes/1/stream') return new Response('no', { status: 500 })
      expect(req.headers.get('authorization')).toBe('Bearer tok')
      seen.push(req.headers.get('last-event-id'))
      n++
      if (n === 1) return streamResponse(sse(['retry: 50\n\n', `id: 1\ndata: ${JSON.stringify(proc(1))}\n\n`, `id: 2\ndata: ${JSON.stringify(proc(2))}\n\n`]))
      if (n === 2)
        return streamResponse(
          sse(['retry: 50\n\n', ': keepalive\n\n', `id: 2\ndata: ${JSON.stringify(proc(2))}\n\n`, `id: 3\ndata: ${JSON.stringify(proc(3))}\n\n`]),
        ) // dup 2
      return streamResponse(sse(['retry: 50\n\n', `event: done\nid: 4\ndata: ${JSON.stringify(proc(4, 'completed'))}\n\n`]))
    })
    const updates: number[] = []
    const done: Process[] = []
    monitorProcess(base, 1, { token: 'tok', onUpdate: (p) => updates.push(p.version), onDone: (p) => done.push(p) })
    await until(() => done.length > 0)
    await Bun.sleep(200)
    expect(updates).toEqual([1, 2, 3, 4])
    expect(done.length).toBe(1)
    expect(done[0]!.status).toBe('completed')
    expect(seen).toEqual([null, '2', '3'])
  })

  it('treats 404 as fatal', async () => {
    const base = serve(() => Response.json({ error: { code: 'not_found', message: 'process not found' } }, { status: 404 }))
    const errors: MonitorError[] = []
    monitorProcess(base, 9, { token: 't', onUpdate() {}, onDone() {}, onError: (e) => errors.push(e) })
    await until(() => errors.length > 0)
    expect(errors[0]).toBeInstanceOf(MonitorError)
    expect(errors[0]!.code).toBe('not_found')
    expect(errors[0]!.status).toBe(404)
  })

  it('polls with If-None-Match after three failed connects and finishes on a final status', async () => {
    let streams = 0
    let polls = 0
    const inm: (string | null)[] = []
    const base = serve((req) => {
      const url = new URL(req.url)
      if (url.pathname.endsWith('/stream')) {
        streams++
        return new Response('bad gateway', { status: 502 })
      }
      polls++
      inm.push(req.headers.get('if-none-match'))
      if (polls === 2) return new Response(null, { status: 304 })
      const p = polls >= 3 ? proc(5, 'waiting_review') : proc(2)
      return Response.json(p, { headers: { ETag: `"${p.version}"` } })
    })
    const updates: number[] = []
    let done = 0
    const t = Date.now()
    monitorProcess(base, 1, { token: 't', pollIntervalMs: 50, onUpdate: (p) => updates.push(p.version), onDone: () => done++ })
    await until(() => done > 0)
    expect(streams).toBe(3)
    expect(updates).toEqual([2, 5])
    expect(inm).toEqual([null, '"2"', '"2"'])
    await Bun.sleep(200)
    expect(done).toBe(1)
    console.log('fell back after', Date.now() - t, 'ms')
  })

  it('falls back to polling on a silent (buffered) stream, and returns to streaming later', async () => {
    let streams = 0
    let polls = 0
    const base = serve((req) => {
      const url = new URL(req.url)
      if (url.pathname.endsWith('/stream')) {
        streams++
        if (streams === 1) return streamResponse(sse([], 0, false)) // never sends a byte
        return streamResponse(sse(['retry: 1000\n\n', `event: done\ndata: ${JSON.stringify(proc(9, 'completed'))}\n\n`]))
      }
      polls++
      return Response.json(proc(3), { headers: { ETag: '"3"' } })
    })
    const updates: number[] = []
    let done = 0
    monitorProcess(base, 1, {
      token: 't',
      silenceMs: 200,
      pollIntervalMs: 50,
      streamRetryMs: 400,
      onUpdate: (p) => updates.push(p.version),
      onDone: () => done++,
    })
    await until(() => done > 0)
    expect(streams).toBe(2)
    expect(polls).toBeGreaterThan(2)
    expect(updates).toEqual([3, 9])
  })

  it('uses EventSource without a token, with ?last_event_id= on its own reconnects', async () => {
    const seen: (string | null)[] = []
    let n = 0
    const base = serve((req) => {
      const url = new URL(req.url)
      seen.push(url.searchParams.get('last_event_id'))
      n++
      if (n === 1) return streamResponse(sse(['retry: 30\n\n', `id: 1\ndata: ${JSON.stringify(proc(1))}\n\n`]))
      if (n === 2) return streamResponse(sse(['retry: 30\n\n', ': keepalive\n\n']))
      return streamResponse(sse(['retry: 30\n\n', `event: done\ndata: ${JSON.stringify(proc(2, 'failed'))}\n\n`]))
    })
    const updates: number[] = []
    let done = 0
    monitorProcess(base, 1, { EventSource: NpmEventSource, onUpdate: (p) => updates.push(p.version), onDone: () => done++ })
    await until(() => done > 0)
    expect(updates).toEqual([1, 2])
    expect(seen).toEqual([null, '1', '1'])
  })

  it('detects a fatal status hidden by EventSource', async () => {
    const base = serve(() => Response.json({ error: { code: 'unauthenticated', message: 'sign in' } }, { status: 401 }))
    const errors: MonitorError[] = []
    monitorProcess(base, 1, { EventSource: NpmEventSource, onUpdate() {}, onDone() {}, onError: (e) => errors.push(e) })
    await until(() => errors.length > 0)
    expect(errors[0]!.code).toBe('unauthenticated')
  })

  it('stop() silences every callback', async () => {
    const base = serve(() => streamResponse(sse(['retry: 10\n\n', `data: ${JSON.stringify(proc(1))}\n\n`, `data: ${JSON.stringify(proc(2))}\n\n`], 100)))
    const updates: number[] = []
    const h = monitorProcess(base, 1, {
      token: 't',
      onUpdate: (p) => {
        updates.push(p.version)
        h.stop()
      },
      onDone() {},
    })
    await Bun.sleep(400)
    expect(updates).toEqual([1])
  })
})

describe('monitorWorkspace', () => {
  it('de-duplicates per id, reconnects after each window and says so', async () => {
    let n = 0
    const urls: string[] = []
    const base = serve((req) => {
      n++
      urls.push(new URL(req.url).search)
      const a = JSON.stringify(proc(n, 'running', 1))
      const b = JSON.stringify(proc(1, 'pending', 2))
      return streamResponse(sse(['retry: 20\n\n', `data: ${a}\n\n`, `data: ${b}\n\n`]))
    })
    const got: string[] = []
    let reconnects = 0
    const h = monitorWorkspace(base, {
      workspaceId: 3,
      status: ['pending', 'running'],
      token: 't',
      onUpdate: (p) => got.push(`${p.id}@${p.version}`),
      onReconnect: () => reconnects++,
    })
    await until(() => n >= 3 && reconnects >= 2)
    h.stop()
    expect(got.slice(0, 3)).toEqual(['1@1', '2@1', '1@2'])
    expect(reconnects).toBeGreaterThanOrEqual(2)
    expect(urls[0]).toBe('?workspace_id=3&status=pending%2Crunning')
  })
})
