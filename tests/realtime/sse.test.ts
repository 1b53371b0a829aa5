import { describe, expect, it } from 'bun:test'
import { connect } from 'node:net'
import { createTenant, listeningServer, testDatabase, waitFor, workerToken } from '../support/helpers'
import { streamStats } from '../../src/processes/sse-session'
import { openEventSource, readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const server = await listeningServer({ SSE_MAX_MS: '3000', SSE_KEEPALIVE_MS: '400', PROGRESS_PERSIST_MS: '20' }, db)
const base = server.url
const tenant = await createTenant(db.sql)
const other = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const auth = { authorization: `Bearer ${tenant.token}` }

async function create(type = 'csv_import', token = tenant.token) {
  const response = await fetch(`${base}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type }),
  })
  expect(response.status).toBe(201)
  return (await response.json()) as any
}

async function claimed(worker: TestWorker, type: string) {
  const reply = await worker.request({ op: 'claim', types: [type], wait_ms: 0 })
  expect(reply.op).toBe('claimed')
  expect(reply.process).not.toBeNull()
  return reply.process
}

describe('GET /processes/{id}/stream', () => {
  it('sends retry and the snapshot first, every update with id = version, then done with the final state', async () => {
    const p = await create('sse_basic')
    const worker = await TestWorker.connect(base, wtoken)
    const { source, received } = openEventSource(`${base}/processes/${p.id}/stream`, tenant.token)
    await waitFor(() => received.messages.length >= 1)
    expect(received.messages[0]!.data.status).toBe('pending')
    expect(Number(received.messages[0]!.id)).toBe(received.messages[0]!.data.version)

    const running = await claimed(worker, 'sse_basic')
    for (const n of [10, 50, 90]) expect((await worker.request({ op: 'progress', process_id: p.id, progress: n, attempt: running.attempts })).op).toBe('ack')
    expect((await worker.request({ op: 'complete', process_id: p.id, result_summary: { rows: 3 }, attempt: running.attempts })).op).toBe('ack')
    await waitFor(() => received.done.length === 1)

    const versions = received.messages.map((m) => m.data.version)
    expect([...versions].sort((a, b) => a - b)).toEqual(versions)
    expect(new Set(versions).size).toBe(versions.length)
    expect(received.messages.at(-1)!.data.progress).toBe(90)
    const final = received.done[0]!.data
    expect(final.status).toBe('completed')
    expect(final.result_summary).toEqual({ rows: 3 })
    expect(final.version).toBeGreaterThan(versions.at(-1)!)
    expect(Number(received.done[0]!.id)).toBe(final.version)
    source.close()
    worker.close()
  })

  it('has the SSE headers and a retry line, and ends cleanly at SSE_MAX_MS with keepalives meanwhile', async () => {
    const p = await create('sse_quiet')
    const started = Date.now()
    const response = await fetch(`${base}/processes/${p.id}/stream`, { headers: auth })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toStartWith('text/event-stream')
    expect(response.headers.get('cache-control')).toContain('no-cache')
    expect(response.headers.get('x-accel-buffering')).toBe('no')
    const { frames, ended } = await readFrames(response, { maxMs: 6000 })
    expect(ended).toBe(true)
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(2900)
    expect(elapsed).toBeLessThan(5000)
    expect(frames[0]!.retry).toBe('1000')
    expect(frames[1]!.data.id).toBe(p.id)
    expect(frames.filter((f) => f.raw === ': keepalive').length).toBeGreaterThanOrEqual(4)
  })

  for (const ending of ['completed', 'failed', 'cancelled', 'waiting_review'] as const) {
    it(`ends with event: done when the process becomes ${ending}, and answers done at once afterwards`, async () => {
      const type = `sse_end_${ending}`
      const p = await create(type)
      const worker = await TestWorker.connect(base, wtoken)
      const live = fetch(`${base}/processes/${p.id}/stream`, { headers: auth }).then((r) => readFrames(r, { maxMs: 8000 }))
      await Bun.sleep(100)
      if (ending === 'cancelled') {
        expect((await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })).status).toBe(200)
      } else {
        const running = await claimed(worker, type)
        const frame =
          ending === 'failed'
            ? { op: 'fail', process_id: p.id, error: 'boom', attempt: running.attempts }
            : { op: 'complete', process_id: p.id, review: ending === 'waiting_review', attempt: running.attempts }
        expect((await worker.request(frame)).op).toBe('ack')
      }
      const { frames, ended } = await live
      expect(ended).toBe(true)
      const last = frames.at(-1)!
      expect(last.event).toBe('done')
      expect(last.data.status).toBe(ending)
      expect(frames.filter((f) => f.event === 'done')).toHaveLength(1)

      const again = await readFrames(await fetch(`${base}/processes/${p.id}/stream`, { headers: auth }), { maxMs: 3000 })
      expect(again.ended).toBe(true)
      expect(again.frames.map((f) => f.event ?? (f.retry ? 'retry' : 'message'))).toEqual(['retry', 'done'])
      worker.close()
    })
  }

  it('reconnecting with Last-Event-ID neither repeats nor skips a status change', async () => {
    const p = await create('sse_resume')
    const worker = await TestWorker.connect(base, wtoken)
    const first = await fetch(`${base}/processes/${p.id}/stream`, { headers: auth }).then((r) => readFrames(r, { maxMs: 400 }))
    const lastId = first.frames.filter((f) => f.id).at(-1)!.id!
    expect(Number(lastId)).toBe(p.version)

    // While disconnected: claimed (running), progress, then a log line.
    const running = await claimed(worker, 'sse_resume')
    await worker.request({ op: 'progress', process_id: p.id, progress: 40, attempt: running.attempts })
    const resumed = fetch(`${base}/processes/${p.id}/stream`, { headers: { ...auth, 'last-event-id': lastId } }).then((r) => readFrames(r, { maxMs: 8000 }))
    await Bun.sleep(150)
    await worker.request({ op: 'complete', process_id: p.id, attempt: running.attempts })
    const { frames } = await resumed
    const events = frames.filter((f) => f.data)
    // The snapshot is the current state (running, 40%), then done: nothing repeated, no status skipped.
    expect(events[0]!.data.status).toBe('running')
    expect(events[0]!.data.progress).toBe(40)
    expect(Number(events[0]!.id)).toBeGreaterThan(Number(lastId))
    expect(events.at(-1)!.event).toBe('done')
    expect(events.at(-1)!.data.status).toBe('completed')
    const ids = events.map((e) => Number(e.id))
    expect(new Set(ids).size).toBe(ids.length)

    // Up to date: no snapshot at all, only the retry line, keepalives and the clean end.
    const p2 = await create('sse_resume_current')
    const current = await readFrames(await fetch(`${base}/processes/${p2.id}/stream`, { headers: { ...auth, 'last-event-id': String(p2.version) } }), {
      maxMs: 3500,
    })
    expect(current.frames.filter((f) => f.data)).toHaveLength(0)
    expect(current.ended).toBe(true)
    worker.close()
  })

  it('answers an unknown, malformed or future Last-Event-ID with the snapshot', async () => {
    const p = await create('sse_bad_last_id')
    // (`<version>.<seq>` is a cursor since live output, README: Live output: `1.5.2` and `1:5` are malformed.)
    for (const lastEventId of ['abc', '-1', '999999', '1.5.2', '1:5', '']) {
      const { frames } = await readFrames(await fetch(`${base}/processes/${p.id}/stream?last_event_id=${encodeURIComponent(lastEventId)}`, { headers: auth }), {
        maxMs: 250,
      })
      expect(frames.find((f) => f.data)?.data.id).toBe(p.id)
    }
    const { frames } = await readFrames(await fetch(`${base}/processes/${p.id}/stream`, { headers: { ...auth, 'last-event-id': 'garbage' } }), { maxMs: 250 })
    expect(frames.find((f) => f.data)?.data.id).toBe(p.id)
  })

  it('is 404 for another workspace and 401 without a token', async () => {
    const p = await create('sse_private')
    expect((await fetch(`${base}/processes/${p.id}/stream`, { headers: { authorization: `Bearer ${other.token}` } })).status).toBe(404)
    expect((await fetch(`${base}/processes/${p.id}/stream`)).status).toBe(401)
    const cookie = await fetch(`${base}/processes/${p.id}/stream`, { headers: { cookie: `ps_session=${tenant.token}` } })
    expect(cookie.status).toBe(200)
    await cookie.body!.cancel()
  })

  it('releases its hub subscription when the client goes away', async () => {
    const p = await create('sse_release')
    const before = server.services.hub.counts().idListeners
    const channelsBefore = server.bridge?.subscriptions ?? 0
    const sources = Array.from({ length: 5 }, () => openEventSource(`${base}/processes/${p.id}/stream`, tenant.token))
    await waitFor(() => sources.every((s) => s.received.messages.length > 0))
    expect(server.services.hub.counts().idListeners).toBe(before + 5)
    // With Redis: one channel for the five watchers of this process (and one for its live output), not one each.
    if (server.bridge) expect(server.bridge.subscriptions).toBe(channelsBefore + 2)
    for (const s of sources) s.source.close()
    await waitFor(() => server.services.hub.counts().idListeners === before, 5000, 'hub listeners to be released')
    if (server.bridge) await waitFor(() => server.bridge!.subscriptions === channelsBefore, 5000, 'the Redis channel to be unsubscribed')
  })

  it('conflates updates for a reader that does not read: intermediate states are skipped, the newest arrives', async () => {
    // 64 KB of metadata makes each frame large; a raw TCP client that stops reading exerts real backpressure
    // once the kernel's socket buffers are full (about 65 of these frames here, ~4 MB: that depends on the
    // machine, so the test does not count on it). Updates go on until the server reports skipping states for
    // this reader (streamStats.conflated, counted where a newer state replaces an unsent one), then 20 more.
    // Every state must then be accounted for: written to the socket, or replaced by a newer one — no queue.
    const response = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'sse_slow', metadata: { blob: 'x'.repeat(60 * 1024) } }), // under METADATA_MAX_BYTES (64 KiB)
    })
    const p = (await response.json()) as any
    expect(response.status).toBe(201)
    const worker = await TestWorker.connect(base, wtoken)
    const running = await claimed(worker, 'sse_slow')
    const socket = connect(server.server.port!, '127.0.0.1')
    await new Promise((resolve) => socket.once('connect', resolve))
    // Paused before anything arrives (a pause from inside a 'data' handler was seen not to stop Bun reading the
    // socket under load); the server's count of open streams says when this one is subscribed.
    const openBefore = streamStats.open
    socket.write(`GET /processes/${p.id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tenant.token}\r\n\r\n`)
    socket.pause()
    await waitFor(() => streamStats.open === openBefore + 1, 30_000, 'the stream to open')
    const conflatedBefore = streamStats.conflated
    let n = 0
    const update = async () => {
      n++
      expect((await worker.request({ op: 'log', process_id: p.id, message: `line ${n}`, attempt: running.attempts })).op).toBe('ack')
    }
    // 1000 frames of 64 KB (64 MB) is far beyond any socket buffer: a server that queued would fail here.
    while (streamStats.conflated === conflatedBefore && n < 1000) await update()
    expect(streamStats.conflated).toBeGreaterThan(conflatedBefore)
    for (let more = 0; more < 20; more++) await update()

    let text = ''
    socket.on('data', (chunk) => (text += chunk.toString()))
    socket.resume()
    await waitFor(
      () => text.includes(`line ${n}`),
      60_000,
      () => `the newest state (line ${n}): got ${text.length} bytes, ending ${text.slice(-300)}`,
    )
    socket.destroy()
    expect(text).toStartWith('HTTP/1.1 200')
    // Counted only now: a worker's ack goes out before the fan-out, so the last updates may have been offered
    // to the stream after their acks; the newest having arrived, every one of them has been.
    const conflated = streamStats.conflated - conflatedBefore
    // Every state was either sent or replaced by a newer one: the snapshot plus n updates, less those skipped.
    const delivered = text.split('data: ').length - 1
    expect(delivered).toBe(n + 1 - conflated)
    expect(delivered).toBeLessThan(n)
    worker.close()
  }, 240_000) // ~110 updates of a 64 KB process: a minute and more on a loaded 2-core machine
})

describe('GET /processes/stream (workspace)', () => {
  it('starts with the non-final processes, then streams changes of that workspace only', async () => {
    const { sql } = db
    const active = await create('ws_stream')
    const finished = await create('ws_stream')
    await fetch(`${base}/processes/${finished.id}/cancel`, { method: 'POST', headers: auth })
    const foreign = await create('ws_stream', other.token)
    const { source, received } = openEventSource(`${base}/processes/stream?type=ws_stream`, tenant.token)
    await waitFor(() => received.messages.length >= 1)
    const initialIds = received.messages.map((m) => m.data.id)
    expect(initialIds).toContain(active.id)
    expect(initialIds).not.toContain(finished.id)

    const later = await create('ws_stream')
    await fetch(`${base}/processes/${foreign.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${other.token}` } })
    await fetch(`${base}/processes/${active.id}/cancel`, { method: 'POST', headers: auth })
    await waitFor(() => received.messages.some((m) => m.data.id === active.id && m.data.status === 'cancelled'))
    expect(received.messages.some((m) => m.data.id === later.id)).toBe(true)
    expect(received.messages.every((m) => m.data.workspace_id === tenant.workspaceId)).toBe(true)
    expect(received.messages.some((m) => m.data.id === foreign.id)).toBe(false)
    source.close()
    void sql
  })

  it('is 403 for a workspace the caller is not a member of', async () => {
    const response = await fetch(`${base}/processes/stream?workspace_id=${other.workspaceId}`, { headers: auth })
    expect(response.status).toBe(403)
    expect((await response.json()).error.code).toBe('forbidden')
  })
})
