// POST /processes/bulk: cancel, retry or discard by filter, with a count preview; against real Postgres, and
// (with REDIS_URL) two instances sharing Redis for what a live stream sees.
import { beforeAll, describe, expect, it } from 'bun:test'
import { createApiToken, createUser } from '../../src/auth/queries'
import { BULK_BATCH } from '../../src/processes/bulk'
import { claimNext } from '../../src/processes/queries/claims'
import { transitionProcess, workerTransition } from '../../src/processes/queries/transitions'
import { createTenant, hasRedis, inProcessApp, listeningServer, redisPrefix, type Tenant, testDatabase, waitFor, workerToken } from '../support/helpers'
import { openStream } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'
import { processIn, uniqueType, WORKER_ID } from './drive'

const { s, request } = await inProcessApp({ BULK_MAX: '20000' })
const { sql } = s

let a: Tenant
let b: Tenant

beforeAll(async () => {
  a = await createTenant(sql)
  b = await createTenant(sql)
})

const bulk = (token: string, body: unknown) => request('POST', '/processes/bulk', { token, body })

/** `count` pending processes of one new type, made by POST /processes/batch (1000 per call). */
async function pendingOfType(token: string, count: number, type = uniqueType('bulk'), extra: Record<string, unknown> = {}) {
  for (let made = 0; made < count; made += 1000) {
    const n = Math.min(1000, count - made)
    const res = await request('POST', '/processes/batch', { token, body: { processes: Array.from({ length: n }, () => ({ type, ...extra })) } })
    expect(res.status).toBe(201)
  }
  return type
}

async function statusesOf(type: string) {
  const rows = await sql<{ status: string; n: number }[]>`select status, count(*)::int as n from processes where type = ${type} group by status`
  return Object.fromEntries(rows.map((r) => [r.status, r.n]))
}

/** A failed process of `type`, through a claim and a worker's fail. */
async function failedOfType(token: string, type: string) {
  const created = await request('POST', '/processes', { token, body: { type } })
  expect(created.status).toBe(201)
  const [running] = await claimNext(sql, { workerId: WORKER_ID, types: [type], max: 1 })
  const failed = await transitionProcess(sql, running!.id, workerTransition(sql, 'fail', WORKER_ID, running!.attempts, { error: 'boom' }))
  expect(failed?.status).toBe('failed')
  return failed!
}

const auditRows = (workspaceId: number) =>
  sql<{ route: string; status: number; details: any }[]>`
    select route, status, details from audit_log where workspace_id = ${workspaceId} and route = '/processes/bulk' order by id`

describe('bulk cancel', () => {
  it('previews a count that equals what it then changes, one event and one version each, in batches', async () => {
    const count = 5200
    const type = await pendingOfType(a.token, count)
    const before = await sql<{ id: number; version: number }[]>`select id, version from processes where type = ${type}`
    const preview = await bulk(a.token, { action: 'cancel', filter: { type }, dry_run: true })
    expect(preview.status).toBe(200)
    expect(preview.body).toEqual({ action: 'cancel', workspace_id: a.workspaceId, matched: count, dry_run: true })
    // The preview changed nothing.
    expect(await statusesOf(type)).toEqual({ pending: count })

    const done = await bulk(a.token, { action: 'cancel', filter: { type } })
    expect(done.status).toBe(200)
    expect(done.body).toEqual({ action: 'cancel', workspace_id: a.workspaceId, matched: count, changed: count, dry_run: false })
    expect(await statusesOf(type)).toEqual({ cancelled: count })

    const after = await sql<{ id: number; version: number; finished_at: Date | null; xmin: string }[]>`
      select id, version, finished_at, xmin::text from processes where type = ${type}`
    const versionOf = new Map(before.map((r) => [r.id, r.version]))
    for (const row of after) {
      expect(row.version).toBe(versionOf.get(row.id)! + 1)
      expect(row.finished_at).not.toBeNull()
    }
    // One transaction per batch, never one for all: the rows were last written by ceil(5200 / 500) transactions.
    expect(new Set(after.map((r) => r.xmin)).size).toBe(Math.ceil(count / BULK_BATCH))
    const [events] = await sql<{ n: number; processes: number }[]>`
      select count(*)::int as n, count(distinct e.process_id)::int as processes
        from process_events e join processes p on p.id = e.process_id
       where p.type = ${type} and e.status = 'cancelled'`
    expect(events).toEqual({ n: count, processes: count })
  }, 120_000)

  it('writes one audit row per call, with the action, the filter and the counts', async () => {
    const t = await createTenant(sql)
    const type = await pendingOfType(t.token, 30)
    expect((await bulk(t.token, { action: 'cancel', filter: { type }, dry_run: true })).status).toBe(200)
    expect((await bulk(t.token, { action: 'cancel', filter: { type } })).status).toBe(200)
    await s.audit.flush()
    const rows = await auditRows(t.workspaceId)
    expect(rows).toHaveLength(2)
    expect(rows.map((r) => r.status)).toEqual([200, 200])
    expect(rows[0]!.details).toEqual({ action: 'cancel', filter: { type }, matched: 30, changed: null, dry_run: true })
    expect(rows[1]!.details).toEqual({ action: 'cancel', filter: { type }, matched: 30, changed: 30, dry_run: false })
  })

  it('cancels only what cancel applies to (pending, running), and counts only those', async () => {
    const type = uniqueType('mixed')
    const pending = await request('POST', '/processes/batch', { token: a.token, body: { processes: [{ type }, { type }, { type }] } })
    expect(pending.status).toBe(201)
    await claimNext(sql, { workerId: WORKER_ID, types: [type], max: 1 })
    const failed = await failedOfType(a.token, type)
    const res = await bulk(a.token, { action: 'cancel', filter: { type } })
    expect(res.body).toMatchObject({ matched: 3, changed: 3 })
    expect(await statusesOf(type)).toEqual({ cancelled: 3, failed: 1 })
    expect((await request('GET', `/processes/${failed.id}`, { token: a.token })).body.status).toBe('failed')
  })

  it('keeps to the filter: status, tag, and a workspace the caller names', async () => {
    const type = await pendingOfType(a.token, 4, uniqueType('tagged'), { tags: ['blue'] })
    await pendingOfType(a.token, 3, type)
    const res = await bulk(a.token, { action: 'cancel', filter: { type, tag: 'blue', status: ['pending'] } })
    expect(res.body).toMatchObject({ matched: 4, changed: 4 })
    expect(await statusesOf(type)).toEqual({ cancelled: 4, pending: 3 })
  })
})

describe('bulk by view and search', () => {
  it('cancels only the scheduled ones with view=scheduled, and only what q finds with q', async () => {
    const type = uniqueType('view')
    const later = new Date(Date.now() + 3_600_000).toISOString()
    const made = await request('POST', '/processes/batch', {
      token: a.token,
      body: {
        processes: [
          { type, run_at: later, metadata: { customer: 'Globex 100%' } },
          { type, run_at: later, metadata: { customer: 'Initech' } },
          { type, metadata: { customer: 'Globex 100%' } },
        ],
      },
    })
    expect(made.status).toBe(201)
    const [scheduledGlobex, scheduledInitech, dueGlobex] = made.body.processes.map((p: { id: number }) => p.id)
    const preview = await bulk(a.token, { action: 'cancel', filter: { type, view: 'scheduled', q: 'globex 100%' }, dry_run: true })
    expect(preview.body).toMatchObject({ matched: 1, dry_run: true })
    const done = await bulk(a.token, { action: 'cancel', filter: { type, view: 'scheduled', q: 'globex 100%' } })
    expect(done.body).toMatchObject({ matched: 1, changed: 1 })
    const statusOf = async (id: number) => (await request('GET', `/processes/${id}`, { token: a.token })).body.status
    expect([await statusOf(scheduledGlobex), await statusOf(scheduledInitech), await statusOf(dueGlobex)]).toEqual(['cancelled', 'pending', 'pending'])
    // A wildcard is literal: '%' alone matches only what holds one.
    const wild = await bulk(a.token, { action: 'cancel', filter: { type, q: '%' }, dry_run: true })
    expect(wild.body.matched).toBe(1)
  })
})

describe('bulk retry and discard', () => {
  it('retries failed processes to pending, clearing their error, and wakes nothing it should not', async () => {
    const type = uniqueType('retry')
    const failed = [await failedOfType(a.token, type), await failedOfType(a.token, type)]
    const res = await bulk(a.token, { action: 'retry', filter: { type, status: 'failed' } })
    expect(res.body).toEqual({ action: 'retry', workspace_id: a.workspaceId, matched: 2, changed: 2, dry_run: false })
    for (const p of failed) {
      const now = (await request('GET', `/processes/${p.id}`, { token: a.token })).body
      expect(now).toMatchObject({ status: 'pending', error: null, error_stack: null, progress: 0, version: p.version + 1 })
    }
  })

  it('discards processes waiting for review, and nothing else', async () => {
    const review = await processIn(sql, request, a.token, 'waiting_review')
    const res = await bulk(a.token, { action: 'discard', filter: { type: review.type } })
    expect(res.body).toMatchObject({ matched: 1, changed: 1 })
    expect((await request('GET', `/processes/${review.id}`, { token: a.token })).body.status).toBe('cancelled')
  })

  it('cancels a parent with its children as the single route does', async () => {
    const type = uniqueType('tree')
    const parent = await request('POST', '/processes', { token: a.token, body: { type, children: [{ type }, { type }] } })
    expect(parent.status).toBe(201)
    const res = await bulk(a.token, { action: 'cancel', filter: { type } })
    expect(res.status).toBe(200)
    expect(res.body.matched).toBe(3)
    expect(await statusesOf(type)).toEqual({ cancelled: 3 })
  })
})

describe('bulk: who may, and what it may touch', () => {
  it('refuses a viewer with 403, as the single-process routes do, and changes nothing', async () => {
    const type = await pendingOfType(a.token, 3)
    const viewer = await createUser(sql, `viewer-${crypto.randomUUID()}@example.com`, a.workspaceId, 'viewer')
    const { token } = await createApiToken(sql, viewer.id, 'viewer', null)
    for (const body of [
      { action: 'cancel', filter: { type } },
      { action: 'cancel', filter: { type }, dry_run: true },
    ]) {
      const res = await bulk(token, body)
      expect(res.status).toBe(403)
      expect(res.body.error.code).toBe('forbidden')
    }
    expect(await statusesOf(type)).toEqual({ pending: 3 })
  })

  it('never touches another workspace: an empty filter is the caller’s own workspace, another is 403', async () => {
    const t = await createTenant(sql)
    const theirs = await pendingOfType(b.token, 5)
    const mine = await pendingOfType(t.token, 2)
    const res = await bulk(t.token, { action: 'cancel', filter: {} })
    expect(res.body).toEqual({ action: 'cancel', workspace_id: t.workspaceId, matched: 2, changed: 2, dry_run: false })
    expect(await statusesOf(mine)).toEqual({ cancelled: 2 })
    expect(await statusesOf(theirs)).toEqual({ pending: 5 })
    const other = await bulk(t.token, { action: 'cancel', filter: { workspace_id: b.workspaceId } })
    expect(other.status).toBe(403)
    expect(await statusesOf(theirs)).toEqual({ pending: 5 })
  })

  it('refuses a public token with 403', async () => {
    const type = await pendingOfType(a.token, 1)
    const minted = await request('POST', '/tokens/public', { token: a.token, body: { tags: ['anything'] } })
    expect(minted.status).toBe(201)
    const res = await bulk(minted.body.token, { action: 'cancel', filter: { type } })
    expect(res.status).toBe(403)
    expect(await statusesOf(type)).toEqual({ pending: 1 })
  })

  it('refuses a filter past BULK_MAX with 422, before anything changes', async () => {
    const small = await inProcessApp({ BULK_MAX: '10' })
    const t = await createTenant(small.s.sql)
    const type = uniqueType('capped')
    const made = await small.request('POST', '/processes/batch', { token: t.token, body: { processes: Array.from({ length: 11 }, () => ({ type })) } })
    expect(made.status).toBe(201)
    for (const dry_run of [true, false]) {
      const res = await small.request('POST', '/processes/bulk', { token: t.token, body: { action: 'cancel', filter: { type }, dry_run } })
      expect(res.status).toBe(422)
      expect(res.body.error.code).toBe('invalid_request')
      expect(res.body.error.message).toContain('BULK_MAX')
    }
    const [row] = await small.s.sql<{ n: number }[]>`select count(*)::int as n from processes where type = ${type} and status = 'pending'`
    expect(row!.n).toBe(11)
    // At the cap exactly, it applies.
    const one = (made.body as { processes: { id: number }[] }).processes[0]!.id
    expect((await small.request('POST', `/processes/${one}/cancel`, { token: t.token })).status).toBe(200)
    const atCap = await small.request('POST', '/processes/bulk', { token: t.token, body: { action: 'cancel', filter: { type } } })
    expect(atCap.body).toMatchObject({ matched: 10, changed: 10 })
  })

  it('answers bad input with 422 in the error shape, never a 500', async () => {
    const bad: unknown[] = [
      {},
      { action: 'delete', filter: {} },
      { action: 'cancel' },
      { action: 'cancel', filter: { status: 'nope' } },
      { action: 'cancel', filter: { view: 'old' } },
      { action: 'cancel', filter: { q: '' } },
      { action: 'cancel', filter: { q: 'a\u0000b' } },
      { action: 'cancel', filter: { workspace_id: 'x' } },
      { action: 'cancel', filter: { type: 'Bad Type' } },
      { action: 'cancel', filter: {}, dry_run: 'yes' },
      { action: 'cancel', filter: {}, extra: 1 },
      { action: 'cancel', filter: { unknown: 1 } },
    ]
    for (const body of bad) {
      const res = await bulk(a.token, body)
      expect(res.status).toBe(422)
      expect(res.body.error.code).toBe('invalid_request')
    }
    const notJson = await request('POST', '/processes/bulk', { token: a.token, body: '{"action":' })
    expect(notJson.status).toBe(400)
  })
})

describe.skipIf(!hasRedis)('bulk cancel seen live on another instance', () => {
  it("reaches a workspace stream on the other instance, each process's cancel once, and the worker holding one", async () => {
    const { db } = await testDatabase()
    const prefix = redisPrefix()
    const one = await listeningServer({ REDIS_PREFIX: prefix }, db)
    const two = await listeningServer({ REDIS_PREFIX: prefix }, db)
    const t = await createTenant(db.sql)
    const type = uniqueType('live')
    const auth = { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' }
    const made = await fetch(`${one.url}/processes/batch`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ processes: Array.from({ length: 20 }, () => ({ type })) }),
    })
    expect(made.status).toBe(201)
    const ids = ((await made.json()) as { processes: { id: number }[] }).processes.map((p) => p.id)
    const log = openStream(`${two.url}/processes/stream?type=${type}`, t.token)
    // One of them running, leased to a worker on the other instance: it must hear the cancel.
    const worker = await TestWorker.connect(two.url, await workerToken(db.sql))
    const claimed = await worker.request({ op: 'claim', types: [type] })
    expect(claimed.process?.id).toBeDefined()
    try {
      await waitFor(() => ids.every((id) => log.messages.some((m) => m.data.id === id)), 10_000)
      const res = await fetch(`${one.url}/processes/bulk`, { method: 'POST', headers: auth, body: JSON.stringify({ action: 'cancel', filter: { type } }) })
      expect(await res.json()).toMatchObject({ matched: 20, changed: 20 })
      const cancelled = () => log.messages.filter((m) => m.data.status === 'cancelled')
      await waitFor(() => cancelled().length >= 20, 10_000)
      expect(new Set(cancelled().map((m) => m.data.id))).toEqual(new Set(ids))
      expect(cancelled()).toHaveLength(20)
      expect((await worker.nextCancel(claimed.process.id)).process_id).toBe(claimed.process.id)
    } finally {
      log.source.close()
      worker.close()
    }
  }, 60_000)
})
