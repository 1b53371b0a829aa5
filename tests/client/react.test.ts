// useProcessMonitor rendered by real React 19 (react-dom/client, in StrictMode, on a happy-dom document)
// against a real listening server: a real worker reports over the WebSocket, the hook follows over SSE —
// an EventSource carrying the ps_session cookie as a same-origin page's would, or fetch with a bearer
// token — and the server's /metrics says what it still has open once the hook has let go.
import { afterAll, afterEach, describe, expect, it } from 'bun:test'
import { EventSource as NpmEventSource } from 'eventsource'
import { Window } from 'happy-dom'
import { act, createElement, StrictMode, useLayoutEffect } from 'react'
import { createRoot } from 'react-dom/client'
import type { FetchLike, Process } from '@processes/client'
import { useProcessMonitor, type ProcessMonitorState, type UseProcessMonitorOptions } from '@processes/client/react'
import { createTenant, listeningServer, testDatabase, waitFor, workerToken, type Tenant } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

// Short windows, so a monitor that failed to stop would be seen reconnecting within a test.
const SSE_MAX_MS = 1000
const { db } = await testDatabase()
const server = await listeningServer({ SSE_MAX_MS: String(SSE_MAX_MS), PROGRESS_PERSIST_MS: '20' }, db)
const owner = await createTenant(db.sql)
const stranger = await createTenant(db.sql)
const worker = await TestWorker.connect(server.url, await workerToken(db.sql))
afterAll(() => worker.close())

// react-dom/client reads the globals `window` (window.event, for update priorities) and `document`; only
// those two are installed. GlobalRegistrator would also swap fetch, WebSocket and friends for happy-dom's,
// and the hook must reach the real server through Bun's own. bun test runs every file in one process, so
// they are removed again afterwards. They go in after the database is open (PGlite sniffs `window`).
const dom = new Window()
Object.assign(globalThis, { window: dom, document: dom.document })
afterAll(async () => {
  delete (globalThis as { window?: unknown }).window
  delete (globalThis as { document?: unknown }).document
  await dom.happyDOM.close()
})

// ── The two transports the hook has ────────────────────────────────────────

/**
 * A same-origin page's cookie jar: its EventSource and its fetch both send the ps_session cookie (the
 * EventSource cannot send headers; the fetch is the monitor's status check and its polling fallback).
 */
function withSessionCookie(token: string): Pick<UseProcessMonitorOptions, 'EventSource' | 'fetch'> {
  const cookieFetch = (input: string | URL, init?: RequestInit) =>
    fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), cookie: `ps_session=${token}` } })
  class CookieEventSource extends NpmEventSource {
    constructor(url: string) {
      super(url, { fetch: cookieFetch })
    }
  }
  return { EventSource: CookieEventSource, fetch: cookieFetch }
}
// Made once per tenant, as the hook's docs ask: a new EventSource or fetch restarts the monitor.
const cookieJars = new Map([owner, stranger].map((t) => [t, withSessionCookie(t.token)]))

const transports: Array<[string, (tenant: Tenant) => UseProcessMonitorOptions]> = [
  ['EventSource with the session cookie', (tenant) => ({ baseUrl: server.url, ...cookieJars.get(tenant) })],
  ['fetch stream with a bearer token', (tenant) => ({ baseUrl: server.url, token: tenant.token })],
]

// ── Rendering the hook ─────────────────────────────────────────────────────

type Id = number | string | null
/** What one commit put on the screen: the id the component was given and the hook's state. */
interface Commit extends ProcessMonitorState {
  id: Id
}

function Probe({ id, options, commits }: { id: Id; options: UseProcessMonitorOptions; commits: Commit[] }) {
  const state = useProcessMonitor(id, options)
  // A layout effect runs once per commit (twice on a StrictMode mount): this records what was shown,
  // not renders React may have thrown away.
  useLayoutEffect(() => {
    commits.push({ id, ...state })
  })
  const { process, done, error } = state
  const text = error ? `error ${error.status} ${error.code}` : process ? `#${process.id} ${process.status} ${process.progress}%${done ? ' done' : ''}` : 'idle'
  return createElement('output', null, text)
}

/**
 * React warns about updates outside `act` only where IS_REACT_ACT_ENVIRONMENT is set, and an update from
 * the network cannot be inside one: as Testing Library does, the flag is on only around our own `act`
 * calls (mount, new props, unmount), and the waits let React render the monitor's updates on its own.
 */
async function inAct(callback: () => void): Promise<void> {
  const flags = globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }
  flags.IS_REACT_ACT_ENVIRONMENT = true
  try {
    await act(callback)
  } finally {
    flags.IS_REACT_ACT_ENVIRONMENT = false
  }
}

const mounted = new Set<() => Promise<void>>()
afterEach(async () => {
  for (const unmount of [...mounted]) await unmount()
})

async function mount(id: Id, options: UseProcessMonitorOptions) {
  const container = dom.document.createElement('div')
  const root = createRoot(container as unknown as Element)
  const commits: Commit[] = []
  const show = (next: Id) => inAct(() => root.render(createElement(StrictMode, null, createElement(Probe, { id: next, options, commits }))))
  const unmount = async () => {
    if (!mounted.delete(unmount)) return
    await inAct(() => root.unmount())
  }
  mounted.add(unmount)
  await show(id)
  return {
    commits,
    get current(): Commit {
      return commits.at(-1)!
    },
    text: () => container.textContent,
    rerender: show,
    unmount,
    /** Until the latest commit satisfies `check`; the whole history in the message when it never does. */
    until: (check: (state: Commit) => boolean, what: string, timeoutMs = 5000) =>
      waitFor(
        () => commits.length > 0 && check(commits.at(-1)!),
        timeoutMs,
        () => `${what}; commits: ${history(commits)}`,
      ),
  }
}

const history = (commits: Commit[]) =>
  JSON.stringify(
    commits.map(({ id, process, done, error }) => ({
      id,
      process: process && { id: process.id, status: process.status, progress: process.progress, version: process.version },
      done,
      error: error && { status: error.status, code: error.code },
    })),
  )
const isIdle = (state: ProcessMonitorState) => state.process === null && !state.done && state.error === null

// ── The server's side ──────────────────────────────────────────────────────

let nextType = 0
const uniqueType = () => `react_hook_${++nextType}`

async function create(tenant: Tenant, type: string): Promise<Process> {
  const response = await fetch(`${server.url}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type, metadata: { file: 'stores.csv' } }),
  })
  expect(response.status).toBe(201)
  return (await response.json()) as Process
}

/** Claims the pending process of `type` over the worker WebSocket: it is now `running`, leased to us. */
async function claim(type: string): Promise<Process> {
  const reply = await worker.request({ op: 'claim', types: [type] })
  expect(reply.process).toBeTruthy()
  return reply.process as Process
}

/** A worker frame about a process it holds; returns the committed version from the ack. */
async function report(run: Process, frame: Record<string, unknown>): Promise<number> {
  const reply = await worker.request({ ...frame, process_id: run.id, attempt: run.attempts })
  expect(reply).toMatchObject({ op: 'ack' })
  return reply.version as number
}

/** Open SSE streams, and every GET of one process (stream or plain) answered so far, from /metrics. */
async function serverSide(): Promise<{ open: number; streamGets: number; processGets: number }> {
  const text = await (await fetch(server.metricsUrl!)).text()
  const open = /^processes_sse_streams_open (\d+)$/m.exec(text)
  if (!open) throw new Error(`no processes_sse_streams_open in /metrics:\n${text}`)
  const gets = (route: string) => {
    let total = 0
    for (const [, labelRoute, n] of text.matchAll(/^processes_http_requests_total\{method="GET",route="([^"]*)",status="\d+"\} (\d+)$/gm))
      if (labelRoute === route) total += Number(n)
    return total
  }
  return { open: Number(open[1]), streamGets: gets('/processes/:id/stream'), processGets: gets('/processes/:id') }
}

/** The server settles at `n` open streams and stays there (a leaked monitor could pass a single look
 * in the instant it reconnects between two windows). */
async function openStreamsAre(n: number) {
  await waitFor(async () => (await serverSide()).open === n, 5000, `${n} open SSE streams on the server`)
  await Bun.sleep(250)
  expect((await serverSide()).open).toBe(n)
}

/** Nothing reaches the server for `ms`: no stream, no poll. Longer than a window, so a reconnect would show. */
async function expectSilence(ms: number) {
  const before = await serverSide()
  await Bun.sleep(ms)
  const after = await serverSide()
  expect(after).toEqual({ ...before, open: 0 })
}

// ── The tests ──────────────────────────────────────────────────────────────

for (const [transport, optionsFor] of transports) {
  describe(`useProcessMonitor over ${transport}`, () => {
    it('is idle for a null id, then follows a process through live progress to done with its final state', async () => {
      const type = uniqueType()
      const p = await create(owner, type)
      const before = await serverSide()
      const probe = await mount(null, optionsFor(owner))
      await Bun.sleep(200)
      expect(probe.commits.every(isIdle)).toBe(true)
      expect(probe.text()).toBe('idle')
      // Following nothing asks the server nothing.
      expect(await serverSide()).toEqual({ ...before, open: 0 })

      await probe.rerender(p.id)
      await probe.until((s) => s.process?.status === 'pending', 'the pending snapshot')
      expect(probe.current.process).toMatchObject({ id: p.id, status: 'pending', progress: 0, version: p.version })
      await openStreamsAre(1) // one hook, one stream

      const run = await claim(type)
      await probe.until((s) => s.process?.status === 'running', 'running after the claim')
      for (const progress of [20, 45, 80]) {
        const version = await report(run, { op: 'progress', progress, message: `row ${progress}/100` })
        await probe.until((s) => (s.process?.version ?? 0) >= version, `progress ${progress} (version ${version})`)
        expect(probe.current).toMatchObject({ done: false, error: null, process: { status: 'running', progress, message: `row ${progress}/100`, version } })
        expect(probe.text()).toBe(`#${p.id} running ${progress}%`)
      }
      const finalVersion = await report(run, { op: 'complete', result_summary: { rows_imported: 97 } })
      await probe.until((s) => s.done, 'done after complete')
      expect(probe.current).toMatchObject({
        id: p.id,
        done: true,
        error: null,
        process: { id: p.id, status: 'completed', progress: 100, result_summary: { rows_imported: 97 }, version: finalVersion },
      })
      expect(probe.text()).toBe(`#${p.id} completed 100% done`)
      // The connection was reported open while it streamed, and closed once done.
      expect(probe.commits.some((c) => c.connection === 'open')).toBe(true)
      await probe.until((s) => s.connection === 'closed', 'the connection closed after done')

      // The history: idle, then only ever newer versions with rising progress; done once, at the end.
      const shown = probe.commits.filter((c) => c.id === p.id)
      expect(isIdle(shown[0]!)).toBe(true)
      const states = shown.filter((c) => c.process !== null)
      for (let i = 1; i < states.length; i++) {
        expect(states[i]!.process!.version).toBeGreaterThanOrEqual(states[i - 1]!.process!.version)
        expect(states[i]!.process!.progress).toBeGreaterThanOrEqual(states[i - 1]!.process!.progress)
      }
      expect([...new Set(states.map((c) => c.process!.status))]).toEqual(['pending', 'running', 'completed'])
      expect(shown.findIndex((c) => c.done)).toBe(shown.findLastIndex((c) => !c.done) + 1)
      expect(shown.every((c) => c.error === null)).toBe(true)

      // Done means done: the monitor closed its stream and never reconnects, though still mounted.
      await openStreamsAre(0)
      await expectSilence(SSE_MAX_MS + 500)
      await probe.unmount()
    }, 15_000)

    it('reports 404 for an unknown id, and stops', async () => {
      const probe = await mount(987_654_321, optionsFor(owner))
      await probe.until((s) => s.error !== null, 'an error')
      expect(probe.current.error).toMatchObject({ name: 'MonitorError', status: 404, code: 'not_found' })
      expect(probe.current).toMatchObject({ process: null, done: false })
      expect(probe.text()).toBe('error 404 not_found')
      const commits = probe.commits.length
      await expectSilence(1200) // a retry would come within the ~1 s backoff
      expect(probe.commits.length).toBe(commits)
      await probe.unmount()
    }, 15_000)

    it("reports 404 for another workspace's process and never shows it", async () => {
      const type = uniqueType()
      const theirs = await create(owner, type)
      const run = await claim(type)
      await report(run, { op: 'progress', progress: 50 })
      const probe = await mount(theirs.id, optionsFor(stranger))
      await probe.until((s) => s.error !== null, 'an error')
      expect(probe.current.error).toMatchObject({ status: 404, code: 'not_found' })
      expect(probe.commits.every((c) => c.process === null && !c.done)).toBe(true)
      await expectSilence(1200)
      await probe.unmount()
      await report(run, { op: 'complete' })
    }, 15_000)

    it('shows the idle state for a new id at once, never the previous process or error', async () => {
      const typeA = uniqueType()
      const a = await create(owner, typeA)
      const runA = await claim(typeA)
      await report(runA, { op: 'progress', progress: 30 })
      const b = await create(owner, uniqueType())

      const probe = await mount(a.id, optionsFor(owner))
      await probe.until((s) => s.process?.progress === 30, 'process A at 30%')

      const switchedAt = probe.commits.length
      await probe.rerender(b.id)
      const afterSwitch = () => probe.commits.slice(switchedAt)
      // The very first commit with the new id is idle: A is not shown for even one frame.
      expect(afterSwitch()[0]).toMatchObject({ id: b.id, process: null, done: false, error: null })
      await probe.until((s) => s.process?.id === b.id, 'process B')
      expect(probe.current.process).toMatchObject({ id: b.id, status: 'pending' })
      // A's stream is gone on the server; A's progress no longer reaches the hook.
      await openStreamsAre(1)
      await report(runA, { op: 'progress', progress: 60 })
      await Bun.sleep(300)
      expect(afterSwitch().every((c) => c.id === b.id && c.process?.id !== a.id)).toBe(true)

      // An error belongs to its id too: after a 404, a good id starts idle and without the error.
      await probe.rerender(123_456_789)
      await probe.until((s) => s.error?.status === 404, 'a 404 for the unknown id')
      const backAt = probe.commits.length
      await probe.rerender(b.id)
      expect(probe.commits[backAt]).toMatchObject({ id: b.id, process: null, done: false, error: null })
      await probe.until((s) => s.process?.id === b.id, 'process B again')
      expect(probe.commits.slice(backAt).every((c) => c.error === null)).toBe(true)

      await probe.unmount()
      await openStreamsAre(0)
      await report(runA, { op: 'complete' })
    }, 15_000)

    it('stops the monitor on unmount: the server sees its stream close and no request after', async () => {
      const type = uniqueType()
      const p = await create(owner, type)
      const run = await claim(type)
      const probe = await mount(p.id, optionsFor(owner))
      await probe.until((s) => s.process?.status === 'running', 'the running process')
      // Mounted with an id, so StrictMode ran the effect twice: the first monitor let go of its stream.
      await openStreamsAre(1)

      await probe.unmount()
      await openStreamsAre(0)
      const commits = probe.commits.length
      await report(run, { op: 'progress', progress: 70 })
      await expectSilence(SSE_MAX_MS + 500) // past a window's end: a live monitor would have reconnected
      expect(probe.commits.length).toBe(commits)
      await report(run, { op: 'complete' })
    }, 15_000)
  })
}

it('stops polling on unmount when streams are blocked and the hook fell back to GET /processes/{id}', async () => {
  // A fetch that refuses streams, as a hostile proxy would, and lets plain GETs through to the server.
  let fetches = 0
  const noStreams: FetchLike = (input, init) => {
    fetches++
    return input.includes('/stream') ? Promise.resolve(new Response('blocked', { status: 502 })) : fetch(input, init)
  }
  const type = uniqueType()
  const p = await create(owner, type)
  const run = await claim(type)
  const before = await serverSide()
  const probe = await mount(p.id, { baseUrl: server.url, token: owner.token, fetch: noStreams, pollIntervalMs: 100 })
  // Three failed connects (with backoff, ~1.5–3 s), then polling.
  await waitFor(async () => (await serverSide()).processGets >= before.processGets + 2, 8000, 'the hook to poll')
  expect(probe.current.process).toMatchObject({ id: p.id, status: 'running' })
  await report(run, { op: 'progress', progress: 40 })
  await probe.until((s) => s.process?.progress === 40, 'progress seen by polling')

  await probe.unmount()
  await Bun.sleep(50) // a poll already on the wire may still land
  const fetchesAtUnmount = fetches
  await expectSilence(600) // six poll intervals
  expect(fetches).toBe(fetchesAtUnmount) // not even an aborted attempt: the polling loop has ended
  await report(run, { op: 'complete' })
}, 15_000)
