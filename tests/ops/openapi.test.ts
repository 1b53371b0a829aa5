// The API docs: /openapi/json is complete (a response for every route and status, no auth on public routes),
// and /openapi works offline — its page loads only same-origin assets, and in Chromium, with every request to
// another host blocked, it renders the route list.
import { afterAll, describe, expect, it } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { inProcessApp, listeningServer, testDatabase } from '../support/helpers'

const CHROMIUM = '/usr/bin/chromium'
// /metrics is on its own port (METRICS_PORT): on this one only with METRICS_TOKEN (tests/security/http.test.ts).
const PUBLIC_PATHS = ['/health', '/ready']

describe('the OpenAPI document', async () => {
  const { request } = await inProcessApp()
  const doc = (await request('GET', '/openapi/json')).body as { paths: Record<string, Record<string, any>>; security: unknown }

  it('documents a response, with its body schema, for every route and status', () => {
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })))
    expect(operations.length).toBeGreaterThanOrEqual(14)
    for (const { path, method, op } of operations) {
      const statuses = Object.keys(op.responses ?? {})
      expect({ path, method, has2xx: statuses.some((s) => s.startsWith('2')) }).toEqual({ path, method, has2xx: true })
      for (const [status, response] of Object.entries<any>(op.responses)) {
        if (status === '304' || status === '204') continue // no body, by definition
        const [type] = Object.keys(response.content ?? {})
        expect({ path, method, status, schema: Boolean(type && response.content[type].schema) }).toEqual({ path, method, status, schema: true })
      }
      const open = PUBLIC_PATHS.includes(path) || (Array.isArray(op.security) && op.security.length === 0)
      if (!open) expect({ path, method, errors: ['401', '500', '503'].every((s) => statuses.includes(s)) }).toEqual({ path, method, errors: true })
    }
  })

  it("shows the console's routes and list parameters: bulk, run-now, view and q", () => {
    const bulk = doc.paths['/processes/bulk']!.post
    expect(Object.keys(bulk.requestBody.content['application/json'].schema.properties).sort()).toEqual(['action', 'dry_run', 'filter'])
    expect(Object.keys(bulk.responses['200'].content['application/json'].schema.properties).sort()).toEqual([
      'action',
      'changed',
      'dry_run',
      'matched',
      'workspace_id',
    ])
    expect(doc.paths['/processes/{id}/run-now']!.post.responses['409']).toBeDefined()
    const listParams = (doc.paths['/processes']!.get.parameters as { name: string }[]).map((p) => p.name)
    expect(listParams).toEqual(expect.arrayContaining(['view', 'q', 'before', 'status']))
    expect(Object.keys(doc.paths['/processes/{id}']!.get.responses['200'].content['application/json'].schema.properties)).toContain('error_stack')
  })

  it('shows no auth on the public routes, and bearer on the rest', () => {
    expect(doc.security).toEqual([{ bearer: [] }])
    for (const path of PUBLIC_PATHS) expect(doc.paths[path]!.get.security).toEqual([])
    expect(doc.paths['/processes']!.get.security).toBeUndefined()
    // The docs page and its assets are not API routes.
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/openapi'))).toEqual([])
  })

  it('serves a page that references only same-origin assets, and serves those assets', async () => {
    const page = await request('GET', '/openapi')
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toContain('text/html')
    const html = String(page.body)
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
    expect(refs.filter((r) => r !== 'data:,')).toEqual(['/openapi/assets/swagger-ui.css', '/openapi/assets/swagger-ui-bundle.js', '/openapi/assets/init.js'])
    expect(html).not.toMatch(/<script>(?!<\/script>)|<script(?![^>]*src)[^>]*>/) // no inline script
    for (const [ref, type] of [
      ['/openapi/assets/swagger-ui.css', 'text/css'],
      ['/openapi/assets/swagger-ui-bundle.js', 'text/javascript'],
      ['/openapi/assets/init.js', 'text/javascript'],
    ] as const) {
      const asset = await request('GET', ref)
      expect({ ref, status: asset.status, type: asset.headers.get('content-type')?.split(';')[0] }).toEqual({ ref, status: 200, type })
    }
    expect(String((await request('GET', '/openapi/assets/init.js')).body)).toContain('validatorUrl: null')
  })
})

describe.skipIf(!existsSync(CHROMIUM))('/openapi in Chromium with no network beyond the server', async () => {
  // A skipped describe's body still runs (to collect its tests): launch nothing without Chromium.
  if (!existsSync(CHROMIUM)) return
  const { db } = await testDatabase()
  const server = await listeningServer({}, db)
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
  })
  afterAll(() => browser.close())

  it('renders the route list, and asks no other host for anything', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    const outside: string[] = []
    await page.route('**/*', (route) => {
      const url = route.request().url()
      if (url.startsWith(server.url) || url.startsWith('data:')) return route.continue()
      outside.push(url)
      return route.abort()
    })
    await page.goto(`${server.url}/openapi`)
    await page.locator('.opblock-summary-path', { hasText: '/processes/{id}/events' }).first().waitFor({ timeout: 30_000 })
    const paths = await page.locator('.opblock-summary-path').allTextContents()
    expect(paths.map((p) => p.replace(/\u200b/g, '').trim())).toEqual(
      expect.arrayContaining(['/health', '/processes', '/processes/{id}', '/processes/{id}/stream']),
    )
    const dir = join(tmpdir(), 'ps-screenshots')
    mkdirSync(dir, { recursive: true })
    await page.screenshot({ path: join(dir, 'openapi.png') })
    expect(outside).toEqual([])
    await page.close()
  }, 60_000)
})
