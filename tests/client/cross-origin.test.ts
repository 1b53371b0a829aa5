// The monitor client in a real headless Chromium, on a page of another origin than the server's (another
// port of 127.0.0.1: another origin, the same site, so the browser holds one `ps_session` cookie for both),
// with cookie auth only: `withCredentials` is what sends the cookie with its streams and reads. And a page
// of an origin CORS_ORIGINS does not list: the monitor and the React hook say `cors`, the server logs it.
import { afterAll, describe, expect, it } from 'bun:test'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { type Browser, chromium } from 'playwright-core'
import { Logger } from '../../src/ops/log'
import { startServer } from '../../src/server'
import { ROOT, createTenant, testConfig, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

const CHROMIUM = '/usr/bin/chromium'

describe.skipIf(!existsSync(CHROMIUM))('monitorProcess from another origin, with the session cookie', async () => {
  const built = await Bun.build({ entrypoints: [join(ROOT, 'packages/client/src/monitor.ts')], target: 'browser', format: 'esm' })
  const bundle = await built.outputs[0]!.text()
  const page = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: (request) =>
      new URL(request.url).pathname === '/monitor.js'
        ? new Response(bundle, { headers: { 'content-type': 'text/javascript' } })
        : new Response('<!doctype html><title>app</title><script type="module">import * as m from "/monitor.js"; window.monitor = m</script>', {
            headers: { 'content-type': 'text/html' },
          }),
  })
  afterAll(() => page.stop(true))
  const pageOrigin = `http://127.0.0.1:${page.port}`

  // A page of an origin the server does not list: the monitor and, rendered by React, the hook.
  const hooked = await Bun.build({
    entrypoints: [join(ROOT, 'tests/support/hook-page.ts')],
    target: 'browser',
    format: 'esm',
    minify: true,
    define: { 'process.env.NODE_ENV': '"production"' },
  })
  const hookBundle = await hooked.outputs[0]!.text()
  const stranger = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: (request) => {
      const path = new URL(request.url).pathname
      if (path === '/monitor.js') return new Response(bundle, { headers: { 'content-type': 'text/javascript' } })
      if (path === '/hook.js') return new Response(hookBundle, { headers: { 'content-type': 'text/javascript' } })
      return new Response(
        '<!doctype html><title>stranger</title><script type="module">import * as m from "/monitor.js"; window.monitor = m</script><script type="module" src="/hook.js"></script>',
        { headers: { 'content-type': 'text/html' } },
      )
    },
  })
  afterAll(() => stranger.stop(true))
  const strangerOrigin = `http://127.0.0.1:${stranger.port}`

  const { db } = await testDatabase()
  const logLines: string[] = []
  const server = await startServer(testConfig({ CORS_ORIGINS: pageOrigin, PROGRESS_PERSIST_MS: '50' }), {
    db,
    log: new Logger('warn', (text) => logLines.push(...text.trimEnd().split('\n'))),
  })
  afterAll(() => server.stop())
  const tenant = await createTenant(db.sql)
  const wtoken = await workerToken(db.sql)
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  })
  afterAll(() => browser.close())
  const context = await browser.newContext()
  await context.addCookies([{ name: 'ps_session', value: tenant.token, url: server.url }])
  afterAll(() => context.close())

  /** Starts monitorProcess in the page; what it reports collects in window.seen. */
  async function monitorInPage(id: number, withCredentials: boolean, transport: 'EventSource' | 'fetch' = 'EventSource') {
    const tab = await context.newPage()
    await tab.goto(pageOrigin)
    await tab.waitForFunction(() => 'monitor' in window)
    await tab.evaluate(
      ({ base, id, withCredentials, transport }) => {
        // Without a global EventSource the monitor reads its streams with fetch.
        if (transport === 'fetch') delete (window as any).EventSource
        const seen: { updates: number[]; done: string | null; error: number | null } = { updates: [], done: null, error: null }
        ;(window as any).seen = seen
        ;(window as any).monitor.monitorProcess(base, id, {
          withCredentials,
          onUpdate: (p: { progress: number }) => seen.updates.push(p.progress),
          onDone: (p: { status: string }) => (seen.done = p.status),
          onError: (e: { status: number }) => (seen.error = e.status),
        })
      },
      { base: server.url, id, withCredentials, transport },
    )
    return {
      seen: () => tab.evaluate(() => (window as any).seen as { updates: number[]; done: string | null; error: number | null }),
      close: () => tab.close(),
    }
  }

  for (const transport of ['EventSource', 'fetch'] as const) {
    it(`follows a process live to done with withCredentials, streaming with ${transport}`, async () => {
      const p = (await (
        await fetch(`${server.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'cross_origin' }) })
      ).json()) as any
      const watcher = await monitorInPage(p.id, true, transport)
      await waitFor(async () => (await watcher.seen()).updates.length > 0, 10_000, 'the first state in the page')

      const worker = await TestWorker.connect(server.url, wtoken)
      const run = (await worker.request({ op: 'claim', types: ['cross_origin'] })).process
      expect((await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 40 })).op).toBe('ack')
      await waitFor(async () => (await watcher.seen()).updates.includes(40), 10_000, 'progress 40 in the page')
      expect((await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
      await waitFor(async () => (await watcher.seen()).done === 'completed', 10_000, 'done in the page')
      expect((await watcher.seen()).error).toBeNull()
      worker.close()
      await watcher.close()
    }, 30_000)
  }

  it('without it the cookie stays home: 401, and monitoring stops', async () => {
    const p = (await (await fetch(`${server.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'cross_origin' }) })).json()) as any
    const watcher = await monitorInPage(p.id, false)
    await waitFor(async () => (await watcher.seen()).error === 401, 10_000, 'a 401 in the page')
    expect((await watcher.seen()).updates).toEqual([])
    await watcher.close()
  }, 30_000)

  describe('from an origin CORS_ORIGINS does not list', () => {
    const strangerTab = async () => {
      const tab = await context.newPage()
      await tab.goto(strangerOrigin)
      await tab.waitForFunction(() => 'monitor' in window && 'renderHook' in window)
      return tab
    }

    for (const transport of ['EventSource', 'fetch'] as const) {
      it(`monitorProcess stops with a cors error, not polling for ever (${transport})`, async () => {
        const p = (await (
          await fetch(`${server.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'cross_origin' }) })
        ).json()) as any
        const tab = await strangerTab()
        await tab.evaluate(
          ({ base, id, token, transport }) => {
            if (transport === 'fetch') delete (window as any).EventSource
            const seen: { states: string[]; error: { status: number; code: string; message: string } | null } = { states: [], error: null }
            ;(window as any).seen = seen
            ;(window as any).monitor.monitorProcess(base, id, {
              // A bearer token makes the stream a fetch (with a preflight); without one, the EventSource and the cookie.
              ...(transport === 'fetch' ? { token } : { withCredentials: true }),
              onUpdate: () => {},
              onDone: () => {},
              onError: (e: { status: number; code: string; message: string }) => (seen.error = { status: e.status, code: e.code, message: e.message }),
              onConnectionState: (state: string) => seen.states.push(state),
            })
          },
          { base: server.url, id: p.id, token: tenant.token, transport },
        )
        const seen = () => tab.evaluate(() => (window as any).seen as { states: string[]; error: { status: number; code: string; message: string } | null })
        await waitFor(async () => (await seen()).error !== null, 20_000, 'a cors error in the page')
        const { error, states } = await seen()
        expect(error).toEqual({
          status: 0,
          code: 'cors',
          message: `${server.url} answers, but not to this page's origin ${strangerOrigin} (CORS): add ${strangerOrigin} to the server's CORS_ORIGINS`,
        })
        expect(states.at(-1)).toBe('closed')
        await tab.close()
      }, 30_000)
    }

    it('useProcessMonitor shows the cors error and a closed connection', async () => {
      const p = (await (
        await fetch(`${server.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'cross_origin' }) })
      ).json()) as any
      const tab = await strangerTab()
      await tab.evaluate(({ base, id }) => (window as any).renderHook(id, { baseUrl: base, withCredentials: true }), { base: server.url, id: p.id })
      const state = () => tab.evaluate(() => (window as any).hookState as { connection: string | null; error: { code: string } | null })
      await waitFor(async () => (await state())?.error !== null && (await state())?.connection === 'closed', 20_000, 'the hook showing cors')
      expect((await state()).error!.code).toBe('cors')
      await tab.close()
    }, 30_000)

    it('the server logs the refused origin with CORS_ORIGINS', async () => {
      server.services.log.flush()
      const refusals = logLines.map((line) => JSON.parse(line)).filter((line) => line.msg === 'cross-origin request refused')
      expect(refusals.length).toBeGreaterThan(0)
      expect(refusals[0]).toMatchObject({ level: 'warn', origin: strangerOrigin, CORS_ORIGINS: pageOrigin })
      // The listed page was never refused.
      expect(refusals.some((line) => line.origin === pageOrigin)).toBe(false)
    })
  })
})
