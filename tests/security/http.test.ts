// The HTTP side, attacked with real clients (fetch, the `eventsource` package) against listening
// servers, and in-process (`handle`) where a setting needs a server of its own: CSRF, CORS, roles,
// idempotency, audit, /metrics, browser sessions, dashboard headers, rate limits and stream caps.
import { describe, expect, it } from 'bun:test'
import { EventSource } from 'eventsource'
import { addMember, createApiToken, createUser, revokeToken } from '../../src/auth/queries'
import { MetricsPortInUseError, startServer } from '../../src/server'
import { createTenant, inProcessApp, listeningServer, quietLogger, testConfig, testDatabase, waitFor, within } from '../support/helpers'

const AUTH_CACHE_MS = 1000
const METRICS_TOKEN = 'metrics-secret-123'
const { db } = await testDatabase()
const server = await listeningServer(
  {
    AUTH_CACHE_MS: String(AUTH_CACHE_MS),
    SSE_MAX_MS: '120000',
    METRICS_TOKEN,
    CORS_ORIGINS: 'http://app.example',
    MAX_STREAMS_PER_TOKEN: '2',
    // The test client is the proxy: its X-Forwarded-Proto is believed (only from TRUSTED_PROXIES).
    TRUSTED_PROXIES: '127.0.0.1, ::1',
  },
  db,
)
// Without METRICS_TOKEN, and with no metrics port: made at the top, as a server's stop ends the file's database.
const plain = await listeningServer({ METRICS_ON_API_PORT: 'off' }, db)
const off = await listeningServer({ METRICS_PORT: 'off' }, db)
// A second instance on this host: the metrics port it is given is the plain server's.
const second = await listeningServer({ METRICS_PORT: new URL(plain.metricsUrl!).port }, db)
const base = server.url
const own = new URL(base).origin
const tenant = await createTenant(db.sql)
const bearer = { authorization: `Bearer ${tenant.token}` }
let seq = 0
const freshType = () => `sec_http_${seq++}`

async function createProcess(token = tenant.token, type = freshType()) {
  const response = await fetch(`${base}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type }),
  })
  expect(response.status).toBe(201)
  return (await response.json()) as { id: number; status: string }
}

const statusOf = async (id: number) => ((await (await fetch(`${base}/processes/${id}`, { headers: bearer })).json()) as { status: string }).status

async function signIn(token = tenant.token, headers: Record<string, string> = {}) {
  const response = await fetch(`${base}/auth/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: own, ...headers },
    body: JSON.stringify({ token }),
  })
  return response
}

const sessionCookieOf = (response: Response) => /ps_session=([^;]*)/.exec(response.headers.get('set-cookie') ?? '')![1]!

describe('CSRF: changes made with the cookie must come from this origin', () => {
  const cookie = `ps_session=${encodeURIComponent(tenant.token)}`

  it('refuses a cross-site text/plain form POST that would create a process with the cookie', async () => {
    const type = freshType()
    for (const headers of <Array<Record<string, string>>>[
      { origin: 'http://evil.localhost', 'content-type': 'text/plain' },
      { 'sec-fetch-site': 'same-site', 'content-type': 'text/plain' },
      { 'content-type': 'text/plain' }, // neither Origin nor Sec-Fetch-Site
    ]) {
      const response = await fetch(`${base}/processes`, { method: 'POST', headers: { cookie, ...headers }, body: JSON.stringify({ type }) })
      expect(response.status).toBe(403)
      expect(((await response.json()) as any).error.code).toBe('forbidden')
    }
    const list = (await (await fetch(`${base}/processes?type=${type}`, { headers: bearer })).json()) as unknown[]
    expect(list).toHaveLength(0)
  })

  it('refuses a same-origin change with the cookie that is not application/json', async () => {
    const response = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { cookie, origin: own, 'content-type': 'text/plain' },
      body: JSON.stringify({ type: freshType() }),
    })
    expect(response.status).toBe(403)
  })

  it('refuses a cross-origin cancel with the cookie, and the process stays pending', async () => {
    const p = await createProcess()
    const response = await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: { cookie, origin: 'http://other.127.0.0.1.nip.io' } })
    expect(response.status).toBe(403)
    expect(await statusOf(p.id)).toBe('pending')
  })

  it('accepts the same change from this origin (and from a CORS_ORIGINS origin), and bearer clients as before', async () => {
    const made = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { cookie, origin: own, 'content-type': 'application/json' },
      body: JSON.stringify({ type: freshType() }),
    })
    expect(made.status).toBe(201)
    const p = (await made.json()) as { id: number }
    const cancelled = await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: { cookie, 'sec-fetch-site': 'same-origin' } })
    expect(cancelled.status).toBe(200)
    const listed = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { cookie, origin: 'http://app.example', 'content-type': 'application/json' },
      body: JSON.stringify({ type: freshType() }),
    })
    expect(listed.status).toBe(201)
    // A bearer token is not sent by a browser on its own: curl -d without a Content-Type still works.
    const curl = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { ...bearer, 'content-type': 'text/plain' },
      body: JSON.stringify({ type: freshType() }),
    })
    expect(curl.status).toBe(201)
  })
})

describe('CORS', () => {
  it('echoes a listed origin with credentials, and nothing for another', async () => {
    const listed = await fetch(`${base}/processes`, { headers: { ...bearer, origin: 'http://app.example' } })
    expect(listed.headers.get('access-control-allow-origin')).toBe('http://app.example')
    expect(listed.headers.get('access-control-allow-credentials')).toBe('true')
    const other = await fetch(`${base}/processes`, { headers: { ...bearer, origin: 'http://evil.example' } })
    expect(other.headers.get('access-control-allow-origin')).toBeNull()
  })

  it('never combines CORS_ORIGINS=* with credentials', async () => {
    const { handle } = await inProcessApp({ CORS_ORIGINS: '*' })
    for (const method of ['GET', 'OPTIONS']) {
      const response = await handle(
        new Request('http://test.local/health', { method, headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' } }),
      )
      expect(response.headers.get('access-control-allow-origin')).toBe('*')
      expect(response.headers.get('access-control-allow-credentials')).toBeNull()
    }
  })
})

describe('roles', () => {
  it('lets a viewer read and stream, and refuses it every change with 403 forbidden', async () => {
    const viewerUser = await createUser(db.sql, `viewer-${Date.now()}@example.com`, tenant.workspaceId, 'viewer')
    const viewer = (await createApiToken(db.sql, viewerUser.id, 'viewer', null)).token
    const auth = { authorization: `Bearer ${viewer}`, 'content-type': 'application/json' }
    const p = await createProcess()
    const viewerType = freshType()
    expect((await fetch(`${base}/processes`, { headers: auth })).status).toBe(200)
    expect((await fetch(`${base}/processes/${p.id}`, { headers: auth })).status).toBe(200)
    const stream = await fetch(`${base}/processes/${p.id}/stream`, { headers: auth })
    expect(stream.status).toBe(200)
    await stream.body?.cancel()
    const refused = [
      await fetch(`${base}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: freshType() }) }),
      await fetch(`${base}/processes/batch`, { method: 'POST', headers: auth, body: JSON.stringify({ processes: [{ type: viewerType }] }) }),
      await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: auth }),
      await fetch(`${base}/processes/${p.id}/retry`, { method: 'POST', headers: auth }),
      await fetch(`${base}/processes/${p.id}/review`, { method: 'POST', headers: auth, body: JSON.stringify({ decision: 'approve' }) }),
    ]
    for (const response of refused) {
      expect(response.status).toBe(403)
      expect(((await response.json()) as any).error.code).toBe('forbidden')
    }
    expect(await statusOf(p.id)).toBe('pending')
    expect(await db.sql`select id from processes where type = ${viewerType}`).toHaveLength(0)
    // A process of a workspace it is not in is still 404 for it, never 403.
    const stranger = await createTenant(db.sql)
    const theirs = await createProcess(stranger.token)
    expect((await fetch(`${base}/processes/${theirs.id}/cancel`, { method: 'POST', headers: auth })).status).toBe(404)
    // Promoted to member, the same token may change (after the look-up cache lets go).
    await addMember(db.sql, viewerUser.id, tenant.workspaceId, 'member')
    await waitFor(
      async () => (await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })).status === 200,
      AUTH_CACHE_MS + 15_000,
      'member may cancel',
    )
  })
})

describe('Idempotency-Key', () => {
  it('replays the same body, and refuses another body with 422', async () => {
    const type = freshType()
    const headers = { ...bearer, 'content-type': 'application/json', 'idempotency-key': `k-${type}` }
    const first = await fetch(`${base}/processes`, { method: 'POST', headers, body: JSON.stringify({ type, metadata: { n: 1 } }) })
    expect(first.status).toBe(201)
    const same = await fetch(`${base}/processes`, { method: 'POST', headers, body: JSON.stringify({ type, metadata: { n: 1 } }) })
    expect(same.status).toBe(201)
    expect(same.headers.get('idempotent-replayed')).toBe('true')
    const other = await fetch(`${base}/processes`, { method: 'POST', headers, body: JSON.stringify({ type, metadata: { n: 2 } }) })
    expect(other.status).toBe(422)
    expect(((await other.json()) as any).error.code).toBe('invalid_request')
    expect((await (await fetch(`${base}/processes?type=${type}`, { headers: bearer })).json()) as unknown[]).toHaveLength(1)
  })
})

describe('audit', () => {
  const auditRow = async (requestId: string) => {
    await server.services.audit.flush()
    return db.sql`select user_id, status, route, request_id, request_id_from_client from audit_log where request_id = ${requestId}`
  }

  it('audits a 413, with the caller when its token is valid', async () => {
    const requestId = `sec-413-${Date.now()}`
    const response = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { ...bearer, 'content-type': 'application/json', 'x-request-id': requestId },
      body: JSON.stringify({ type: 'x', metadata: { big: 'x'.repeat(1024 * 1024 + 10) } }),
    })
    expect(response.status).toBe(413)
    const rows = await auditRow(requestId)
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ user_id: tenant.userId, status: 413 })
  })

  it('marks a client-supplied request id as the client’s', async () => {
    const requestId = `client-chosen-${Date.now()}`
    const response = await fetch(`${base}/processes`, { headers: { ...bearer, 'x-request-id': requestId } })
    expect(response.status).toBe(200)
    expect((await auditRow(requestId))[0]).toMatchObject({ request_id_from_client: true })
    const ours = await fetch(`${base}/processes`, { headers: bearer })
    const generated = ours.headers.get('x-request-id')!
    expect((await auditRow(generated))[0]).toMatchObject({ request_id_from_client: false })
  })
})

describe('/metrics on a port of its own', () => {
  it('is served on METRICS_PORT, on the loopback, and is a 404 on the API port with METRICS_ON_API_PORT=off', async () => {
    const metricsUrl = new URL(plain.metricsUrl!)
    expect(metricsUrl.hostname).toBe('127.0.0.1')
    expect(metricsUrl.port).not.toBe(new URL(plain.url).port)
    const scrape = await fetch(plain.metricsUrl!)
    expect(scrape.status).toBe(200)
    expect(scrape.headers.get('content-type')).toStartWith('text/plain')
    expect(await scrape.text()).toContain('processes_http_requests_total')
    // On the API port: what any unknown path answers, nothing about what the server counts.
    const hidden = await fetch(`${plain.url}/metrics`)
    expect(hidden.status).toBe(404)
    expect(((await hidden.json()) as any).error.code).toBe('not_found')
    expect((await fetch(`${plain.url}/metrics`, { headers: bearer })).status).toBe(404)
    // The metrics port serves /metrics only.
    const other = await fetch(`${metricsUrl.origin}/processes`, { headers: bearer })
    expect(other.status).toBe(404)
    expect(((await other.json()) as any).error.code).toBe('not_found')
    expect((await fetch(plain.metricsUrl!, { method: 'POST' })).status).toBe(405)
  })

  it('refuses to start on a METRICS_PORT that is taken, naming it, where it is the only /metrics; off serves none', async () => {
    const taken = new URL(plain.metricsUrl!).port
    const attempt = startServer(testConfig({ METRICS_PORT: taken, METRICS_ON_API_PORT: 'off' }), { db, log: quietLogger() })
    const error = await attempt.then(
      (running) => running.stop().then(() => null),
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(MetricsPortInUseError)
    expect(String(error)).toContain(`METRICS_PORT ${taken} is already in use`)
    expect(off.metricsUrl).toBeNull()
    expect((await fetch(`${off.url}/health`)).status).toBe(200)
    // By default the API port serves it too, as the contract's operations route: public without METRICS_TOKEN.
    const onApiPort = await fetch(`${off.url}/metrics`)
    expect(onApiPort.status).toBe(200)
    expect(await onApiPort.text()).toContain('processes_http_requests_total')
    // With /metrics on PORT as well (the default), a second instance on the host starts, serving it there only.
    expect(second.metricsUrl).toBeNull()
    const onPort = await fetch(`${second.url}/metrics`)
    expect(onPort.status).toBe(200)
    expect(await onPort.text()).toContain('processes_http_requests_total')
    expect(() => testConfig({ METRICS_PORT: '70000' })).toThrow('METRICS_PORT')
    expect(() => testConfig({ METRICS_PORT: 'on' })).toThrow('METRICS_PORT')
  })
})

describe('/metrics bearer', () => {
  it('needs METRICS_TOKEN when it is set, on the API port and on the metrics port', async () => {
    expect((await fetch(server.metricsUrl!)).status).toBe(401)
    expect((await fetch(server.metricsUrl!, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).status).toBe(200)
    expect((await fetch(`${base}/metrics`)).status).toBe(401)
    expect((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)
    expect((await fetch(`${base}/metrics`, { headers: bearer })).status).toBe(401)
    const ok = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    expect(ok.status).toBe(200)
    expect(await ok.text()).toContain('processes_http_requests_total')
  })
})

describe('browser sessions', () => {
  it('exchanges an API token for an HttpOnly, SameSite session cookie holding an opaque secret', async () => {
    const response = await signIn()
    expect(response.status).toBe(200)
    const body = (await response.json()) as any
    expect(body.user).toMatchObject({ id: tenant.userId })
    expect(Date.parse(body.expires_at)).toBeGreaterThan(Date.now())
    const setCookie = response.headers.get('set-cookie')!
    expect(setCookie).toMatch(/HttpOnly/)
    expect(setCookie).toMatch(/SameSite=Lax/)
    expect(setCookie).toMatch(/Path=\//)
    expect(setCookie).toMatch(/Max-Age=\d+/)
    expect(setCookie).not.toMatch(/Secure/)
    const secret = sessionCookieOf(response)
    expect(secret).not.toBe(tenant.token)
    expect(secret).not.toContain(tenant.token)
    expect((await fetch(`${base}/me`, { headers: { cookie: `ps_session=${secret}` } })).status).toBe(200)
    // Behind an https proxy (a trusted one) the cookie is Secure.
    const https = await signIn(tenant.token, { 'x-forwarded-proto': 'https' })
    expect(https.headers.get('set-cookie')).toMatch(/; Secure/)
    // Only the hash is stored.
    const rows = await db.sql`select secret_hash from sessions`
    expect(rows.some((r) => r.secret_hash === secret)).toBe(false)
  })

  it('refuses a bad token (401), a session secret as the token, and a cross-site sign-in', async () => {
    expect((await signIn('ps_nope')).status).toBe(401)
    const secret = sessionCookieOf(await signIn())
    expect((await signIn(secret)).status).toBe(401)
    expect((await signIn(tenant.token, { origin: 'http://evil.example' })).status).toBe(403)
  })

  it('revokes the session on DELETE /auth/session: the cookie is cleared, refused after, and its open stream ends', async () => {
    const secret = sessionCookieOf(await signIn())
    const cookie = `ps_session=${secret}`
    const p = await createProcess()
    const received = { messages: 0, errors: 0 }
    let closedByServer = false
    const source = new EventSource(`${base}/processes/${p.id}/stream`, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), cookie } }),
    })
    source.onmessage = () => received.messages++
    source.onerror = () => {
      received.errors++
      closedByServer = true
      source.close()
    }
    await waitFor(() => received.messages > 0, 15_000, 'the first state')
    const out = await fetch(`${base}/auth/session`, { method: 'DELETE', headers: { cookie, origin: own } })
    expect(out.status).toBe(204)
    expect(out.headers.get('set-cookie')).toMatch(/ps_session=;.*Max-Age=0/)
    await waitFor(() => closedByServer, AUTH_CACHE_MS + 15_000, 'the stream to end')
    source.close()
    expect((await fetch(`${base}/me`, { headers: { cookie } })).status).toBe(401)
  })

  it('ends the sessions of a revoked API token too', async () => {
    const user = await createUser(db.sql, `sess-${Date.now()}@example.com`, tenant.workspaceId, 'member')
    const { id, token } = await createApiToken(db.sql, user.id, 'for a session', null)
    const cookie = `ps_session=${sessionCookieOf(await signIn(token))}`
    expect((await fetch(`${base}/me`, { headers: { cookie } })).status).toBe(200)
    await revokeToken(db.sql, id, 'api')
    await waitFor(async () => (await fetch(`${base}/me`, { headers: { cookie } })).status === 401, AUTH_CACHE_MS + 15_000, 'the session refused')
  })
})

describe('revocation reaches open streams', () => {
  it('ends a revoked API token’s SSE stream within AUTH_CACHE_MS (the window is 120 s here)', async () => {
    const user = await createUser(db.sql, `stream-${Date.now()}@example.com`, tenant.workspaceId, 'member')
    const { id, token } = await createApiToken(db.sql, user.id, 'streams', null)
    const response = await fetch(`${base}/processes/stream`, { headers: { authorization: `Bearer ${token}` } })
    expect(response.status).toBe(200)
    const reader = response.body!.getReader()
    await reader.read()
    await revokeToken(db.sql, id, 'api')
    const ended = (async () => {
      for (;;) if ((await reader.read()).done) return true
    })()
    expect(await within(ended, AUTH_CACHE_MS + 15_000, false)).toBe(true)
    // Ended by the credential watch, not by anything else.
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text()
    expect(Number(/processes_connections_closed_revoked_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1)
  })
})

describe('dashboard', () => {
  it('sends CSP without inline script, nosniff and frame-ancestors none, and keeps no token in a script-readable cookie', async () => {
    for (const path of ['/', '/app.js', '/style.css']) {
      const response = await fetch(`${base}${path}`)
      expect(response.status).toBe(200)
      const csp = response.headers.get('content-security-policy')!
      expect(csp).toContain("frame-ancestors 'none'")
      expect(csp).toContain("script-src 'self'")
      expect(csp).not.toContain('unsafe-inline')
      expect(response.headers.get('x-content-type-options')).toBe('nosniff')
      const text = await response.text()
      if (path === '/') expect(text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/)
      if (path === '/app.js') {
        expect(text).not.toContain('document.cookie')
        expect(text).toContain('/auth/session')
      }
    }
  })
})

describe('limits', () => {
  it('caps open streams per token (429 rate_limited), and a closed stream frees its place', async () => {
    const user = await createUser(db.sql, `cap-${Date.now()}@example.com`, tenant.workspaceId, 'member')
    const auth = { authorization: `Bearer ${(await createApiToken(db.sql, user.id, 'cap', null)).token}` }
    const open = [await fetch(`${base}/processes/stream`, { headers: auth }), await fetch(`${base}/processes/stream`, { headers: auth })]
    for (const r of open) expect(r.status).toBe(200)
    const third = await fetch(`${base}/processes/stream`, { headers: auth })
    expect(third.status).toBe(429)
    expect(third.headers.get('retry-after')).toMatch(/^\d+$/)
    expect(((await third.json()) as any).error.code).toBe('rate_limited')
    // Another token is not affected.
    const other = await fetch(`${base}/processes/stream`, { headers: bearer })
    expect(other.status).toBe(200)
    await other.body!.cancel()
    await open[0]!.body!.cancel()
    await waitFor(
      async () => {
        const again = await fetch(`${base}/processes/stream`, { headers: auth })
        await again.body?.cancel()
        return again.status === 200
      },
      15_000,
      'a place freed',
    )
    await open[1]!.body!.cancel()
  })

  it('limits requests per token with 429 rate_limited and Retry-After, without touching another token', async () => {
    const { s, request } = await inProcessApp({ RATE_LIMIT_PER_TOKEN_PER_S: '1', RATE_LIMIT_BURST: '3', RATE_LIMIT_PER_WORKSPACE_PER_S: '0' })
    const a = await createTenant(s.sql)
    const b = await createTenant(s.sql)
    const statuses: number[] = []
    for (let i = 0; i < 6; i++) statuses.push((await request('GET', '/processes', { token: a.token })).status)
    expect(statuses.filter((x) => x === 429).length).toBeGreaterThanOrEqual(2)
    const limited = await request('GET', '/processes', { token: a.token })
    expect(limited.status).toBe(429)
    expect(limited.body.error.code).toBe('rate_limited')
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect((await request('GET', '/processes', { token: b.token })).status).toBe(200)
  })

  it('limits requests per workspace across its tokens', async () => {
    const { s, request } = await inProcessApp({ RATE_LIMIT_PER_TOKEN_PER_S: '0', RATE_LIMIT_PER_WORKSPACE_PER_S: '1', RATE_LIMIT_BURST: '3' })
    const a = await createTenant(s.sql)
    const second = await createApiToken(s.sql, a.userId, 'second', null)
    const other = await createTenant(s.sql)
    for (let i = 0; i < 3; i++) await request('GET', '/processes', { token: a.token })
    const limited = await request('GET', '/processes', { token: second.token })
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/)
    expect((await request('GET', '/processes', { token: other.token })).status).toBe(200)
  })
})
