// Single creates group-committed (src/processes/create-batcher.ts): requests that arrive together share one
// transaction, and each still gets its own answer, idempotency and errors.
import { describe, expect, it } from 'bun:test'
import { createHandler } from '../../src/app'
import { buildServices } from '../../src/server'
import { createTenant, hasPostgres, inProcessApp, quietLogger, requester, testConfig } from '../support/helpers'

const { s, request, db } = await inProcessApp({ RATE_LIMIT_PER_TOKEN_PER_S: '0', RATE_LIMIT_PER_WORKSPACE_PER_S: '0' })
const sql = db.sql
const t = await createTenant(sql)
let seq = 0
const freshType = () => `grp_${seq++}`
const post = (body: unknown, key?: string, token = t.token) =>
  request('POST', '/processes', { token, body, headers: key === undefined ? {} : { 'idempotency-key': key } })

describe('group-committed creates', () => {
  it('50 creates at once: each its own 201, process, first event and audit row, in a few transactions', async () => {
    const type = freshType()
    const batchesBefore = s.creates.batches
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => post({ type, metadata: { i } })))
    expect(replies.map((r) => r.status)).toEqual(Array(50).fill(201))
    const ids = replies.map((r) => r.body.id)
    expect(new Set(ids).size).toBe(50)
    for (const [i, r] of replies.entries()) expect(r.body).toMatchObject({ type, status: 'pending', metadata: { i }, workspace_id: t.workspaceId })
    const events = await sql<{ n: number }[]>`select count(*)::int as n from process_events where process_id = any(${ids}::bigint[]) and status = 'pending'`
    expect(events[0]!.n).toBe(50)
    const audited = await sql<
      { n: number }[]
    >`select count(*)::int as n from audit_log where route = '/processes' and method = 'POST' and status = 201 and token_id = ${t.tokenId}`
    expect(audited[0]!.n).toBeGreaterThanOrEqual(50)
    expect(s.creates.batches - batchesBefore).toBeLessThan(10)
  })

  it('concurrent requests with one Idempotency-Key make one process, the others replay it; other keys are their own', async () => {
    const type = freshType()
    const shared = `shared-${crypto.randomUUID()}`
    const replies = await Promise.all([
      ...Array.from({ length: 20 }, () => post({ type }, shared)),
      ...Array.from({ length: 10 }, (_, i) => post({ type }, `own-${i}-${crypto.randomUUID()}`)),
    ])
    expect(replies.map((r) => r.status)).toEqual(Array(30).fill(201))
    const sharedIds = new Set(replies.slice(0, 20).map((r) => r.body.id))
    expect(sharedIds.size).toBe(1)
    expect(replies.slice(0, 20).filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(19)
    const own = replies.slice(20).map((r) => r.body.id)
    expect(new Set(own).size).toBe(10)
    const [made] = await sql<{ n: number }[]>`select count(*)::int as n from processes where type = ${type}`
    expect(made!.n).toBe(11)
  })

  it('a key reused with another body is refused (422) alone; its neighbours in the batch are created', async () => {
    const type = freshType()
    const key = `reused-${crypto.randomUUID()}`
    expect((await post({ type, metadata: { a: 1 } }, key)).status).toBe(201)
    const replies = await Promise.all([post({ type, metadata: { a: 2 } }, key), post({ type }), post({ type })])
    expect(replies.map((r) => r.status)).toEqual([422, 201, 201])
    expect(replies[0]!.body.error.code).toBe('invalid_request')
  })

  it('a create the database refuses fails alone: the rest of its batch is created', async () => {
    const type = freshType()
    await sql.unsafe(`
      create function refuse_poisoned_process() returns trigger language plpgsql as $$
      begin
        if new.type = 'poison' then raise exception 'process refused for the test'; end if;
        return new;
      end $$;
      create trigger refuse_poisoned_process before insert on processes
        for each row execute function refuse_poisoned_process();`)
    try {
      const replies = await Promise.all([post({ type }), post({ type: 'poison' }), post({ type }), post({ type })])
      expect(replies.map((r) => r.status)).toEqual([201, 500, 201, 201])
      expect(replies[1]!.body.error.code).toBe('internal')
    } finally {
      await sql.unsafe('drop trigger refuse_poisoned_process on processes; drop function refuse_poisoned_process()')
    }
    const [made] = await sql<{ n: number }[]>`select count(*)::int as n from processes where type = ${type}`
    expect(made!.n).toBe(3)
  })

  it.skipIf(!hasPostgres)('two instances racing one Idempotency-Key make one process between them', async () => {
    const { services } = await buildServices(testConfig({ RATE_LIMIT_PER_TOKEN_PER_S: '0' }), { db, log: quietLogger() })
    const other = requester(createHandler(services))
    const type = freshType()
    const key = `race-${crypto.randomUUID()}`
    const headers = { 'idempotency-key': key }
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? request : other)('POST', '/processes', { token: t.token, body: { type }, headers })),
    )
    expect(replies.map((r) => r.status)).toEqual(Array(10).fill(201))
    expect(new Set(replies.map((r) => r.body.id)).size).toBe(1)
    const [made] = await sql<{ n: number }[]>`select count(*)::int as n from processes where type = ${type}`
    expect(made!.n).toBe(1)
  })
})
