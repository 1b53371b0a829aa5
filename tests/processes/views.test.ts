// The list's views (scheduled, retrying, dead), its search (q), run-now, and the stats' counts against what
// the list returns for the same filter; against real Postgres through the full in-process handler.
import { beforeAll, describe, expect, it } from 'bun:test'
import { createApiToken, createUser } from '../../src/auth/queries'
import { claimNext } from '../../src/processes/queries/claims'
import { failProcesses } from '../../src/processes/queries/failures'
import { SEARCH_SCAN_MAX } from '../../src/processes/queries/filters'
import { createTenant, inProcessApp, type Requester, type Tenant } from '../support/helpers'
import { uniqueType, WORKER_ID } from './drive'

const { s, request } = await inProcessApp()
const { sql } = s
const NO_BACKOFF = { baseMs: 0, maxMs: 0, byType: {} }

/** Every row of a list, page by page through its Link header. */
async function listAll(req: Requester, token: string, query: string): Promise<any[]> {
  const rows: any[] = []
  let path: string | null = `/processes?${query}`
  for (let pages = 0; path !== null; pages++) {
    if (pages > 1000) throw new Error('too many pages')
    const res = await req('GET', path, { token })
    expect(res.status).toBe(200)
    rows.push(...res.body)
    const link = res.headers.get('link')
    path = link ? link.match(/^<([^>]+)>/)![1]! : null
  }
  return rows
}

/** A process of `type` claimed and failed once by a worker: with attempts left, it is pending again (retrying). */
async function failOnce(token: string, type: string, maxAttempts: number, backoffMs = 0) {
  const created = await request('POST', '/processes', { token, body: { type, max_attempts: maxAttempts } })
  expect(created.status).toBe(201)
  const [running] = await claimNext(sql, { workerId: WORKER_ID, types: [type], max: 1 })
  const base = { id: running!.id, worker_id: WORKER_ID, attempt: running!.attempts, worker_token_id: null, version: null, base: null, progress: null }
  const [after] = await failProcesses(sql, [{ ...base, error: 'boom' }], { baseMs: backoffMs, maxMs: backoffMs, byType: {} })
  return after!
}

let t: Tenant
let ids: { scheduled: number; due: number; retrying: number; dead: number; done: number }

beforeAll(async () => {
  t = await createTenant(sql)
  const type = uniqueType('views')
  const later = new Date(Date.now() + 3_600_000).toISOString()
  const scheduled = (await request('POST', '/processes', { token: t.token, body: { type, run_at: later } })).body
  const due = (await request('POST', '/processes', { token: t.token, body: { type } })).body
  // Retrying: failed once with attempts left, its retry an hour away (so it is scheduled too).
  const retrying = await failOnce(t.token, `${type}.r`, 3, 3_600_000)
  const dead = await failOnce(t.token, `${type}.d`, 1)
  const done = (await request('POST', '/processes', { token: t.token, body: { type: `${type}.c` } })).body
  expect((await request('POST', `/processes/${done.id}/cancel`, { token: t.token })).status).toBe(200)
  expect(retrying.status).toBe('pending')
  expect(dead.status).toBe('failed')
  ids = { scheduled: scheduled.id, due: due.id, retrying: retrying.id, dead: dead.id, done: done.id }
})

describe('views', () => {
  it('lists scheduled (pending, due later), retrying (pending after a failed attempt) and dead (failed, attempts used up)', async () => {
    const idsOf = async (view: string) => (await listAll(request, t.token, `view=${view}`)).map((p) => p.id).sort((x, y) => x - y)
    expect(await idsOf('scheduled')).toEqual([ids.scheduled, ids.retrying].sort((x, y) => x - y))
    expect(await idsOf('retrying')).toEqual([ids.retrying])
    expect(await idsOf('dead')).toEqual([ids.dead])
  })

  it('combines a view with the other filters', async () => {
    const rows = await listAll(request, t.token, 'view=scheduled&status=failed')
    expect(rows).toEqual([])
    const typed = await listAll(request, t.token, `view=retrying&type=${(await request('GET', `/processes/${ids.retrying}`, { token: t.token })).body.type}`)
    expect(typed.map((p) => p.id)).toEqual([ids.retrying])
  })

  it('refuses an unknown view with 422', async () => {
    const res = await request('GET', '/processes?view=stale', { token: t.token })
    expect(res.status).toBe(422)
    expect(res.body.error.code).toBe('invalid_request')
  })

  it("stats' status counts and view counts equal what the list returns for each", async () => {
    const stats = await request('GET', '/processes/stats?buckets=false', { token: t.token })
    expect(stats.status).toBe(200)
    expect(stats.body.buckets).toEqual([])
    expect(stats.body.views).toEqual({ scheduled: 2, retrying: 1, dead: 1 })
    for (const view of ['scheduled', 'retrying', 'dead'] as const) {
      expect((await listAll(request, t.token, `view=${view}&limit=1`)).length).toBe(stats.body.views[view])
    }
    const byStatus = new Map<string, number>()
    for (const c of stats.body.counts) byStatus.set(c.status, (byStatus.get(c.status) ?? 0) + c.count)
    for (const [status, count] of byStatus) expect((await listAll(request, t.token, `status=${status}&limit=1`)).length).toBe(count)
  })
})

describe('search', () => {
  let w: Tenant
  const made: Record<string, number> = {}
  beforeAll(async () => {
    w = await createTenant(sql)
    const create = async (name: string, body: Record<string, unknown>) => {
      const res = await request('POST', '/processes', { token: w.token, body })
      expect(res.status).toBe(201)
      made[name] = res.body.id
    }
    await create('invoice', { type: 'billing.invoice', metadata: { customer: 'ACME Corp', note: '100% done' } })
    await create('under', { type: 'report_daily', metadata: { path: 'C:\\temp\\x_y' } })
    await create('plain', { type: 'email', metadata: { to: 'someone@example.com' } })
    // An error and a message to find, as a worker's fail leaves them.
    await create('failed', { type: 'import.csv' })
    const [running] = await claimNext(sql, { workerId: WORKER_ID, types: ['import.csv'], max: 1 })
    expect(running?.id).toBe(made.failed!)
    const base = { id: running!.id, worker_id: WORKER_ID, attempt: running!.attempts, worker_token_id: null, version: null, base: null, progress: null }
    await failProcesses(sql, [{ ...base, error: 'Row 17 is unreadable' }], NO_BACKOFF)
  })

  const search = async (q: string, extra = '') => (await listAll(request, w.token, `q=${encodeURIComponent(q)}${extra}`)).map((p) => p.id).sort((x, y) => x - y)

  it('finds a case-insensitive substring of metadata, type, error and message', async () => {
    expect(await search('acme')).toEqual([made.invoice!])
    expect(await search('BILLING.')).toEqual([made.invoice!])
    expect(await search('unreadable')).toEqual([made.failed!])
    expect(await search('row 17')).toEqual([made.failed!])
    expect(await search('nothing like this')).toEqual([])
  })

  it('takes %, _ and \\ literally', async () => {
    expect(await search('100%')).toEqual([made.invoice!])
    expect(await search('%')).toEqual([made.invoice!])
    expect(await search('_')).toEqual([made.under!].sort((x, y) => x - y))
    expect(await search('x_y')).toEqual([made.under!])
    // The metadata's JSON text holds the backslash escaped (\\): a single backslash matches it.
    expect(await search('\\')).toEqual([made.under!])
    expect(await search('%_%')).toEqual([])
  })

  it('combines with the other filters and answers hostile input with 422, never a 500', async () => {
    expect(await search('e', '&type=email')).toEqual([made.plain!])
    for (const q of ['', 'x'.repeat(201), 'a\u0000b']) {
      const res = await request('GET', `/processes?q=${encodeURIComponent(q)}`, { token: w.token })
      expect(res.status).toBe(422)
    }
    for (const q of ["'; drop table processes; --", '\\%\\_', '[a-z]*', '😀'].map(encodeURIComponent).concat(['%ED%A0%80', '%FF', '%25%'])) {
      const res = await request('GET', `/processes?q=${q}`, { token: w.token })
      expect(res.status).toBeLessThan(500)
    }
  })

  it('reads at most SEARCH_SCAN_MAX rows per page and links on below them', async () => {
    const big = await createTenant(sql)
    const needle = (await request('POST', '/processes', { token: big.token, body: { type: 'needle' } })).body.id
    const type = uniqueType('hay')
    for (let made = 0; made < SEARCH_SCAN_MAX; made += 1000) {
      const res = await request('POST', '/processes/batch', { token: big.token, body: { processes: Array.from({ length: 1000 }, () => ({ type })) } })
      expect(res.status).toBe(201)
    }
    const first = await request('GET', '/processes?q=needle', { token: big.token })
    expect(first.status).toBe(200)
    // The newest SEARCH_SCAN_MAX rows hold no match: an empty page, with the next one below them.
    expect(first.body).toEqual([])
    const link = first.headers.get('link')
    expect(link).toMatch(/before=\d+/)
    const second = await request('GET', link!.match(/^<([^>]+)>/)![1]!, { token: big.token })
    expect(second.body.map((p: { id: number }) => p.id)).toEqual([needle])
    expect(second.headers.get('link')).toBeNull()
  }, 60_000)
})

describe('run-now', () => {
  it('makes a pending process due later due now: run_at, a new version, an event, and claimable', async () => {
    const type = uniqueType('later')
    const later = new Date(Date.now() + 3_600_000).toISOString()
    const p = (await request('POST', '/processes', { token: t.token, body: { type, run_at: later } })).body
    expect(await claimNext(sql, { workerId: WORKER_ID, types: [type], max: 1 })).toEqual([])
    const res = await request('POST', `/processes/${p.id}/run-now`, { token: t.token })
    expect(res.status).toBe(200)
    expect(res.body.status).toBe('pending')
    expect(res.body.version).toBe(p.version + 1)
    expect(Date.parse(res.body.run_at)).toBeLessThanOrEqual(Date.now())
    const events = (await request('GET', `/processes/${p.id}/events`, { token: t.token })).body
    expect(events.at(-1)).toMatchObject({ status: 'pending', message: 'Run now', stack: null })
    const [claimed] = await claimNext(sql, { workerId: WORKER_ID, types: [type], max: 1 })
    expect(claimed?.id).toBe(p.id)
  })

  it('answers 409 for a process already due or not pending, 404 outside the workspace, 403 for a viewer', async () => {
    const due = (await request('POST', '/processes', { token: t.token, body: { type: uniqueType('due') } })).body
    const already = await request('POST', `/processes/${due.id}/run-now`, { token: t.token })
    expect(already.status).toBe(409)
    expect(already.body.error.code).toBe('invalid_transition')
    const dead = await request('POST', `/processes/${ids.dead}/run-now`, { token: t.token })
    expect(dead.status).toBe(409)
    const other = await createTenant(sql)
    expect((await request('POST', `/processes/${ids.scheduled}/run-now`, { token: other.token })).status).toBe(404)
    expect((await request('POST', '/processes/abc/run-now', { token: t.token })).status).toBe(422)
    const viewer = await createUser(sql, `viewer-${crypto.randomUUID()}@example.com`, t.workspaceId, 'viewer')
    const { token } = await createApiToken(sql, viewer.id, 'viewer', null)
    const refused = await request('POST', `/processes/${ids.scheduled}/run-now`, { token })
    expect(refused.status).toBe(403)
    expect((await request('GET', `/processes/${ids.scheduled}`, { token })).body.run_at).toBe(
      (await request('GET', `/processes/${ids.scheduled}`, { token: t.token })).body.run_at,
    )
  })
})
