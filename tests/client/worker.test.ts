import { describe, expect, it, afterEach } from 'bun:test'
import WS from 'ws'
import { connectWorker, JobStoppedError, type WorkerEvent, type WebSocketConstructor } from '@processes/client/worker'
import type { Process } from '@processes/client'
import type { ServerWebSocket } from 'bun'
import { processFixture } from '../support/process-fixture'
import { waitFor } from '../support/wait'
import { chooseTransport, withQueryToken } from '../../packages/client/src/worker-connection.ts'

type P = Process
function fakeGateway() {
  const processes = new Map<number, P>()
  const frames: any[] = []
  const sockets = new Set<ServerWebSocket<unknown>>()
  const waiting: (() => void)[] = []
  const hooks: { onFrame?: (f: any, ws: ServerWebSocket<unknown>) => boolean } = {}
  let nextId = 1
  const add = (type = 'csv_import', metadata = {}) => {
    const p: P = processFixture({ id: nextId++, type, metadata })
    processes.set(p.id, p)
    for (const w of waiting.splice(0)) w()
    return p
  }
  const server = Bun.serve<{ workerId: string | null }>({
    port: 0,
    fetch(req, srv) {
      const u = new URL(req.url)
      // As the server takes it: the header (the SDK on Bun and with `ws`), or ?token= (browsers).
      const token = u.searchParams.get('token') ?? /^Bearer (\S+)$/.exec(req.headers.get('authorization') ?? '')?.[1]
      if (token !== 'wt') return new Response('no', { status: 401 })
      return srv.upgrade(req, { data: { workerId: null as string | null } }) ? undefined : new Response('x', { status: 400 })
    },
    websocket: {
      open(ws) {
        sockets.add(ws)
      },
      close(ws) {
        sockets.delete(ws)
      },
      async message(ws: any, raw) {
        const f = JSON.parse(String(raw))
        frames.push(f)
        if (hooks.onFrame?.(f, ws)) return
        const reply = (o: any) => {
          try {
            ws.send(JSON.stringify({ ref: f.ref, ...o }))
          } catch {}
        }
        const err = (code: string) => reply({ op: 'error', code, message: code })
        if (f.op === 'hello') {
          ws.data.workerId = f.worker_id
          return reply({ op: 'ack' })
        }
        if (!ws.data.workerId) return err('invalid_message')
        if (f.op === 'claim') {
          const deadline = Date.now() + f.wait_ms
          while (Date.now() < deadline) {
            const p = [...processes.values()].find((p) => p.status === 'pending' && (!f.types || f.types.includes(p.type)))
            if (p) {
              Object.assign(p, { status: 'running', attempts: p.attempts + 1, worker_id: ws.data.workerId, version: p.version + 1 })
              return reply({ op: 'claimed', process: { ...p } })
            }
            await new Promise<void>((r) => {
              waiting.push(r)
              setTimeout(r, 50)
            })
            if (ws.readyState !== 1) return
          }
          return reply({ op: 'claimed', process: null })
        }
        const p = processes.get(f.process_id)
        if (!p) return err('not_found')
        if (f.attempt !== p.attempts || p.worker_id !== ws.data.workerId) return err('not_owner')
        if (p.status === 'cancelled') return err('cancelled')
        if (f.op === 'complete') {
          if (p.status === 'running')
            Object.assign(p, { status: f.review ? 'waiting_review' : 'completed', progress: 100, result_summary: f.result_summary ?? null })
          else if (!['completed', 'waiting_review'].includes(p.status)) return err('invalid_transition')
          return reply({ op: 'ack' })
        }
        if (f.op === 'fail') {
          if (p.status === 'running') Object.assign(p, { status: 'failed', error: f.error })
          else if (p.status !== 'failed') return err('invalid_transition')
          return reply({ op: 'ack' })
        }
        if (p.status !== 'running') return err('invalid_transition')
        if (f.op === 'progress') {
          p.progress = f.progress
          p.message = f.message ?? p.message
        }
        return reply({ op: 'ack' })
      },
    },
  })
  const cancel = (id: number) => {
    const p = processes.get(id)!
    p.status = 'cancelled'
    for (const s of sockets) s.send(JSON.stringify({ op: 'cancel', process_id: id }))
  }
  return { url: `http://localhost:${server.port}`, server, processes, frames, sockets, add, cancel, hooks }
}
let cleanup: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanup.reverse()) await c()
  cleanup = []
})
const until = (cond: () => boolean) => waitFor(cond, 8000)
const setup = () => {
  const g = fakeGateway()
  cleanup.push(() => g.server.stop(true))
  return g
}

describe('connectWorker', () => {
  it('claims, reports progress with the attempt, completes with result_summary; review on request; throw fails', async () => {
    const g = setup()
    const a = g.add()
    const b = g.add('ai_location_import')
    const c = g.add('boom')
    const events: WorkerEvent[] = []
    const w = connectWorker(g.url, 'wt', {
      workerId: 'w1',
      claimWaitMs: 300,
      onEvent: (e) => events.push(e),
      async handler(p, ctx) {
        expect(await ctx.progress(50.4, 'half')).toBe(true)
        await ctx.log('hello')
        if (p.type === 'boom') throw new Error('kaboom')
        return p.type === 'ai_location_import' ? { review: true, result_summary: { n: 1 } } : { result_summary: { rows_imported: 3 } }
      },
    })
    cleanup.push(() => w.close())
    await until(() => [a, b, c].every((p) => !['pending', 'running'].includes(g.processes.get(p.id)!.status)))
    expect(g.processes.get(a.id)).toMatchObject({ status: 'completed', result_summary: { rows_imported: 3 }, progress: 100 })
    expect(g.processes.get(b.id)!.status).toBe('waiting_review')
    expect(g.processes.get(c.id)).toMatchObject({ status: 'failed', error: 'kaboom' })
    expect(g.frames[0]).toMatchObject({ op: 'hello', worker_id: 'w1' })
    expect(g.frames.find((f) => f.op === 'progress')).toMatchObject({ progress: 50, message: 'half', attempt: 1, process_id: a.id })
    expect(events.map((e) => e.type)).toContain('completed')
    await w.close()
  })

  it('aborts the handler on cancel and sends nothing for it', async () => {
    const g = setup()
    const a = g.add()
    let reason: unknown
    const w = connectWorker(g.url, 'wt', {
      claimWaitMs: 300,
      async handler(_p, ctx) {
        await new Promise<void>((r) => ctx.signal.addEventListener('abort', () => r()))
        reason = ctx.signal.reason
        return { result_summary: { x: 1 } }
      },
    })
    cleanup.push(() => w.close())
    await until(() => g.processes.get(a.id)!.status === 'running')
    await Bun.sleep(50)
    g.cancel(a.id)
    await until(() => reason !== undefined)
    expect(reason).toBeInstanceOf(JobStoppedError)
    expect((reason as JobStoppedError).reason).toBe('cancelled')
    await Bun.sleep(100)
    expect(g.frames.filter((f) => f.op === 'complete')).toEqual([])
  })

  it('reconnects after 1012 with the same worker id and re-sends an unacked complete', async () => {
    const g = setup()
    const a = g.add()
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    let dropNextComplete = true
    g.hooks.onFrame = (f, ws) => {
      if (f.op === 'complete' && dropNextComplete) {
        dropNextComplete = false
        ws.close(1012, 'restarting')
        return true
      }
      return false
    }
    const events: WorkerEvent[] = []
    const w = connectWorker(g.url, 'wt', {
      workerId: 'stable',
      claimWaitMs: 300,
      reconnectMinMs: 20,
      WebSocket: WS as unknown as WebSocketConstructor,
      onEvent: (e) => events.push(e),
      async handler() {
        await gate
        return { result_summary: { ok: true } }
      },
    })
    cleanup.push(() => w.close())
    await until(() => g.processes.get(a.id)!.status === 'running')
    release()
    await until(() => g.processes.get(a.id)!.status === 'completed')
    const hellos = g.frames.filter((f) => f.op === 'hello')
    expect(hellos.length).toBe(2)
    expect(hellos.every((h) => h.worker_id === 'stable')).toBe(true)
    const completes = g.frames.filter((f) => f.op === 'complete')
    expect(completes.length).toBe(2)
    expect(completes[0].ref).toBe(completes[1].ref)
    // hello precedes the re-sent complete on the new connection
    expect(g.frames.indexOf(hellos[1])).toBeLessThan(g.frames.lastIndexOf(completes[1]))
    expect(events.find((e) => e.type === 'disconnected')).toMatchObject({ code: 1012 })
  })

  it('aborts the job when the server says not_owner', async () => {
    const g = setup()
    const a = g.add()
    let aborted = false
    const w = connectWorker(g.url, 'wt', {
      claimWaitMs: 300,
      async handler(_p, ctx) {
        await Bun.sleep(50)
        g.processes.get(a.id)!.attempts = 99 // another run replaced us
        expect(await ctx.progress(10)).toBe(false)
        aborted = ctx.signal.aborted
      },
    })
    cleanup.push(() => w.close())
    await until(() => aborted)
    await Bun.sleep(100)
    expect(g.frames.filter((f) => f.op === 'complete')).toEqual([])
  })

  it('runs up to `concurrency` handlers at once', async () => {
    const g = setup()
    for (let i = 0; i < 5; i++) g.add()
    let active = 0,
      peak = 0
    const w = connectWorker(g.url, 'wt', {
      concurrency: 3,
      claimWaitMs: 200,
      async handler() {
        active++
        peak = Math.max(peak, active)
        await Bun.sleep(100)
        active--
      },
    })
    cleanup.push(() => w.close())
    await until(() => [...g.processes.values()].every((p) => p.status === 'completed'))
    expect(peak).toBe(3)
  })

  it('close() waits for running handlers; close({timeoutMs}) fails the ones left', async () => {
    const g = setup()
    const a = g.add()
    const w = connectWorker(g.url, 'wt', {
      claimWaitMs: 200,
      async handler() {
        await Bun.sleep(300)
        return { result_summary: { done: 1 } }
      },
    })
    await until(() => g.processes.get(a.id)!.status === 'running')
    await w.close()
    expect(g.processes.get(a.id)!.status).toBe('completed')

    const b = g.add()
    const w2 = connectWorker(g.url, 'wt', {
      claimWaitMs: 200,
      async handler() {
        await Bun.sleep(10_000)
      },
    })
    await until(() => g.processes.get(b.id)!.status === 'running')
    const t = Date.now()
    await w2.close({ timeoutMs: 200 })
    expect(Date.now() - t).toBeLessThan(1500)
    expect(g.processes.get(b.id)).toMatchObject({ status: 'failed', error: 'worker shut down before the job finished' })
  })

  it('stops retrying when the token is refused (401 at the upgrade), with an auth error', async () => {
    const g = setup()
    const errors: Error[] = []
    const w = connectWorker(g.url, 'bad', { reconnectMinMs: 20, reconnectMaxMs: 100, onError: (e) => errors.push(e), handler() {} })
    expect(await w.stopped).toMatchObject({ reason: 'unauthenticated', error: { status: 401, code: 'unauthenticated' } })
    expect(errors.map((e) => e.name)).toEqual(['WorkerAuthError'])
    await w.close()
  })

  it('keeps retrying with backoff when the gateway fails for another reason (500 at the upgrade)', async () => {
    let attempts = 0
    const broken = Bun.serve({
      port: 0,
      fetch: () => {
        attempts++
        return new Response('down', { status: 500 })
      },
    })
    cleanup.push(() => broken.stop(true))
    const errors: Error[] = []
    const w = connectWorker(`http://localhost:${broken.port}`, 'wt', { reconnectMinMs: 20, reconnectMaxMs: 100, onError: (e) => errors.push(e), handler() {} })
    await until(() => errors.length >= 3)
    expect(attempts).toBeGreaterThanOrEqual(3)
    expect(errors.every((e) => e.name === 'Error' && /close code/.test(e.message))).toBe(true)
    await w.close()
    expect(await w.stopped).toEqual({ reason: 'closed' })
  })
})

describe('how the worker token travels, per runtime', () => {
  const Global = (() => {}) as unknown as WebSocketConstructor
  const Ws = (() => {}) as unknown as WebSocketConstructor

  it('is a header on Bun, ws (a header) on Node, also on Node 22+ with its global class; ?token= elsewhere', async () => {
    expect(chooseTransport({ passed: undefined, global: Global, isBun: true, isNode: true })).toEqual({ kind: 'header', WebSocket: Global })
    const node22 = chooseTransport({ passed: undefined, global: Global, isBun: false, isNode: true, load: async () => Ws })
    expect(node22.kind).toBe('ws-or-query')
    if (node22.kind !== 'ws-or-query') throw new Error('unreachable')
    expect(await node22.WebSocket).toBe(Ws)
    expect(node22.fallback).toBe(Global)
    const node20 = chooseTransport({ passed: undefined, global: undefined, isBun: false, isNode: true, load: async () => Ws })
    expect(node20).toMatchObject({ kind: 'ws-or-query', fallback: undefined })
    // A browser (or Deno): its global class, which takes no headers.
    expect(chooseTransport({ passed: undefined, global: Global, isBun: false, isNode: false })).toEqual({ kind: 'query', WebSocket: Global })
    // A class passed in: the SDK cannot know it sends headers.
    expect(chooseTransport({ passed: Ws, global: Global, isBun: true, isNode: false })).toEqual({ kind: 'query', WebSocket: Ws })
  })

  it('adds ?token= to the URL it is given, and offers no headers, when falling back to a headerless class', () => {
    const made: unknown[][] = []
    const Recording = function (this: unknown, ...args: unknown[]) {
      made.push(args)
    } as unknown as WebSocketConstructor
    ;new (withQueryToken(Recording, 'psw_secret'))('ws://127.0.0.1:1/workers/ws', { headers: { Authorization: 'Bearer psw_secret' } })
    expect(made).toEqual([['ws://127.0.0.1:1/workers/ws?token=psw_secret']])
  })
})
