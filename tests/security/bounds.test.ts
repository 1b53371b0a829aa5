// Issue #19: a hostile tenant, or a stranger, costs only itself. Each case is an attack the review measured:
// what it used to grow or stall, bounded now.
import { describe, expect, it } from 'bun:test'
import { createTenant, inProcessApp } from '../helpers'

const app = await inProcessApp({ RATE_LIMIT_PER_TOKEN_PER_S: '0', RATE_LIMIT_PER_WORKSPACE_PER_S: '0' })
const { s, handle, request, db } = app
const tenant = await createTenant(db.sql)

const randomPath = (n: number) => `/${Array.from({ length: n }, () => 'abcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(Math.random() * 36)]).join('')}`

describe('unmatched routes and long headers cost nothing lasting', () => {
  it('labels 413s and 404s on random paths `unmatched`, so /metrics does not grow with them', async () => {
    const flood = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const path = randomPath(2000)
        const big = await handle(new Request(`http://test.local${path}`, { method: 'POST', headers: { 'content-length': String(2 * 1024 * 1024) }, body: 'x' }))
        expect(big.status).toBe(413)
        const missing = await handle(new Request(`http://test.local${path}/${i}`))
        expect(missing.status).toBe(404)
      }
    }
    await flood(5)
    await request('GET', '/metrics')
    const before = (await request('GET', '/metrics')).body as string
    await flood(50)
    const after = (await request('GET', '/metrics')).body as string
    expect(after).toContain('route="unmatched"')
    // The same label set: only the counters' digits change.
    expect(after.split('\n').length).toBe(before.split('\n').length)
    expect(Math.abs(after.length - before.length)).toBeLessThan(200)
  })

  it('counts a method it does not know as OTHER', async () => {
    // A Request cannot carry such a method in-process (Bun turns it into GET); the server hands it on as sent.
    for (let i = 0; i < 5; i++) s.metrics.request(`X${i}ZZY`, '/processes', 404, 1)
    const text = (await request('GET', '/metrics')).body as string
    expect(text).toContain('method="OTHER"')
    expect(text).not.toContain('X1ZZY')
  })

  it('stores `unmatched` and a capped User-Agent in the audit log for a refused body with a long path', async () => {
    const path = randomPath(8000)
    const response = await handle(
      new Request(`http://test.local${path}`, {
        method: 'POST',
        headers: { 'content-length': String(2 * 1024 * 1024), authorization: `Bearer ${tenant.token}`, 'user-agent': 'u'.repeat(8000) },
        body: 'x',
      }),
    )
    expect(response.status).toBe(413)
    await s.audit.flush()
    const [row] = await db.sql<{ route: string; user_agent: string }[]>`
      select route, user_agent from audit_log where user_id = ${tenant.userId} and status = 413 order by id desc limit 1`
    expect(row!.route).toBe('unmatched')
    expect(row!.user_agent.length).toBeLessThanOrEqual(256)
  })

  it('keeps the route template for a refused body on a known route', async () => {
    const response = await handle(
      new Request('http://test.local/processes/12345/cancel', {
        method: 'POST',
        headers: { 'content-length': String(2 * 1024 * 1024), authorization: `Bearer ${tenant.token}` },
        body: 'x',
      }),
    )
    expect(response.status).toBe(413)
    await s.audit.flush()
    const [row] = await db.sql<{ route: string }[]>`
      select route from audit_log where user_id = ${tenant.userId} and status = 413 order by id desc limit 1`
    expect(row!.route).toBe('/processes/:id/cancel')
  })

  it('caps a long User-Agent on an ordinary audited request', async () => {
    const response = await request('GET', '/processes', { token: tenant.token, headers: { 'user-agent': 'a'.repeat(5000) } })
    expect(response.status).toBe(200)
    await s.audit.flush()
    const [row] = await db.sql<{ user_agent: string }[]>`
      select user_agent from audit_log where user_id = ${tenant.userId} and route = '/processes' order by id desc limit 1`
    expect(row!.user_agent.length).toBeLessThanOrEqual(256)
  })
})
