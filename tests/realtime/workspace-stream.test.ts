// The workspace stream's snapshot (README: The SSE stream, GET /processes/stream): every non-final process, however many, each
// exactly once, read a page at a time as the socket drains — so a reader that stops reading holds the server
// to a page or two, changes made while the snapshot is still going out arrive, and no process goes back a
// version. Real listening servers; an EventSource, and raw TCP sockets where a reader must stop reading.
import { describe, expect, it } from 'bun:test'
import { connect, type Socket } from 'node:net'
import type { Sql } from '../../src/db/client'
import { getProcesses } from '../../src/processes/queries/reads'
import { streamStats } from '../../src/processes/sse-session'
import { createTenant, listeningServer, testDatabase, waitFor, type Tenant } from '../support/helpers'
import { openEventSource } from '../support/sse-client'

const { db } = await testDatabase()
const server = await listeningServer({ SSE_MAX_MS: '30000', SSE_KEEPALIVE_MS: '1000' }, db)
// The same database behind a server with a short window: the window ends a snapshot still going out.
const shortWindow = await listeningServer({ SSE_MAX_MS: '1500', SSE_KEEPALIVE_MS: '1000' }, db)

const STATUSES = ['pending', 'running', 'failed', 'waiting_review', 'completed', 'cancelled'] as const
const FINAL = new Set(['completed', 'cancelled'])

/** `count` processes in one statement, statuses in turn; `blobBytes` of metadata makes each frame large. */
async function insertMany(sql: Sql, tenant: Tenant, count: number, o: { type: string; statuses?: readonly string[]; blobBytes?: number }) {
  const statuses = [...(o.statuses ?? STATUSES)]
  return sql<{ id: number; status: string; version: number }[]>`
    insert into processes (workspace_id, type, status, created_by, metadata)
    select ${tenant.workspaceId}, ${o.type}, (${statuses}::text[])[1 + (n % ${statuses.length})], ${tenant.userId},
           jsonb_build_object('n', n, 'blob', repeat('x', ${o.blobBytes ?? 0}))
      from generate_series(1, ${count}) n
    returning id, status, version`
}

const post = (path: string, token: string, body?: unknown) =>
  fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })

/** Ids that arrived more than once, for a readable failure. */
function repeated(ids: number[]): number[] {
  const seen = new Set<number>()
  return ids.filter((id) => {
    if (seen.has(id)) return true
    seen.add(id)
    return false
  })
}

/**
 * A raw HTTP/1.1 SSE client over TCP: it can stop reading (pause) so the server feels real backpressure,
 * and decodes the chunked body, as it arrives, into the states it carried, in order.
 */
class RawStream {
  readonly states: Array<{ id: number; status: string; version: number }> = []
  ended = false
  private status = ''
  private raw: Buffer = Buffer.alloc(0)
  private inBody = false
  private text = ''
  private readonly decoder = new TextDecoder()

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
  }

  static async open(port: number, path: string, token: string): Promise<RawStream> {
    const socket = connect(port, '127.0.0.1')
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    const stream = new RawStream(socket)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nAccept: text/event-stream\r\n\r\n`)
    await waitFor(() => stream.inBody, 5000, 'the response to start')
    expect(stream.status).toStartWith('HTTP/1.1 200')
    return stream
  }

  pause() {
    this.socket.pause()
  }

  resume() {
    this.socket.resume()
  }

  close() {
    this.socket.destroy()
  }

  has(id: number, status: string): boolean {
    return this.states.some((s) => s.id === id && s.status === status)
  }

  private receive(chunk: Buffer) {
    this.raw = this.raw.length === 0 ? chunk : Buffer.concat([this.raw, chunk])
    if (!this.inBody) {
      const end = this.raw.indexOf('\r\n\r\n')
      if (end === -1) return
      this.status = this.raw.subarray(0, end).toString()
      this.raw = this.raw.subarray(end + 4)
      this.inBody = true
    }
    // Chunked encoding: "<hex size>\r\n<bytes>\r\n", ended by a chunk of size 0.
    let at = 0
    for (;;) {
      const eol = this.raw.indexOf('\r\n', at)
      if (eol === -1) break
      const size = parseInt(this.raw.subarray(at, eol).toString(), 16)
      if (size === 0) {
        this.ended = true
        break
      }
      if (this.raw.length < eol + 2 + size + 2) break
      this.frames(this.decoder.decode(this.raw.subarray(eol + 2, eol + 2 + size), { stream: true }))
      at = eol + 2 + size + 2
    }
    this.raw = this.raw.subarray(at)
  }

  private frames(text: string) {
    this.text += text
    const frames = this.text.split('\n\n')
    this.text = frames.pop()!
    for (const frame of frames) {
      if (!frame.startsWith('data: ')) continue
      const p = JSON.parse(frame.slice('data: '.length))
      this.states.push({ id: p.id, status: p.status, version: p.version })
    }
  }
}

describe('GET /processes/stream snapshot', () => {
  it('sends every non-final process on connect (well over one page, and over the old 1000-row cap), each exactly once, none of the final ones', async () => {
    const tenant = await createTenant(db.sql)
    const other = await createTenant(db.sql)
    const rows = await insertMany(db.sql, tenant, 1900, { type: 'bulk' })
    await insertMany(db.sql, other, 50, { type: 'bulk' })
    const nonFinal = rows.filter((r) => !FINAL.has(r.status)).map((r) => r.id)
    expect(nonFinal.length).toBeGreaterThan(1200)

    const { source, received } = openEventSource(`${server.url}/processes/stream`, tenant.token)
    try {
      await waitFor(
        () => received.messages.length >= nonFinal.length,
        20_000,
        () => `${nonFinal.length} states; got ${received.messages.length}`,
      )
      await Bun.sleep(300) // anything sent twice would have arrived by now
      const ids = received.messages.map((m) => m.data.id as number)
      expect(repeated(ids)).toEqual([])
      expect([...ids].sort((a, b) => a - b)).toEqual(nonFinal)
      expect(received.messages.every((m) => m.data.workspace_id === tenant.workspaceId && !FINAL.has(m.data.status))).toBe(true)

      // A late copy of a state the snapshot sent (as a Redis resync delivers one) is not sent again.
      const [copy] = await getProcesses(db.sql, [nonFinal[700]!, nonFinal.at(-1)!])
      server.services.hub.deliver(copy!)

      // And after the snapshot, live changes.
      const created = (await (await post('/processes', tenant.token, { type: 'bulk_live' })).json()) as any
      await waitFor(() => received.messages.some((m) => m.data.id === created.id), 5000, 'the new process')
      expect(received.messages).toHaveLength(nonFinal.length + 1)
      expect(received.opens).toBe(1)
    } finally {
      source.close()
    }

    // With a filter: every match, across pages, and nothing else.
    const failed = rows.filter((r) => r.status === 'failed').map((r) => r.id)
    const filtered = openEventSource(`${server.url}/processes/stream?status=failed,running&type=bulk`, tenant.token)
    const expected = rows.filter((r) => r.status === 'failed' || r.status === 'running').map((r) => r.id)
    try {
      await waitFor(
        () => filtered.received.messages.length >= expected.length,
        20_000,
        () => `${expected.length} states; got ${filtered.received.messages.length}`,
      )
      await Bun.sleep(300)
      const ids = filtered.received.messages.map((m) => m.data.id as number)
      expect([...ids].sort((a, b) => a - b)).toEqual(expected)
      expect(failed.length).toBeGreaterThan(300)

      // A snapshot process that leaves the filter is sent once, as it leaves, then no more.
      const leaving = failed[200]!
      expect((await post(`/processes/${leaving}/retry`, tenant.token)).status).toBe(200)
      expect((await post(`/processes/${leaving}/cancel`, tenant.token)).status).toBe(200)
      const marker = failed[201]!
      expect((await post(`/processes/${marker}/retry`, tenant.token)).status).toBe(200)
      await waitFor(() => filtered.received.messages.some((m) => m.data.id === marker && m.data.status === 'pending'), 5000, 'the marker')
      const after = filtered.received.messages.slice(expected.length)
      expect(after.map((m) => [m.data.id, m.data.status])).toEqual([
        [leaving, 'pending'],
        [marker, 'pending'],
      ])
    } finally {
      filtered.source.close()
    }
  }, 60_000)

  it('reads the snapshot as the socket drains: a reader that stops holds it to a few pages, and changes made meanwhile arrive', async () => {
    // About 50 MB of snapshot (6,000 processes of 8 KB; pages of 500 rows, then of about 1 MB). A stopped
    // loopback reader absorbs up to about 10 MB in kernel buffers (send and receive queues), and the server
    // holds a page being written and one queued: about 2,000 rows read, then no more until it reads again.
    const tenant = await createTenant(db.sql)
    const rows = await insertMany(db.sql, tenant, 6000, { type: 'big', statuses: ['pending', 'pending', 'running', 'failed'], blobBytes: 8000 })
    const rowsBefore = streamStats.snapshotRows
    const stream = await RawStream.open(server.server.port!, '/processes/stream', tenant.token)
    stream.pause()
    await Bun.sleep(700)
    const rowsRead = streamStats.snapshotRows - rowsBefore
    expect(rowsRead).toBeGreaterThanOrEqual(500)
    expect(rowsRead).toBeLessThanOrEqual(3000)
    await Bun.sleep(800)
    expect(streamStats.snapshotRows - rowsBefore).toBe(rowsRead)

    // Changes while the snapshot is still going out: the newest process (not read yet) and the oldest (sent
    // already) are cancelled, a failed one is retried, and a new one is created.
    const newest = rows.at(-1)!
    const oldest = rows[0]!
    const retried = rows.find((r) => r.status === 'failed' && r.id > rows[4000]!.id)!
    expect(newest.status).toBe('pending')
    expect(oldest.status).toBe('pending')
    for (const id of [newest.id, oldest.id]) expect((await post(`/processes/${id}/cancel`, tenant.token)).status).toBe(200)
    expect((await post(`/processes/${retried.id}/retry`, tenant.token)).status).toBe(200)
    const created = (await (await post('/processes', tenant.token, { type: 'big_live' })).json()) as any
    expect(streamStats.snapshotRows - rowsBefore).toBe(rowsRead)

    stream.resume()
    const nonFinal = rows.filter((r) => r.id !== newest.id && r.id !== oldest.id).map((r) => r.id)
    try {
      await waitFor(
        () =>
          stream.has(created.id, 'pending') &&
          stream.has(newest.id, 'cancelled') &&
          stream.has(oldest.id, 'cancelled') &&
          stream.states.length >= nonFinal.length + 4,
        20_000,
        () => `every state; got ${stream.states.length}`,
      )
      await Bun.sleep(300)
      const states = stream.states

      // Per process, versions strictly increase: nothing repeated, nothing older after newer.
      const last = new Map<number, number>()
      for (const s of states) {
        expect(s.version).toBeGreaterThan(last.get(s.id) ?? 0)
        last.set(s.id, s.version)
      }
      // Every snapshot process exactly once but those changed meanwhile; the changes arrived.
      const snapshotIds = states.filter((s) => s.version === 1).map((s) => s.id)
      expect(repeated(snapshotIds)).toEqual([])
      expect(new Set(states.map((s) => s.id))).toEqual(new Set([...rows.map((r) => r.id), created.id]))
      expect(states.filter((s) => s.id === newest.id).map((s) => s.status)).toEqual(['cancelled'])
      expect(states.filter((s) => s.id === oldest.id).map((s) => s.status)).toEqual(['pending', 'cancelled'])
      expect(states.filter((s) => s.id === retried.id).at(-1)!.status).toBe('pending')
      expect(stream.ended).toBe(false)
    } finally {
      stream.close()
    }
    await waitFor(() => server.services.hub.counts().workspaceListeners === 0, 5000, 'the stream to be released')
  }, 60_000)

  it('still ends at SSE_MAX_MS while the snapshot is going out, and releases everything', async () => {
    const tenant = await createTenant(db.sql)
    const rows = await insertMany(db.sql, tenant, 3000, { type: 'big_window', statuses: ['pending'], blobBytes: 8000 })
    const started = Date.now()
    const stream = await RawStream.open(shortWindow.server.port!, '/processes/stream', tenant.token)
    stream.pause()
    await Bun.sleep(2500)
    stream.resume()
    try {
      await waitFor(() => stream.ended, 10_000, 'the response to end')
      expect(Date.now() - started).toBeLessThan(8000)
      const ids = stream.states.map((s) => s.id)
      expect(repeated(ids)).toEqual([])
      // Cut short: the client reconnects (and starts the snapshot over).
      expect(ids.length).toBeLessThan(rows.length)
      await waitFor(() => shortWindow.services.hub.counts().workspaceListeners === 0, 5000, 'the stream to be released')
    } finally {
      stream.close()
    }
  }, 30_000)
})
