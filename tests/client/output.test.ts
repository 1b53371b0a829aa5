// The SDKs and live output: ctx.output and ctx.update in the worker SDK, onOutput on
// monitorProcess, across stream windows, against a real listening server.
import { describe, expect, it } from 'bun:test'
import WebSocket from 'ws'
import { monitorProcess, type OutputChunk, type Process } from '@processes/client'
import { connectWorker, type WebSocketConstructor } from '@processes/client/worker'
import { createTenant, listeningServer, testDatabase, waitFor, workerToken } from '../support/helpers'

const { db } = await testDatabase()
const server = await listeningServer({ SSE_MAX_MS: '700', PROGRESS_PERSIST_MS: '20' }, db)
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)

describe('live output through the SDKs', () => {
  it('ctx.output chunks reach onOutput once each, in order, across stream windows; ctx.update patches the result', async () => {
    const worker = connectWorker(server.url, wtoken, {
      types: ['sdk_output'],
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      async handler(_process, ctx) {
        for (let i = 0; i < 30; i++) {
          expect(await ctx.output(`word${i} `)).toBe(true)
          if (i % 10 === 0) await ctx.update({ result_summary: { words: i + 1 }, message: `${i + 1} words` })
          await Bun.sleep(50) // 1.5 s in all: two stream windows of 0.7 s
        }
        await ctx.output({ done: true })
      },
    })
    const created = (await (
      await fetch(`${server.url}/processes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'sdk_output' }),
      })
    ).json()) as Process
    const chunks: OutputChunk[] = []
    const updates: Process[] = []
    let final: Process | null = null
    const monitor = monitorProcess(server.url, created.id, {
      token: tenant.token,
      onUpdate: (p) => updates.push(p),
      onOutput: (c) => chunks.push(c),
      onDone: (p) => (final = p),
    })
    await waitFor(() => final !== null, 15_000, 'the monitor to see done')
    expect(chunks.map((c) => c.seq)).toEqual(Array.from({ length: 31 }, (_, i) => i + 1))
    expect(chunks.slice(0, 30).map((c) => c.chunk)).toEqual(Array.from({ length: 30 }, (_, i) => `word${i} `))
    expect(chunks[30]!.chunk).toEqual({ done: true })
    // The handler returned no result: the live one (the last update) is kept.
    expect(final!).toMatchObject({ status: 'completed', result_summary: { words: 21 } })
    expect(updates.some((u) => u.message === '11 words')).toBe(true)
    monitor.stop()
    await worker.close()
  }, 30_000)

  it('monitorProcess follows a process with a public token (the end-user flow)', async () => {
    const created = (await (
      await fetch(`${server.url}/processes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'sdk_public', tags: ['user:5'] }),
      })
    ).json()) as Process
    const minted = (await (
      await fetch(`${server.url}/tokens/public`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ tags: ['user:5'] }),
      })
    ).json()) as { token: string }
    const worker = connectWorker(server.url, wtoken, {
      types: ['sdk_public'],
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      async handler(_process, ctx) {
        await Bun.sleep(200)
        await ctx.output('for your eyes')
        return { result_summary: { ok: true } }
      },
    })
    const chunks: unknown[] = []
    let final: Process | null = null
    const monitor = monitorProcess(server.url, created.id, {
      token: minted.token,
      onUpdate: () => {},
      onOutput: (c) => chunks.push(c.chunk),
      onDone: (p) => (final = p),
    })
    await waitFor(() => final !== null, 10_000, 'the monitor to see done')
    expect(chunks).toEqual(['for your eyes'])
    expect(final!).toMatchObject({ status: 'completed', result_summary: { ok: true } })
    monitor.stop()
    await worker.close()
  }, 20_000)
})
