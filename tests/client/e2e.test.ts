// The client SDK against a real listening server: the worker SDK runs jobs, the monitor watches them.
import { describe, expect, it } from 'bun:test'
import WebSocket from 'ws'
import { monitorProcess, type Process } from '@processes/client'
import { connectWorker, type JobContext, type WebSocketConstructor } from '@processes/client/worker'
import { createTenant, listeningServer, testDatabase, waitFor, workerToken } from '../support/helpers'

const { db } = await testDatabase()
const server = await listeningServer({ SSE_MAX_MS: '1500', PROGRESS_PERSIST_MS: '20' }, db)
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const create = async (type: string, metadata = {}) =>
  (await (
    await fetch(`${server.url}/processes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type, metadata }),
    })
  ).json()) as Process

describe('client SDK end to end', () => {
  it('a worker SDK job reports progress that monitorProcess sees live, across stream windows, until done', async () => {
    const worker = connectWorker(server.url, wtoken, {
      types: ['sdk_job'],
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      async handler(_process, ctx: JobContext) {
        for (let step = 1; step <= 8; step++) {
          await Bun.sleep(250) // 2 s in all: longer than one 1.5-second stream window
          await ctx.progress(step * 12, `step ${step}`)
        }
        return { result_summary: { steps: 8 } }
      },
    })
    const p = await create('sdk_job')
    const seen: Process[] = []
    let final: Process | null = null
    const monitor = monitorProcess(server.url, p.id, {
      token: tenant.token,
      onUpdate: (update) => seen.push(update),
      onDone: (done) => (final = done),
    })
    await waitFor(() => final !== null, 15_000, 'the monitor to see done')
    expect(final!).toMatchObject({ status: 'completed', progress: 100, result_summary: { steps: 8 } })
    const versions = seen.map((s) => s.version)
    expect(new Set(versions).size).toBe(versions.length)
    expect([...versions].sort((a, b) => a - b)).toEqual(versions)
    expect(seen.some((s) => s.status === 'running' && s.progress > 0)).toBe(true)
    monitor.stop()
    await worker.close()
  }, 30_000)

  it("a user's cancel aborts the handler's signal; a thrown error fails the process", async () => {
    let aborted = false
    const worker = connectWorker(server.url, wtoken, {
      types: ['sdk_cancel', 'sdk_throw'],
      concurrency: 2,
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      async handler(process, ctx) {
        if (process.type === 'sdk_throw') throw new Error('row 3 is unreadable')
        await ctx.progress(10)
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()))
        aborted = true
        return {}
      },
    })
    const victim = await create('sdk_cancel')
    const broken = await create('sdk_throw')
    const get = async (id: number) =>
      (await (await fetch(`${server.url}/processes/${id}`, { headers: { authorization: `Bearer ${tenant.token}` } })).json()) as Process
    await waitFor(async () => (await get(victim.id)).progress === 10, 5000, 'the job to start')
    await fetch(`${server.url}/processes/${victim.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${tenant.token}` } })
    await waitFor(() => aborted, 5000, 'the handler to be aborted')
    await waitFor(async () => (await get(broken.id)).status === 'failed', 5000, 'the throwing job to fail')
    expect((await get(broken.id)).error).toContain('row 3 is unreadable')
    expect((await get(victim.id)).status).toBe('cancelled')
    await worker.close()
  }, 30_000)

  it('falls back to polling with If-None-Match when the stream is unavailable, and still sees done', async () => {
    const p = await create('sdk_poll')
    let final: Process | null = null
    // A fetch that refuses every stream (as a hostile proxy would) but lets plain GETs through.
    let notModified = 0
    let polls = 0
    const noStreams = async (input: string, init?: RequestInit) => {
      if (input.includes('/stream')) return new Response('blocked', { status: 502 })
      polls++
      const response = await fetch(input, init)
      if (response.status === 304) notModified++
      return response
    }
    const monitor = monitorProcess(server.url, p.id, {
      token: tenant.token,
      fetch: noStreams,
      pollIntervalMs: 200,
      onUpdate: () => {},
      onDone: (d) => (final = d),
    })
    await waitFor(() => polls >= 3, 15_000, 'the monitor to fall back to polling')
    await fetch(`${server.url}/processes/${p.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${tenant.token}` } })
    await waitFor(() => final !== null, 10_000, 'polling to see the final status')
    expect(final!.status).toBe('cancelled')
    expect(notModified).toBeGreaterThan(0) // unchanged polls were answered 304
    monitor.stop()
  }, 30_000)
})
