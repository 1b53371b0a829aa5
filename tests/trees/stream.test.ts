// Trees against a real listening server: a worker spawns children (ctx.spawn), the parent's SSE stream follows
// the whole tree (counts, aggregated progress, coalesced, then done), finalize sees ctx.children, and spawn is
// fenced (after a cancel: `cancelled`; a scoped token: its types only).
import { describe, expect, it } from 'bun:test'
import WebSocket from 'ws'
import { monitorProcess } from '@processes/client'
import { connectWorker, type WebSocketConstructor } from '@processes/client/worker'
import { createWorkerToken } from '../../src/auth/queries'
import { createTenant, listeningServer, testDatabase, waitFor, workerToken } from '../support/helpers'
import { openStream } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const server = await listeningServer({ SSE_MAX_MS: '20000', PROGRESS_PERSIST_MS: '20', RATE_LIMIT_PER_TOKEN_PER_S: '0' }, db)
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const post = async (body: unknown) =>
  (await fetch(`${server.url}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })) as Response
const getJson = async (path: string) => (await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${tenant.token}` } })).json() as Promise<any>

describe('a tree followed on its parent stream', () => {
  it('ctx.spawn makes 200 children; the parent stream shows counts and progress, ≤ 10 updates/s, then done', async () => {
    const worker = connectWorker(server.url, wtoken, {
      types: ['csv_import', 'csv_chunk'],
      concurrency: 20,
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      async handler(process, ctx) {
        if (process.type === 'csv_import') {
          // ~60 KB of children: ctx.spawn sends them in frames under the 64 KiB limit.
          const ids = await ctx.spawn(Array.from({ length: 200 }, (_, i) => ({ type: 'csv_chunk', metadata: { chunk: i, pad: 'x'.repeat(250) } })))
          return { result_summary: { chunks: ids.length } }
        }
        for (let p = 25; p <= 75; p += 25) {
          await ctx.progress(p)
          await Bun.sleep(5)
        }
        return { result_summary: { rows: 10 } }
      },
    })
    const parent = (await (await post({ type: 'csv_import' })).json()) as any
    const stream = openStream(`${server.url}/processes/${parent.id}/stream`, tenant.token)
    // The workspace stream filtered to this tree, and the monitor's counts.
    const tree = openStream(`${server.url}/processes/stream?root_id=${parent.id}`, tenant.token)
    const counts: number[] = []
    const monitor = monitorProcess(server.url, parent.id, {
      token: tenant.token,
      onUpdate: () => {},
      onDone: () => {},
      onChildren: (c) => counts.push(c.completed),
    })
    await post({ type: 'not_in_tree' })
    await waitFor(() => stream.done.length > 0, 20_000, 'the parent stream to end with done')
    expect(tree.messages.length).toBeGreaterThan(200)
    expect(tree.messages.every((m) => m.data.root_id === parent.id)).toBe(true)
    expect(tree.messages.some((m) => m.data.parent_id === parent.id && m.data.status === 'completed')).toBe(true)
    await waitFor(() => counts.at(-1) === 200, 5000, 'the monitor to see every child completed')
    monitor.stop()
    tree.source.close()
    const final = stream.done[0]!.data
    expect(final).toMatchObject({ status: 'completed', progress: 100, result_summary: { chunks: 200 } })
    expect(final.children).toEqual({ total: 200, pending: 0, running: 0, waiting_review: 0, completed: 200, failed: 0, cancelled: 0 })
    // Strictly increasing versions, no progress going backwards, counts arriving as they change.
    expect([...stream.versions].sort((a, b) => a - b)).toEqual(stream.versions)
    expect(new Set(stream.versions).size).toBe(stream.versions.length)
    const progress = stream.messages.map((m) => m.data.progress)
    for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1])
    expect(stream.messages.some((m) => m.data.children && m.data.children.completed > 0 && m.data.children.completed < 200)).toBe(true)
    expect(stream.messages.some((m) => m.data.progress > 0 && m.data.progress < 100)).toBe(true)
    // Claims do not touch the parent: its running children are what the refresher recounted, and every state's
    // counts add up to its total.
    expect(stream.messages.some((m) => m.data.children && m.data.children.running > 0)).toBe(true)
    for (const { data } of stream.messages) {
      if (!data.children) continue
      const { total, ...each } = data.children as Record<string, number>
      expect(Object.values(each).reduce((a, b) => a + b, 0)).toBe(total)
    }
    // Coalesced while the children report (once the parent waits: before that, its own commits, which are never
    // coalesced): no 1-second window carries more than 10 updates.
    const waiting = stream.messages.findIndex((m) => String(m.data.message).startsWith('waiting for'))
    expect(waiting).toBeGreaterThanOrEqual(0)
    const ats = [...stream.messages.slice(waiting + 1).map((m) => m.at), ...stream.done.map((m) => m.at)]
    for (const at of ats) expect(ats.filter((x) => x >= at && x < at + 1000).length).toBeLessThanOrEqual(10)
    // Reads: the children, paged and filtered; the list by parent_id.
    const page = await fetch(`${server.url}/processes/${parent.id}/children?limit=150`, { headers: { authorization: `Bearer ${tenant.token}` } })
    expect(((await page.json()) as any[]).length).toBe(150)
    expect(page.headers.get('link')).toContain(`after=`)
    const next = await getJson(page.headers.get('link')!.slice(1, page.headers.get('link')!.indexOf('>')))
    expect(next.length).toBe(50)
    expect((await getJson(`/processes/${parent.id}/children?status=failed`)).length).toBe(0)
    expect((await getJson(`/processes?parent_id=${parent.id}&limit=5`)).map((p: any) => p.parent_id)).toEqual(Array(5).fill(parent.id))
    stream.source.close()
    await worker.close()
  }, 30_000)

  it('finalize: the parent runs again after its children and reads them with ctx.children', async () => {
    const worker = connectWorker(server.url, wtoken, {
      types: ['fin_parent', 'fin_child'],
      concurrency: 4,
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      async handler(process, ctx) {
        if (process.type === 'fin_child') return { result_summary: { rows: Number((process.metadata as any).rows) } }
        if (process.attempts === 1) return
        let rows = 0
        let after: number | undefined
        for (;;) {
          const page = await ctx.children({ limit: 2, ...(after ? { after } : {}) })
          for (const c of page.children) rows += Number(c.result_summary?.rows ?? 0)
          if (page.next_after === null) break
          after = page.next_after
        }
        return { result_summary: { rows } }
      },
    })
    const parent = (await (
      await post({ type: 'fin_parent', finalize: true, children: [1, 2, 3, 4, 5].map((rows) => ({ type: 'fin_child', metadata: { rows } })) })
    ).json()) as any
    await waitFor(async () => (await getJson(`/processes/${parent.id}`)).status === 'completed', 15_000, 'the finalized parent')
    expect(await getJson(`/processes/${parent.id}`)).toMatchObject({ result_summary: { rows: 15 }, attempts: 2 })
    await worker.close()
  }, 20_000)

  it('spawn after cancel is refused with `cancelled`; a scoped token spawns only its types', async () => {
    const w = await TestWorker.connect(server.url, wtoken)
    await w.request({ op: 'hello', worker_id: `tree-${crypto.randomUUID()}` })
    const parent = (await (await post({ type: 'spawn_cancel' })).json()) as any
    const claimed = await w.request({ op: 'claim', types: ['spawn_cancel'] })
    expect(claimed.process.id).toBe(parent.id)
    const ok = await w.request({ op: 'spawn', process_id: parent.id, attempt: 1, children: [{ type: 'leaf' }] })
    expect(ok).toMatchObject({ op: 'ack', children: { total: 1 } })
    // Its handler returns: it waits for the child; the same complete again (a lost ack) is acked again.
    expect(await w.request({ op: 'complete', process_id: parent.id, attempt: 1 })).toMatchObject({ op: 'ack' })
    expect(await w.request({ op: 'complete', process_id: parent.id, attempt: 1 })).toMatchObject({ op: 'ack', repeated: true })
    expect(await getJson(`/processes/${parent.id}`)).toMatchObject({ status: 'running', worker_id: null, message: 'waiting for 1 of 1 children' })
    await fetch(`${server.url}/processes/${parent.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${tenant.token}` } })
    const late = await w.request({ op: 'spawn', process_id: parent.id, attempt: 1, children: [{ type: 'leaf' }] })
    expect(late).toMatchObject({ op: 'error', code: 'cancelled' })
    const kids = await getJson(`/processes/${parent.id}/children`)
    expect(kids.map((k: any) => k.status)).toEqual(['cancelled'])

    const scoped = (await createWorkerToken(db.sql, 'scoped', { types: ['scoped_parent', 'scoped_child'] })).token
    const s = await TestWorker.connect(server.url, scoped)
    await s.request({ op: 'hello', worker_id: `scoped-${crypto.randomUUID()}` })
    const sp = (await (await post({ type: 'scoped_parent' })).json()) as any
    expect((await s.request({ op: 'claim', types: ['scoped_parent'] })).process.id).toBe(sp.id)
    expect(await s.request({ op: 'spawn', process_id: sp.id, children: [{ type: 'other_type' }] })).toMatchObject({ op: 'error', code: 'invalid_message' })
    expect(await s.request({ op: 'spawn', process_id: sp.id, children: [{ type: 'scoped_child' }] })).toMatchObject({ op: 'ack' })
    // Another worker's socket does not hold the lease.
    expect(await w.request({ op: 'spawn', process_id: sp.id, children: [{ type: 'leaf' }] })).toMatchObject({ op: 'error', code: 'not_owner' })
    w.ws.close()
    s.ws.close()
  }, 20_000)
})
