// Tokens and the audit trail (README: API, Security): revocation and expiry within the cache window, one audit row per
// authenticated request, a mutation's row committed with it, reads flushed in batches, last_used_at.
import { beforeAll, describe, expect, it } from 'bun:test'
import { addMember, createApiToken, createWorkspace, revokeToken } from '../../src/auth/queries'
import { hashToken } from '../../src/auth/tokens'
import { createHandler } from '../../src/app'
import { buildServices } from '../../src/server'
import { createTenant, inProcessApp, quietLogger, requester, testConfig, waitFor, type Tenant } from '../support/helpers'

// The default cache (AUTH_CACHE_MS unset), and a second app on the same database with no cache at all.
const cached = await inProcessApp()
const uncached = await (async () => {
  const { services } = await buildServices(testConfig({ AUTH_CACHE_MS: '0' }), { db: cached.db, log: quietLogger() })
  return { s: services, request: requester(createHandler(services)) }
})()

let rid = 0
const requestId = () => `auth-test-${Date.now()}-${rid++}`

async function auditRows(sql: typeof cached.s.sql, id: string) {
  return sql<
    {
      user_id: number | null
      token_id: number | null
      workspace_id: number | null
      method: string
      route: string
      status: number
      user_agent: string | null
      request_id: string
    }[]
  >`select user_id, token_id, workspace_id, method, route, status, user_agent, request_id from audit_log where request_id = ${id}`
}

describe('token checks', () => {
  it('accepts a valid token and refuses it at once after revocation when AUTH_CACHE_MS=0', async () => {
    const { s, request } = uncached
    const t = await createTenant(s.sql)
    expect((await request('GET', '/processes', { token: t.token })).status).toBe(200)
    expect(await revokeToken(s.sql, t.tokenId, 'api')).toBe(true)
    const res = await request('GET', '/processes', { token: t.token })
    expect(res.status).toBe(401)
    expect(res.body.error.code).toBe('unauthenticated')
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
  })

  it('refuses a revoked token within 5 seconds with the default cache', async () => {
    const { s, request } = cached
    expect(s.config.AUTH_CACHE_MS).toBeLessThanOrEqual(5000)
    const t = await createTenant(s.sql)
    expect((await request('GET', '/processes', { token: t.token })).status).toBe(200)
    const revokedAt = Date.now()
    await revokeToken(s.sql, t.tokenId, 'api')
    await waitFor(async () => (await request('GET', '/processes', { token: t.token })).status === 401, 5000, 'the revoked token to be refused')
    expect(Date.now() - revokedAt).toBeLessThanOrEqual(5000)
    // And it stays refused.
    expect((await request('GET', '/processes', { token: t.token })).status).toBe(401)
  })

  it('refuses a token whose expiry has passed', async () => {
    for (const { s, request } of [cached, uncached]) {
      const t = await createTenant(s.sql)
      await s.sql`update api_tokens set expires_at = now() - interval '1 minute' where id = ${t.tokenId}`
      const res = await request('GET', '/processes', { token: t.token })
      expect(res.status).toBe(401)
      expect(res.body.error.code).toBe('unauthenticated')
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    }
  })

  it('refuses a cached token as soon as it expires, without waiting for the cache', async () => {
    const { s, request } = cached
    const t = await createTenant(s.sql)
    await s.sql`update api_tokens set expires_at = now() + interval '700 milliseconds' where id = ${t.tokenId}`
    expect((await request('GET', '/processes', { token: t.token })).status).toBe(200)
    await Bun.sleep(800)
    expect((await request('GET', '/processes', { token: t.token })).status).toBe(401)
  })

  it('accepts a token with a future expiry', async () => {
    const { s, request } = uncached
    const t = await createTenant(s.sql)
    const { token } = await createApiToken(s.sql, t.userId, 'short', 1)
    expect((await request('GET', '/processes', { token })).status).toBe(200)
  })

  it('remembers an unknown token only briefly: with AUTH_CACHE_MS=0 not at all, else for at most 2 s', async () => {
    // A real token is random and cannot be tried before it exists; a guessed one is spared a look-up a while.
    const t = await createTenant(cached.s.sql)
    const late = `ps_late_${Date.now()}`
    expect((await uncached.request('GET', '/processes', { token: late })).status).toBe(401)
    await cached.s.sql`insert into api_tokens (user_id, token_hash, name) values (${t.userId}, ${hashToken(late)}, 'late')`
    expect((await uncached.request('GET', '/processes', { token: late })).status).toBe(200)
    const later = `ps_later_${Date.now()}`
    expect((await cached.request('GET', '/processes', { token: later })).status).toBe(401)
    await cached.s.sql`insert into api_tokens (user_id, token_hash, name) values (${t.userId}, ${hashToken(later)}, 'later')`
    expect((await cached.request('GET', '/processes', { token: later })).status).toBe(401)
    await waitFor(async () => (await cached.request('GET', '/processes', { token: later })).status === 200, 3000)
  })

  it('accepts the ps_session cookie with its value in double quotes (RFC 6265), and refuses empty quotes', async () => {
    const { s, request } = cached
    const t = await createTenant(s.sql)
    for (const cookie of [`ps_session="${t.token}"`, `theme=dark; ps_session="${encodeURIComponent(t.token)}"; lang=en`]) {
      expect({ cookie, status: (await request('GET', '/processes', { headers: { cookie } })).status }).toEqual({ cookie, status: 200 })
    }
    for (const cookie of ['ps_session=""', 'ps_session="', `ps_session="${t.token}`, `ps_session='${t.token}'`]) {
      const res = await request('GET', '/processes', { headers: { cookie } })
      expect({ cookie, status: res.status }).toEqual({ cookie, status: 401 })
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    }
  })

  it('stores only the SHA-256 of a token', async () => {
    const { s } = cached
    const t = await createTenant(s.sql)
    const [row] = await s.sql<{ token_hash: string }[]>`select token_hash from api_tokens where id = ${t.tokenId}`
    expect(row!.token_hash).toBe(new Bun.CryptoHasher('sha256').update(t.token).digest('hex'))
    const leaked = await s.sql`select 1 from api_tokens where token_hash = ${t.token} or name = ${t.token}`
    expect(leaked).toHaveLength(0)
  })

  it('sets last_used_at once a token has been used', async () => {
    const { s, request } = cached
    const t = await createTenant(s.sql)
    const before = await s.sql<{ last_used_at: string | null }[]>`select last_used_at from api_tokens where id = ${t.tokenId}`
    expect(before[0]!.last_used_at).toBeNull()
    const startedAt = Date.now()
    expect((await request('GET', '/processes', { token: t.token })).status).toBe(200)
    await s.audit.flush()
    const after = await s.sql<{ last_used_at: string | null }[]>`select last_used_at from api_tokens where id = ${t.tokenId}`
    expect(after[0]!.last_used_at).not.toBeNull()
    expect(new Date(after[0]!.last_used_at!).getTime()).toBeGreaterThanOrEqual(startedAt - 1000)
  })
})

describe('audit', () => {
  const { s, request } = cached
  let t: Tenant

  beforeAll(async () => {
    t = await createTenant(s.sql)
  })

  async function exactlyOneRow(id: string) {
    await s.audit.flush()
    const rows = await auditRows(s.sql, id)
    expect(rows).toHaveLength(1)
    return rows[0]!
  }

  it('writes one row for a successful read, with who, what and where', async () => {
    const id = requestId()
    expect((await request('GET', '/processes?limit=3', { token: t.token, headers: { 'x-request-id': id, 'user-agent': 'audit-test/1.0' } })).status).toBe(200)
    expect(await exactlyOneRow(id)).toEqual({
      user_id: t.userId,
      token_id: t.tokenId,
      workspace_id: t.workspaceId,
      method: 'GET',
      route: expect.stringMatching(/^\/processes\/?$/),
      status: 200,
      user_agent: 'audit-test/1.0',
      request_id: id,
    })
  })

  it("writes the process's workspace on the rows of reads of one process: 200, 304, events and stream", async () => {
    // A member of two workspaces, reading a process of the second: the row says which one it was.
    const two = await createTenant(s.sql)
    const second = await createWorkspace(s.sql, `second-${Date.now()}`)
    await addMember(s.sql, two.userId, second.id, 'owner')
    for (const [who, workspaceId] of [
      [t, t.workspaceId],
      [two, second.id],
    ] as const) {
      const created = await request('POST', '/processes', { token: who.token, body: { type: 'audit_reads', workspace_id: workspaceId } })
      expect(created.status).toBe(201)
      const path = `/processes/${created.body.id}`
      for (const [suffix, headers, status] of [
        ['', {}, 200],
        ['', { 'if-none-match': `"${created.body.version}"` }, 304],
        ['/events', {}, 200],
        ['/stream', {}, 200],
      ] as const) {
        const id = requestId()
        const response = await cached.handle(
          new Request(`http://test.local${path}${suffix}`, { headers: { authorization: `Bearer ${who.token}`, 'x-request-id': id, ...headers } }),
        )
        expect(response.status).toBe(status)
        await response.body?.cancel()
        expect(await exactlyOneRow(id)).toMatchObject({ user_id: who.userId, workspace_id: workspaceId, status, method: 'GET' })
      }
    }
  })

  it('writes one row for a failed authentication, with no user', async () => {
    for (const token of [null, 'ps_unknown']) {
      const id = requestId()
      expect((await request('GET', '/processes/1', { token, headers: { 'x-request-id': id } })).status).toBe(401)
      expect(await exactlyOneRow(id)).toMatchObject({ user_id: null, token_id: null, status: 401, route: '/processes/:id', method: 'GET' })
    }
  })

  it('writes one row for each 4xx on an authenticated route', async () => {
    const cases: Array<[string, string, unknown, number]> = [
      ['GET', '/processes/999999', undefined, 404],
      ['GET', '/processes/abc', undefined, 422],
      ['GET', '/processes?limit=0', undefined, 422],
      ['POST', '/processes', '{oops', 400],
      ['POST', '/processes', { type: 'x', workspace_id: 999_999 }, 403],
      ['POST', '/processes/999999/cancel', undefined, 404],
    ]
    for (const [method, path, body, status] of cases) {
      const id = requestId()
      const res = await request(method, path, { token: t.token, body, headers: { 'x-request-id': id } })
      expect(res.status).toBe(status)
      expect(await exactlyOneRow(id)).toMatchObject({ user_id: t.userId, token_id: t.tokenId, status, method })
    }
  })

  it('writes one row for a 409, even though the mutation did not happen', async () => {
    const created = await request('POST', '/processes', { token: t.token, body: { type: 'audit_conflict' } })
    const id = requestId()
    expect((await request('POST', `/processes/${created.body.id}/retry`, { token: t.token, headers: { 'x-request-id': id } })).status).toBe(409)
    expect(await exactlyOneRow(id)).toMatchObject({ status: 409, route: '/processes/:id/retry', user_id: t.userId })
  })

  it('writes no row for routes without authentication', async () => {
    const id = requestId()
    expect((await request('GET', '/health', { headers: { 'x-request-id': id } })).status).toBe(200)
    const missing = requestId()
    expect((await request('GET', '/no-such-route', { headers: { 'x-request-id': missing } })).status).toBe(404)
    await s.audit.flush()
    expect(await auditRows(s.sql, id)).toHaveLength(0)
    expect(await auditRows(s.sql, missing)).toHaveLength(0)
  })

  it("commits a mutation's row with it, before any batch flush, and buffers a read's row until the flush", async () => {
    // Stop the batch timer so nothing but the mutation's own transaction can have written its row.
    await s.audit.stop()
    try {
      const readId = requestId()
      const pendingBefore = s.audit.pending
      expect((await request('GET', '/processes', { token: t.token, headers: { 'x-request-id': readId } })).status).toBe(200)
      expect(s.audit.pending).toBe(pendingBefore + 1)
      expect(await auditRows(s.sql, readId)).toHaveLength(0)

      for (const [method, path, body, status] of [
        ['POST', '/processes', { type: 'audited' }, 201],
        ['POST', '/processes/{id}/cancel', undefined, 200],
      ] as const) {
        const created = await s.sql<{ id: number }[]>`select max(id)::int as id from processes where type = 'audited'`
        const id = requestId()
        const res = await request(method, path.replace('{id}', String(created[0]!.id)), { token: t.token, body, headers: { 'x-request-id': id } })
        expect(res.status).toBe(status)
        const rows = await auditRows(s.sql, id)
        expect(rows).toHaveLength(1)
        expect(rows[0]).toMatchObject({ user_id: t.userId, workspace_id: t.workspaceId, method, status })
      }
      // Nothing went to the batch for the mutations.
      expect(s.audit.pending).toBe(pendingBefore + 1)

      await s.audit.flush()
      expect(await auditRows(s.sql, readId)).toHaveLength(1)
      expect(s.audit.pending).toBe(0)
    } finally {
      s.audit.start()
    }
  })

  it('writes a replayed idempotent create once, as a read', async () => {
    const headers = { 'idempotency-key': `audit-${Date.now()}` }
    const first = requestId()
    const again = requestId()
    await request('POST', '/processes', { token: t.token, body: { type: 'audit_idem' }, headers: { ...headers, 'x-request-id': first } })
    await request('POST', '/processes', { token: t.token, body: { type: 'audit_idem' }, headers: { ...headers, 'x-request-id': again } })
    expect(await exactlyOneRow(first)).toMatchObject({ status: 201 })
    expect(await exactlyOneRow(again)).toMatchObject({ status: 201 })
  })

  it("flushes a read's row on its own within the batch interval", async () => {
    const id = requestId()
    expect((await request('GET', '/processes', { token: t.token, headers: { 'x-request-id': id } })).status).toBe(200)
    const startedAt = Date.now()
    await waitFor(async () => (await auditRows(s.sql, id)).length === 1, 2000, 'the batched audit row')
    // Flushed every AUDIT_FLUSH_MS (250); the margin is for a loaded test machine, not for the server.
    expect(Date.now() - startedAt).toBeLessThan(s.config.AUDIT_FLUSH_MS + 500)
  })
})
