// The state machine (README: API, the state table): every allowed and every forbidden (status, action) pair, driven by the real operations,
// one event per change in the same transaction, and racing transitions with exactly one winner per step.
import { beforeAll, describe, expect, it } from 'bun:test'
import { LIVE_VERSION_JUMP } from '../../src/processes/live'
import type { Process } from '../../src/processes/model'
import { claimNext } from '../../src/processes/queries/claims'
import { sweepExpired } from '../../src/processes/queries/failures'
import { listActive } from '../../src/processes/queries/reads'
import { EDGES, transitionProcess, workerTransition } from '../../src/processes/queries/transitions'
import { edge, FINAL, NOT_FINAL, STATUSES, TRANSITIONS, type Status } from '../../src/processes/states'
import { createTenant, inProcessApp, listeningServer, waitFor, workerToken, type Tenant } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { eventsOf, processIn, WORKER_ID } from './drive'

const { s, request, db } = await inProcessApp()
const { sql } = s
// A real listening server on the same database, for the worker gateway; its lease sweep is kept out of the way.
const server = await listeningServer({ JOB_TIMEOUT_MS: String(86_400_000) }, db)

let t: Tenant
beforeAll(async () => {
  t = await createTenant(sql)
})

// The contract's table, written out independently of src/processes/states.ts.
const CONTRACT: Record<Status, Status[]> = {
  pending: ['running', 'cancelled'],
  running: ['completed', 'waiting_review', 'failed', 'cancelled'],
  waiting_review: ['completed', 'cancelled'],
  failed: ['pending'],
  completed: [],
  cancelled: [],
}

/** The queue's one extension: a fail or time-out with attempts left goes back to pending (tests/processes/queue.test.ts). */
const EXTENDED: Record<Status, Status[]> = { ...CONTRACT, running: [...CONTRACT.running, 'pending'] }

type Action = 'claim' | 'start' | 'complete' | 'review' | 'fail' | 'cancel' | 'retry' | 'approve' | 'discard'

/** Every operation that changes a status, what it moves to, and where it may start. */
const ACTIONS: Record<Action, { to: Status; from: Status[]; by: 'worker' | 'user' }> = {
  claim: { to: 'running', from: ['pending'], by: 'worker' },
  start: { to: 'running', from: ['pending'], by: 'worker' },
  complete: { to: 'completed', from: ['running'], by: 'worker' },
  review: { to: 'waiting_review', from: ['running'], by: 'worker' },
  fail: { to: 'failed', from: ['running'], by: 'worker' },
  cancel: { to: 'cancelled', from: ['pending', 'running'], by: 'user' },
  retry: { to: 'pending', from: ['failed'], by: 'user' },
  approve: { to: 'completed', from: ['waiting_review'], by: 'user' },
  discard: { to: 'cancelled', from: ['waiting_review'], by: 'user' },
}

async function act(p: Process, action: Action): Promise<{ ok: boolean; process: Process | null; status?: number; body?: any }> {
  switch (action) {
    case 'claim': {
      const claimed = (await claimNext(sql, { workerId: WORKER_ID, types: [p.type], max: 1 }))[0] ?? null
      return { ok: claimed !== null, process: claimed }
    }
    case 'start':
      return wrap(await transitionProcess(sql, p.id, workerTransition(sql, 'start', WORKER_ID, undefined)))
    case 'complete':
    case 'review':
    case 'fail':
      return wrap(await transitionProcess(sql, p.id, workerTransition(sql, action, WORKER_ID, p.attempts, { error: 'it broke', result_summary: { ok: true } })))
    case 'cancel':
    case 'retry': {
      const res = await request('POST', `/processes/${p.id}/${action}`, { token: t.token })
      return { ok: res.status === 200, process: res.status === 200 ? res.body : null, status: res.status, body: res.body }
    }
    case 'approve':
    case 'discard': {
      const res = await request('POST', `/processes/${p.id}/review`, { token: t.token, body: { decision: action } })
      return { ok: res.status === 200, process: res.status === 200 ? res.body : null, status: res.status, body: res.body }
    }
  }
}
const wrap = (process: Process | null) => ({ ok: process !== null, process })

const current = async (id: number): Promise<Process> => (await request('GET', `/processes/${id}`, { token: t.token })).body

describe('the state machine', () => {
  it("matches the contract table exactly, plus the queue's running → pending", () => {
    expect(TRANSITIONS as Record<Status, readonly Status[]>).toEqual(EXTENDED)
    // Every allowed edge is reachable through some operation, and no operation goes anywhere else.
    for (const from of STATUSES) {
      const reachable = new Set(
        Object.values(ACTIONS)
          .filter((a) => a.from.includes(from))
          .map((a) => a.to),
      )
      expect([...reachable].sort()).toEqual([...CONTRACT[from]].sort())
    }
  })

  it("builds every operation's edge from the table: the operations' edges are the ones above, and an edge not in the table throws", () => {
    for (const [action, spec] of Object.entries(ACTIONS)) {
      const name = action === 'start' ? 'claim' : action
      expect({ action, ...EDGES[name as keyof typeof EDGES] }).toEqual({ action, to: spec.to, from: spec.from })
    }
    expect(EDGES.retryLater).toEqual({ to: 'pending', from: ['running'] })
    expect(() => edge(['completed'], 'pending')).toThrow('no edge completed → pending')
    // A status no operation allows is dropped from an edge's sources.
    expect(edge(['pending', 'waiting_review'], 'running')).toEqual({ to: 'running', from: ['pending'] })
  })

  it('derives the final statuses (no way out) and the rest', () => {
    expect([...FINAL].sort()).toEqual(['cancelled', 'completed'])
    expect([...NOT_FINAL].sort()).toEqual(['failed', 'pending', 'running', 'waiting_review'])
  })

  it("lists exactly the processes that are not final as a workspace stream's start", async () => {
    const tenant = await createTenant(sql)
    const byStatus = new Map<number, Status>()
    for (const status of STATUSES) byStatus.set((await processIn(sql, request, tenant.token, status)).id, status)
    const active = await listActive(sql, { workspaceId: tenant.workspaceId, after: 0, limit: 100 })
    expect(active.map((p) => p.status).sort()).toEqual([...NOT_FINAL].sort())
    for (const p of active) expect(byStatus.get(p.id)).toBe(p.status)
  })

  for (const from of STATUSES) {
    for (const [action, spec] of Object.entries(ACTIONS) as [Action, (typeof ACTIONS)[Action]][]) {
      const allowed = spec.from.includes(from)
      const name = allowed ? `moves a ${from} process to ${spec.to} on ${action}` : `refuses ${action} on a ${from} process and changes nothing`
      it(name, async () => {
        const p = await processIn(sql, request, t.token, from)
        const eventsBefore = await eventsOf(sql, p.id)
        const result = await act(p, action)
        const after = await current(p.id)
        const events = await eventsOf(sql, p.id)
        if (allowed) {
          expect(result.ok).toBe(true)
          expect(result.process!.id).toBe(p.id)
          expect(after.status).toBe(spec.to)
          expect(after.version).toBe(nextVersionOf(p))
          expect(events).toHaveLength(eventsBefore.length + 1)
          expect(events.at(-1)!.status).toBe(spec.to)
        } else {
          expect(result.ok).toBe(false)
          if (spec.by === 'user') {
            expect(result.status).toBe(409)
            expect(result.body.error.code).toBe('invalid_transition')
            expect(result.body.error.details).toEqual({ status: from, to: spec.to })
          }
          expect(after).toEqual(p)
          expect(events).toEqual(eventsBefore)
        }
      })
    }
  }

  it('fails a running process whose lease went silent, and only a running one', async () => {
    const running = await processIn(sql, request, t.token, 'running')
    const pending = await processIn(sql, request, t.token, 'pending')
    const review = await processIn(sql, request, t.token, 'waiting_review')
    await sql`update processes set heartbeat_at = now() - interval '1 hour' where id = any(${[running.id, pending.id, review.id]}::bigint[])`
    const swept = await sweepExpired(sql, 30 * 60_000)
    expect(swept.map((p) => p.id)).toEqual([running.id])
    expect(await current(running.id)).toMatchObject({ status: 'failed', error: 'timed out', version: running.version + LIVE_VERSION_JUMP })
    expect((await eventsOf(sql, running.id)).at(-1)).toMatchObject({ status: 'failed', message: 'timed out' })
    expect(await current(pending.id)).toEqual(pending)
    expect(await current(review.id)).toEqual(review)
  })

  it('refuses a worker transition from a worker that does not hold the process, or from an old attempt', async () => {
    const p = await processIn(sql, request, t.token, 'running')
    expect(await transitionProcess(sql, p.id, workerTransition(sql, 'complete', 'someone-else', undefined))).toBeNull()
    expect(await transitionProcess(sql, p.id, workerTransition(sql, 'complete', WORKER_ID, p.attempts - 1))).toBeNull()
    expect(await current(p.id)).toEqual(p)
  })
})

/** The version a change by anyone but a lease holder gives a process (src/processes/live.ts). */
function nextVersionOf(p: { status: Status; version: number }) {
  return p.status === 'running' ? p.version + LIVE_VERSION_JUMP : p.version + 1
}

describe('events', () => {
  it('appends exactly one event per status change over a whole life', async () => {
    const p = await processIn(sql, request, t.token, 'failed')
    await act(p, 'retry')
    const again = (await act(await current(p.id), 'claim')).process!
    await act(again, 'review')
    await act(again, 'approve')
    const events = await eventsOf(sql, p.id)
    expect(events.map((e) => e.status)).toEqual(['pending', 'running', 'failed', 'pending', 'running', 'waiting_review', 'completed'])
    // One version per change; a change of a running process by anyone but its lease holder (these are made
    // straight in SQL) jumps past the holder's live versions.
    let version = 0
    for (const i of events.keys()) version = i === 0 ? 1 : nextVersionOf({ status: events[i - 1]!.status, version })
    expect((await current(p.id)).version).toBe(version)
  })

  it('commits a status change and its event together: when the event cannot be written, the change is rolled back', async () => {
    const p = await processIn(sql, request, t.token, 'waiting_review')
    const auditBefore = await sql<{ n: number }[]>`select count(*)::int as n from audit_log where status = 200 and route = '/processes/:id/review'`
    await sql.unsafe(`
      create function refuse_poisoned_event() returns trigger language plpgsql as $$
      begin
        if new.message = 'poison' then raise exception 'event refused for the test'; end if;
        return new;
      end $$;
      create trigger refuse_poisoned_event before insert on process_events
        for each row execute function refuse_poisoned_event();`)
    try {
      const res = await request('POST', `/processes/${p.id}/review`, { token: t.token, body: { decision: 'approve', message: 'poison' } })
      expect(res.status).toBe(500)
      expect(res.body.error.code).toBe('internal')
      expect(res.body.error.request_id).toBeString()
    } finally {
      await sql.unsafe('drop trigger refuse_poisoned_event on process_events; drop function refuse_poisoned_event()')
    }
    expect(await current(p.id)).toEqual(p)
    const auditAfter = await sql<{ n: number }[]>`select count(*)::int as n from audit_log where status = 200 and route = '/processes/:id/review'`
    expect(auditAfter[0]!.n).toBe(auditBefore[0]!.n)
    // The same request succeeds once the event can be written.
    const ok = await request('POST', `/processes/${p.id}/review`, { token: t.token, body: { decision: 'approve', message: 'fine' } })
    expect(ok.body).toMatchObject({ status: 'completed', version: p.version + 1 })
  })
})

describe('racing transitions', () => {
  const RACERS: Action[] = ['cancel', 'retry', 'approve', 'discard']

  /** 20 concurrent user actions on one process: each step has one winner, the rest 409, and the log tells the same story. */
  async function race(from: Status) {
    const p = await processIn(sql, request, t.token, from)
    const before = await eventsOf(sql, p.id)
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => act(p, RACERS[i % RACERS.length]!)))
    const winners = results.filter((r) => r.ok)
    for (const r of results) if (!r.ok) expect([r.status, r.body.error.code]).toEqual([409, 'invalid_transition'])
    // One winner per step: each winning response carries the version after the one before it.
    const ordered = [...winners].sort((x, y) => x.process!.version - y.process!.version)
    let expected: { status: Status; version: number } = p
    for (const w of ordered) {
      expect(w.process!.version).toBe(nextVersionOf(expected))
      expected = w.process!
    }

    const after = await current(p.id)
    const events = await eventsOf(sql, p.id)
    const added = events.slice(before.length)
    expect(events.slice(0, before.length)).toEqual(before)
    expect(added).toHaveLength(winners.length)
    expect(after.version).toBe(expected.version)
    // The appended statuses form a legal path from the starting status to the final one.
    let status = from
    for (const event of added) {
      expect(CONTRACT[status]).toContain(event.status)
      status = event.status
    }
    expect(after.status).toBe(status)
    const winnerStatuses = winners.sort((x, y) => x.process!.version - y.process!.version).map((w) => w.process!.status)
    expect(winnerStatuses).toEqual(added.map((e) => e.status))
    return { winners: winners.length, final: after.status }
  }

  it('lets exactly one of 20 racing actions cancel a running process', async () => {
    expect(await race('running')).toEqual({ winners: 1, final: 'cancelled' })
  })

  it('lets exactly one of 20 racing actions settle a process waiting for review', async () => {
    const { winners, final } = await race('waiting_review')
    expect(winners).toBe(1)
    expect(['completed', 'cancelled']).toContain(final)
  })

  it('lets exactly one of 20 racing actions cancel a pending process', async () => {
    expect(await race('pending')).toEqual({ winners: 1, final: 'cancelled' })
  })

  it('retries a failed process once among 20 racing actions, then at most one cancel follows', async () => {
    const { winners, final } = await race('failed')
    expect(winners === 1 ? final === 'pending' : winners === 2 && final === 'cancelled').toBe(true)
  })

  it('lets exactly one of many racing workers claim a pending process', async () => {
    const p = await processIn(sql, request, t.token, 'pending')
    const claims = await Promise.all(
      Array.from({ length: 8 }, (_, i) => claimNext(sql, { workerId: `racer-${i}`, types: [p.type], max: 1 }).then((r) => r[0] ?? null)),
    )
    expect(claims.filter((c) => c !== null)).toHaveLength(1)
    expect((await eventsOf(sql, p.id)).map((e) => e.status)).toEqual(['pending', 'running'])
  })

  it('lets either a worker completion or a user cancel win, never both', async () => {
    for (let i = 0; i < 5; i++) {
      const p = await processIn(sql, request, t.token, 'running')
      const [done, cancel] = await Promise.all([act(p, 'complete'), act(p, 'cancel')])
      expect([done.ok, cancel.ok].filter(Boolean)).toHaveLength(1)
      const after = await current(p.id)
      expect(after.status).toBe(done.ok ? 'completed' : 'cancelled')
      expect((await eventsOf(sql, p.id)).map((e) => e.status)).toEqual(['pending', 'running', after.status])
    }
  })
})

describe('through the worker gateway', () => {
  it('runs a process claimed over the WebSocket to review, and refuses a worker whose process was cancelled', async () => {
    const owner = await createTenant(db.sql)
    const api = (method: string, path: string, body?: unknown) =>
      fetch(`${server.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }))
    const worker = await TestWorker.connect(server.url, await workerToken(db.sql))
    try {
      expect((await worker.request({ op: 'hello', worker_id: 'gw-1' })).op).toBe('ack')

      const first = await api('POST', '/processes', { type: 'gateway_job' })
      const claimed = await worker.request({ op: 'claim', types: ['gateway_job'] })
      expect(claimed.process).toMatchObject({ id: first.body.id, status: 'running', worker_id: 'gw-1', attempts: 1 })
      const attempt = claimed.process.attempts
      expect((await worker.request({ op: 'complete', process_id: first.body.id, attempt, review: true, result_summary: { n: 1 } })).op).toBe('ack')
      expect((await api('GET', `/processes/${first.body.id}`)).body).toMatchObject({ status: 'waiting_review', progress: 100, result_summary: { n: 1 } })
      expect((await api('POST', `/processes/${first.body.id}/cancel`)).status).toBe(409)
      expect((await api('POST', `/processes/${first.body.id}/review`, { decision: 'approve' })).body.status).toBe('completed')

      const second = await api('POST', '/processes', { type: 'gateway_job' })
      const next = await worker.request({ op: 'claim', types: ['gateway_job'] })
      expect(next.process.id).toBe(second.body.id)
      expect((await api('POST', `/processes/${second.body.id}/cancel`)).body.status).toBe('cancelled')
      await worker.nextCancel(second.body.id)
      const refused = await worker.request({ op: 'complete', process_id: second.body.id, attempt: next.process.attempts })
      expect(refused).toMatchObject({ op: 'error', code: 'cancelled' })
      await waitFor(async () => (await api('GET', `/processes/${second.body.id}/events`)).body.length === 3)
      const events = (await api('GET', `/processes/${second.body.id}/events`)).body
      expect(events.map((e: { status: string }) => e.status)).toEqual(['pending', 'running', 'cancelled'])
    } finally {
      worker.close()
    }
  })
})
