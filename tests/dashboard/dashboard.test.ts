// The dashboard in a real headless Chromium (Debian's chromium, driven by playwright-core), against a real
// server and a real worker (a `ws` client doing hello/claim/progress/fail): status tabs with counts, the type
// filter, search by id, a URL per process, live progress, bulk retry of failed, confirmation before cancel and
// discard, the workers page with the connected worker and its lease, the no-worker warning, the charts, and the
// queues page (pause, resume, schedules' next runs). Screenshots (light and dark) go to tests/artifacts/screenshots.
import { afterAll, expect, it } from 'bun:test'
import type { BrowserContext, Page } from 'playwright-core'
import { describeInBrowser, launchBrowser, screenshots, signedIn as signIn } from '../support/browser'
import { createTenant, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { createApiToken, createUser } from '../../src/auth/queries'

describeInBrowser('dashboard in Chromium', async () => {
  const { db } = await testDatabase()
  // Every test signs in with the one token: past SIGN_IN_PER_MIN (10 a minute) a sign-in would be 429.
  const server = await listeningServer({ PROGRESS_PERSIST_MS: '50', SIGN_IN_PER_MIN: '0' }, db)
  const tenant = await createTenant(db.sql, 'Acme imports')
  const rest = restAs(server.url, tenant.token)

  // The workspace: 3 failed, 1 completed, 1 waiting for review, 1 running (leased to the worker, which stays
  // connected), and 1 pending of a type no worker claims.
  const worker = await TestWorker.connect(server.url, await workerToken(db.sql))
  afterAll(() => worker.close())
  expect((await worker.request({ op: 'hello', worker_id: 'dash-worker' })).op).toBe('ack')
  const run = async (type: string, finish: (p: any) => Record<string, unknown> | null) => {
    const created = await rest.create(type)
    const claimed = (await worker.request({ op: 'claim', types: [type] })).process
    expect(claimed.id).toBe(created.id)
    const frame = finish(claimed)
    if (frame) expect((await worker.request({ ...frame, process_id: claimed.id, attempt: claimed.attempts })).op).toBe('ack')
    return claimed
  }
  const failed = [] as any[]
  for (let i = 0; i < 3; i++) failed.push(await run('dash_import', () => ({ op: 'fail', error: `row ${i + 1} is not CSV` })))
  const completed = await run('dash_report', () => ({ op: 'complete', result_summary: { pages: 3 } }))
  const review = await run('dash_match', () => ({ op: 'complete', review: true, result_summary: { matches: 7 } }))
  const running = await run('dash_long', () => ({ op: 'progress', progress: 10, message: 'Starting' }))
  const orphan = await rest.create('dash_orphan')
  void completed

  const browser = await launchBrowser()
  afterAll(() => browser.close())
  const signedIn = (viewport = { width: 1280, height: 800 }, token = tenant.token): Promise<{ context: BrowserContext; page: Page }> =>
    signIn(browser, server.url, token, 'Acme imports', viewport)
  const count = async (page: Page, tab: string) => Number(await page.getByTestId(`tab-${tab}`).getByTestId('count').textContent())
  const rows = (page: Page) => page.getByTestId('process-row')

  it('shows status tabs with counts, filters by status and type, and moves live', async () => {
    const { context, page } = await signedIn()
    await waitFor(async () => (await count(page, 'failed')) === 3, 15_000, 'the failed count')
    expect(await count(page, 'all')).toBe(7)
    expect(await count(page, 'completed')).toBe(1)
    expect(await count(page, 'waiting_review')).toBe(1)
    expect(await count(page, 'running')).toBe(1)
    expect(await count(page, 'pending')).toBe(1)
    await waitFor(async () => (await rows(page).count()) === 7, 10_000, 'seven rows')
    // Compact: seven processes and the toolbar fit well within one screen.
    const lastRow = await rows(page).last().boundingBox()
    expect(lastRow!.y + lastRow!.height).toBeLessThan(420)

    // Live: the worker's progress reaches the row without a reload.
    expect((await worker.request({ op: 'progress', process_id: running.id, attempt: running.attempts, progress: 40, message: 'Row 400' })).op).toBe('ack')
    const runningRow = page.locator(`tr[data-id="${running.id}"]`)
    await waitFor(async () => (await runningRow.getByTestId('progress-bar').getAttribute('aria-valuenow')) === '40', 15_000, 'progress 40 in the row')
    await page.getByTestId('no-worker-warning').waitFor()
    await screenshots(page, 'processes')

    await page.getByTestId('tab-failed').click()
    await waitFor(async () => (await rows(page).count()) === 3, 10_000, 'three failed rows')
    expect(page.url()).toContain('status=failed')
    expect(await rows(page).getByTestId('status').allTextContents()).toEqual(['failed', 'failed', 'failed'])

    await page.getByTestId('tab-all').click()
    await page.getByTestId('type-filter').selectOption('dash_report')
    await waitFor(async () => (await rows(page).count()) === 1, 10_000, 'one dash_report row')
    expect(page.url()).toContain('type=dash_report')
    expect(await count(page, 'all')).toBe(1)

    // Phone width: nothing overflows sideways.
    await page.setViewportSize({ width: 390, height: 844 })
    expect(await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth)).toBe(false)
    await screenshots(page, 'phone')
    await context.close()
  }, 90_000)

  it('finds a process by id, gives it a URL that opens directly, and asks before cancelling it', async () => {
    const { context, page } = await signedIn()
    await page.getByTestId('search-id').fill(String(running.id))
    await page.getByTestId('search-id').press('Enter')
    const detail = page.getByTestId('process-detail')
    await waitFor(async () => (await detail.getByTestId('status').textContent()) === 'running', 10_000, 'the detail view')
    expect(page.url()).toEndWith(`#/processes/${running.id}`)

    // The URL alone, in a fresh tab.
    const direct = await context.newPage()
    await direct.goto(`${server.url}/#/processes/${running.id}`)
    await waitFor(
      async () => (await direct.getByTestId('process-detail').getByTestId('status').textContent()) === 'running',
      10_000,
      'the detail view from its URL',
    )
    await direct.getByTestId('event-log').locator('li').first().waitFor()
    // The live output shows like a log pane: text as it comes, other chunks as JSON lines.
    await worker.request({ op: 'output', process_id: running.id, attempt: running.attempts, chunk: 'Reading stores.csv…\n' })
    await worker.request({ op: 'output', process_id: running.id, attempt: running.attempts, chunk: { rows: 80 } })
    const pane = direct.getByTestId('process-output')
    await waitFor(async () => ((await pane.textContent()) ?? '').includes('{"rows":80}'), 10_000, 'the output pane')
    expect(await pane.textContent()).toBe('Reading stores.csv…\n{"rows":80}\n')
    await screenshots(direct, 'detail')

    // Cancel asks first; "Keep it" changes nothing.
    await direct.getByTestId('cancel').click()
    await direct.getByTestId('confirm-dialog').waitFor()
    expect(await direct.getByTestId('confirm-dialog').textContent()).toContain(`Cancel #${running.id}`)
    await direct.getByTestId('confirm-no').click()
    expect((await rest.get(running.id)).status).toBe('running')
    await direct.getByTestId('cancel').click()
    await direct.getByTestId('confirm-yes').click()
    await waitFor(async () => (await direct.getByTestId('process-detail').getByTestId('status').textContent()) === 'cancelled', 10_000, 'cancelled on the page')
    await worker.until(() => worker.pushes.some((p) => p.process_id === running.id), 10_000)

    // An id that is not there.
    await direct.goto(`${server.url}/#/processes/999999`)
    await direct.getByTestId('not-found').waitFor()
    await context.close()
  }, 90_000)

  it('asks before discarding a result under review', async () => {
    const { context, page } = await signedIn()
    await page.goto(`${server.url}/#/processes/${review.id}`)
    await page.getByTestId('discard').click()
    await page.getByTestId('confirm-dialog').waitFor()
    expect(await page.locator('#confirm-text').textContent()).toContain(`Discard the result of #${review.id}`)
    await page.getByTestId('confirm-yes').click()
    await waitFor(async () => (await rest.get(review.id)).status === 'cancelled', 10_000, 'discarded')
    await context.close()
  }, 60_000)

  it('shows the connected worker with its lease, and warns about the type no worker claims', async () => {
    const lease = await run('dash_long', () => ({ op: 'heartbeat' }))
    const { context, page } = await signedIn()
    await page.getByTestId('nav-workers').click()
    const row = page.locator('tr[data-worker="dash-worker"]')
    await row.waitFor({ timeout: 15_000 })
    await waitFor(async () => ((await row.textContent()) ?? '').includes(`#${lease.id}`), 15_000, 'the lease on the workers page')
    expect(await row.textContent()).toContain('connected')
    expect(await row.textContent()).toContain('dash_long')
    expect(await row.getByTestId('lease').first().textContent()).toContain('heartbeat')
    const warning = page.getByTestId('no-worker-warning')
    await warning.waitFor()
    expect(await warning.textContent()).toContain('dash_orphan (1 pending)')
    await screenshots(page, 'workers')
    void orphan
    await context.close()
  }, 60_000)

  it('draws throughput, wait-time and run-time charts', async () => {
    const { context, page } = await signedIn()
    await page.getByTestId('nav-charts').click()
    await page.getByTestId('chart-window').selectOption('1h')
    await waitFor(async () => (await page.getByTestId('chart-throughput').getByTestId('bar').count()) > 0, 15_000, 'throughput bars')
    expect(await page.getByTestId('chart-wait').getByTestId('point').count()).toBeGreaterThan(0)
    expect(await page.getByTestId('chart-run').getByTestId('point').count()).toBeGreaterThan(0)
    await screenshots(page, 'charts')
    await context.close()
  }, 60_000)

  it('retries every failed process by filter on the server, after asking with its count', async () => {
    const { context, page } = await signedIn()
    await page.goto(`${server.url}/#/processes?status=failed`)
    await waitFor(async () => (await rows(page).count()) === 3, 10_000, 'three failed rows')
    await waitFor(async () => (await count(page, 'failed')) === 3, 10_000, 'the failed count')
    await page.getByTestId('select-all').check()
    expect(await page.getByTestId('bulk-retry').textContent()).toContain('all matching (3)')
    await page.getByTestId('bulk-retry').click()
    // The confirm dialog shows the server's dry-run count for the filter.
    await page.getByTestId('confirm-dialog').waitFor()
    expect(await page.locator('#confirm-text').textContent()).toContain('Retry 3 processes matching status failed')
    await page.getByTestId('confirm-yes').click()
    await waitFor(async () => (await Promise.all(failed.map((p) => rest.get(p.id)))).every((p) => p.status === 'pending'), 15_000, 'all three pending')
    await waitFor(async () => (await count(page, 'failed')) === 0 && (await rows(page).count()) === 0, 15_000, 'the failed tab emptied')
    // The selection does not outlive the action.
    expect(await page.getByTestId('select-all').isChecked()).toBe(false)
    expect(await page.getByTestId('bulk-retry').isDisabled()).toBe(true)
    await context.close()
  }, 60_000)

  it('shows a viewer everything and offers no change', async () => {
    const viewer = await createUser(db.sql, `viewer-${crypto.randomUUID()}@example.com`, tenant.workspaceId, 'viewer')
    const { token } = await createApiToken(db.sql, viewer.id, 'viewer', null)
    const { context, page } = await signedIn(undefined, token)
    expect(await page.getByTestId('workspace-select').textContent()).toContain('(viewer)')
    await waitFor(async () => (await rows(page).count()) > 0, 10_000, 'rows for the viewer')
    expect(await page.getByTestId('bulk-retry').isVisible()).toBe(false)
    expect(await page.getByTestId('create-toggle').isVisible()).toBe(false)
    expect(await page.getByTestId('select').count()).toBe(0)
    const pending = (await rest.create('dash_view')).id
    await page.goto(`${server.url}/#/processes/${pending}`)
    await page.getByTestId('cancel').waitFor()
    expect(await page.getByTestId('cancel').isDisabled()).toBe(true)
    await context.close()
  }, 60_000)

  it('lists the queues with pause and resume, and the schedules with their next runs', async () => {
    const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
    const created = await fetch(`${server.url}/schedules`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ type: 'dash_nightly', cron: '0 3 * * *', timezone: 'Europe/Berlin' }),
    })
    expect(created.status).toBe(201)
    const { context, page } = await signedIn()
    await page.getByTestId('nav-queues').click()
    const row = page.locator('tr[data-testid="queue-row"][data-type="dash_orphan"]')
    await row.waitFor({ timeout: 15_000 })
    expect(await row.getByTestId('queue-state').textContent()).toBe('active')
    await row.getByTestId('queue-pause').click()
    await waitFor(async () => (await row.getByTestId('queue-state').textContent()) === 'paused', 10_000, 'paused on the page')
    const queues = async () => (await (await fetch(`${server.url}/queues`, { headers })).json()) as { queues: { type: string; paused: boolean }[] }
    expect((await queues()).queues.find((q) => q.type === 'dash_orphan')?.paused).toBe(true)
    await row.getByTestId('queue-resume').click()
    await waitFor(async () => (await row.getByTestId('queue-state').textContent()) === 'active', 10_000, 'active again')
    expect((await queues()).queues.find((q) => q.type === 'dash_orphan')?.paused).toBe(false)
    // 03:00 in Berlin: the next three nights, each at 01:00 or 02:00 UTC.
    const nextRuns = await page.locator('tr[data-testid="schedule-row"]').filter({ hasText: 'dash_nightly' }).getByTestId('next-runs').textContent()
    expect(nextRuns!.split(' · ')).toHaveLength(3)
    await screenshots(page, 'queues')
    await context.close()
  }, 60_000)

  it("shows a parent's children: counts, a page of them, links both ways (trees)", async () => {
    const res = await fetch(`${server.url}/processes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'dash_tree', children: Array.from({ length: 60 }, (_, i) => ({ type: 'dash_leaf', metadata: { i } })) }),
    })
    const parent = (await res.json()) as { id: number }
    const { context, page } = await signedIn()
    await page.goto(`${server.url}/#/processes/${parent.id}`)
    await page.getByTestId('child-counts').waitFor()
    expect(await page.getByTestId('child-counts').textContent()).toContain('pending 60')
    await waitFor(async () => (await page.getByTestId('child-link').count()) === 50, 10_000, 'the first page of children')
    await page.locator('#child-more').click()
    await waitFor(async () => (await page.getByTestId('child-link').count()) === 60, 10_000, 'the second page')
    await page.getByTestId('child-link').first().click()
    await page.getByTestId('parent-link').waitFor()
    expect(await page.getByTestId('parent-link').textContent()).toBe(`#${parent.id}`)
    await context.close()
  }, 60_000)
})
