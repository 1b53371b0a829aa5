// The console's views and fixes in a real headless Chromium against a real server and worker: worker log
// lines live in the Events pane, cursor paging with counts that agree with the tabs, error banners that clear,
// run_at / priority / attempts and delayed processes, the scheduled / retrying / dead views, search, bulk by
// filter (cancel, discard; retry is in dashboard.test.ts), the error and stack of a failed attempt, the workers
// and queues pages live, date axes, and the keyboard.
// Screenshots (light and dark) go to tests/artifacts/screenshots.
import { afterAll, expect, it } from 'bun:test'
import type { Page } from 'playwright-core'
import { describeInBrowser, launchBrowser, screenshots, signedIn } from '../support/browser'
import { createTenant, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

describeInBrowser('console in Chromium', async () => {
  const { db } = await testDatabase()
  const server = await listeningServer({ PROGRESS_PERSIST_MS: '50', SIGN_IN_PER_MIN: '0' }, db)
  const tenant = await createTenant(db.sql, 'Console works')
  const rest = restAs(server.url, tenant.token)
  const post = async (path: string, body: unknown) => {
    const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: rest.auth, body: JSON.stringify(body) })
    expect(response.status).toBeLessThan(300)
    return (await response.json()) as any
  }
  const worker = await TestWorker.connect(server.url, await workerToken(db.sql))
  afterAll(() => worker.close())
  expect((await worker.request({ op: 'hello', worker_id: 'console-worker' })).op).toBe('ack')
  const claim = async (type: string) => {
    const claimed = (await worker.request({ op: 'claim', types: [type] })).process
    expect(claimed?.type).toBe(type)
    return claimed
  }
  const frame = async (p: any, f: Record<string, unknown>) => expect((await worker.request({ ...f, process_id: p.id, attempt: p.attempts })).op).toBe('ack')

  const browser = await launchBrowser()
  afterAll(() => browser.close())
  const open = () => signedIn(browser, server.url, tenant.token, 'Console works')
  const rows = (page: Page) => page.getByTestId('process-row')
  const count = async (page: Page, tab: string) => (await page.getByTestId(`tab-${tab}`).getByTestId('count').textContent())?.trim()
  const text = async (page: Page, testid: string) => (await page.getByTestId(testid).first().textContent()) ?? ''

  it("shows a running process's log lines in the Events pane as the worker writes them", async () => {
    await rest.create('con_live')
    const running = await claim('con_live')
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes/${running.id}`)
    const log = page.getByTestId('event-log')
    await log.locator('li').first().waitFor()
    const before = await log.locator('li').count()
    await frame(running, { op: 'log', message: 'Read 100 rows of stores.csv' })
    await waitFor(async () => ((await log.textContent()) ?? '').includes('Read 100 rows'), 10_000, 'the first log line')
    await frame(running, { op: 'log', message: 'Read 200 rows of stores.csv' })
    await waitFor(async () => (await log.locator('li').count()) === before + 2, 10_000, 'the second log line')
    // Appended in order, none twice, while the status stays running.
    expect((await log.locator('li').allTextContents()).slice(-2).map((t) => t.replace(/^.*running/, ''))).toEqual([
      'Read 100 rows of stores.csv',
      'Read 200 rows of stores.csv',
    ])
    expect(await page.getByTestId('process-detail').getByTestId('status').textContent()).toBe('running')
    await frame(running, { op: 'complete', result_summary: { rows: 200 } })
    await context.close()
  }, 60_000)

  it('pages the list by cursor past 100 rows, with a count that agrees with the tab', async () => {
    await post('/processes/batch', { processes: Array.from({ length: 130 }, (_, i) => ({ type: 'con_many', metadata: { i } })) })
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes?status=pending&type=con_many`)
    await waitFor(async () => (await rows(page).count()) === 100, 10_000, 'the first page')
    await waitFor(async () => (await count(page, 'pending')) === '130', 10_000, 'the pending count')
    // The footer follows the same counts; a live arrival may be counted once more until the next stats read.
    await waitFor(
      async () => (await text(page, 'list-count')) === '100 of 130 shown',
      10_000,
      () => 'the footer: 100 of 130 shown',
    )
    await page.getByTestId('list-more').click()
    await waitFor(async () => (await rows(page).count()) === 130, 10_000, 'the second page')
    expect(await text(page, 'list-count')).toBe('130 of 130 shown')
    expect(await page.getByTestId('list-more').isVisible()).toBe(false)
    // Newest first, every id once.
    const ids = (await rows(page).evaluateAll((all) => all.map((r) => Number((r as HTMLElement).dataset.id)))) as number[]
    expect(ids).toEqual([...ids].sort((a, b) => b - a))
    expect(new Set(ids).size).toBe(130)
    // A new one arrives live at the top, and the tab's count follows.
    const fresh = await rest.create('con_many')
    await waitFor(async () => (await rows(page).first().getAttribute('data-id')) === String(fresh.id), 10_000, 'the new row on top')
    await waitFor(async () => (await count(page, 'pending')) === '131', 10_000, 'the count of 131')
    expect(await text(page, 'list-count')).toBe('131 of 131 shown')
    await context.close()
  }, 60_000)

  it('cancels everything a filter matches on the server, every page, after showing the count', async () => {
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes?status=pending&type=con_many`)
    await waitFor(async () => (await count(page, 'pending')) === '131', 10_000, 'the pending count')
    await page.getByTestId('select-all').check()
    await page.getByTestId('bulk-cancel').click()
    await page.getByTestId('confirm-dialog').waitFor()
    expect(await page.locator('#confirm-text').textContent()).toContain('Cancel 131 processes matching status pending, type con_many')
    await page.getByTestId('confirm-yes').click()
    await waitFor(async () => (await count(page, 'pending')) === '0' && (await rows(page).count()) === 0, 15_000, 'every page cancelled')
    expect(await page.getByTestId('select-all').isChecked()).toBe(false)
    await page.getByTestId('tab-cancelled').click()
    await waitFor(async () => (await count(page, 'cancelled')) === '131', 10_000, 'the cancelled count')
    await context.close()
  }, 60_000)

  it('discards every result under review that a filter matches', async () => {
    for (let i = 0; i < 2; i++) {
      await rest.create('con_review')
      await frame(await claim('con_review'), { op: 'complete', review: true, result_summary: { matches: i } })
    }
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes?status=waiting_review&type=con_review`)
    await waitFor(async () => (await rows(page).count()) === 2 && (await count(page, 'waiting_review')) === '2', 10_000, 'two under review')
    await page.getByTestId('select-all').check()
    await page.getByTestId('bulk-discard').click()
    await page.getByTestId('confirm-dialog').waitFor()
    expect(await page.locator('#confirm-text').textContent()).toContain('Discard 2 processes matching status waiting_review, type con_review')
    await page.getByTestId('confirm-yes').click()
    await waitFor(async () => (await rows(page).count()) === 0 && (await count(page, 'waiting_review')) === '0', 10_000, 'both discarded')
    await waitFor(async () => (await count(page, 'cancelled')) === '2', 10_000, 'both cancelled')
    await context.close()
  }, 60_000)

  it('clears an error banner on the next view, and once the server answers again', async () => {
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes/999999`)
    await page.getByTestId('not-found').waitFor()
    await page.getByTestId('nav-workers').click()
    await page.locator('tr[data-worker="console-worker"]').waitFor()
    expect(await page.getByTestId('error-banner').isVisible()).toBe(false)
    await page.getByTestId('nav-charts').click()
    await page.getByTestId('chart-throughput').locator('svg').waitFor()
    expect(await page.getByTestId('error-banner').isVisible()).toBe(false)

    // The network goes away: the next load says so; back, with the badge live, the banner goes.
    await page.getByTestId('nav-processes').click()
    await rows(page).first().waitFor()
    await context.setOffline(true)
    await page.getByTestId('tab-failed').click()
    await page.getByTestId('error-banner').waitFor()
    expect(await text(page, 'error-banner')).toContain('Failed to fetch')
    await context.setOffline(false)
    await waitFor(
      async () => (await page.getByTestId('connection').textContent()) === 'live' && !(await page.getByTestId('error-banner').isVisible()),
      20_000,
      'live again, and no banner',
    )
    await context.close()
  }, 60_000)

  it('shows run_at, priority and attempts "n of m", marks a delayed process, and runs it now', async () => {
    const later = await post('/processes', { type: 'con_later', delay_ms: 3_600_000, priority: 7, max_attempts: 3 })
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes?type=con_later`)
    const row = page.locator(`tr[data-id="${later.id}"]`)
    await row.waitFor()
    expect(await row.getByTestId('status').textContent()).toBe('scheduled')
    expect(await row.getByTestId('status').getAttribute('data-delayed')).not.toBeNull()
    await row.getByTestId('process-link').click()
    const detail = page.getByTestId('process-detail')
    await detail.getByTestId('run-at').waitFor()
    expect(await detail.getByTestId('run-at').textContent()).toContain('(in 59m')
    expect(await detail.getByTestId('priority').textContent()).toBe('7')
    expect(await detail.getByTestId('attempts').textContent()).toBe('0 of 3')
    expect(await detail.getByTestId('status').textContent()).toBe('scheduled')
    await screenshots(page, 'detail-scheduled')
    await detail.getByTestId('run-now').click()
    await waitFor(async () => (await detail.getByTestId('status').textContent()) === 'pending', 10_000, 'due now')
    expect(Date.parse((await rest.get(later.id)).run_at)).toBeLessThanOrEqual(Date.now())
    expect(await detail.getByTestId('run-now').count()).toBe(0)
    await context.close()
  }, 60_000)

  it('lists the scheduled, retrying and dead views, and keeps them live', async () => {
    const scheduled = await post('/processes', { type: 'con_views', delay_ms: 3_600_000 })
    await post('/processes', { type: 'con_views', max_attempts: 3 })
    const retried = await claim('con_views')
    await frame(retried, { op: 'fail', error: 'first try failed' })
    await post('/processes', { type: 'con_views', max_attempts: 1 })
    const dead = await claim('con_views')
    await frame(dead, { op: 'fail', error: 'no tries left' })
    const { context, page } = await open()
    const ids = async () => (await rows(page).evaluateAll((all) => all.map((r) => Number((r as HTMLElement).dataset.id)))) as number[]
    await page.goto(`${server.url}/#/processes?view=dead&type=con_views`)
    await waitFor(async () => (await ids()).join() === String(dead.id), 10_000, 'the dead view')
    await page.goto(`${server.url}/#/processes?view=retrying&type=con_views`)
    await waitFor(async () => (await ids()).join() === String(retried.id), 10_000, 'the retrying view')
    await page.goto(`${server.url}/#/processes?view=scheduled&type=con_views`)
    await waitFor(async () => (await ids()).includes(scheduled.id), 10_000, 'the scheduled view')
    expect(await ids()).not.toContain(dead.id)
    // Live: a new delayed process joins the view; one that is not delayed does not.
    const plain = await rest.create('con_views')
    const delayed = await post('/processes', { type: 'con_views', delay_ms: 600_000 })
    await waitFor(async () => (await ids())[0] === delayed.id, 10_000, 'the new delayed process on top')
    expect(await ids()).not.toContain(plain.id)
    // One that comes due leaves the view, though no change is sent for it.
    const soon = await post('/processes', { type: 'con_views', delay_ms: 1500 })
    await waitFor(async () => (await ids()).includes(soon.id), 10_000, 'the soon-due process in the view')
    await waitFor(async () => !(await ids()).includes(soon.id), 15_000, 'the due process out of the view')
    await screenshots(page, 'scheduled')
    await context.close()
  }, 60_000)

  it('searches messages, errors and metadata from the search box', async () => {
    const lisbon = await post('/processes', { type: 'con_search', metadata: { store: 'Lisbon Baixa' } })
    await post('/processes', { type: 'con_search', metadata: { store: 'Porto Ribeira' } })
    const { context, page } = await open()
    await page.getByTestId('search-q').fill('lisbon baixa')
    await page.getByTestId('search-q').press('Enter')
    await waitFor(async () => page.url().includes('q=lisbon+baixa'), 5000, 'the query in the URL')
    await waitFor(async () => (await rows(page).count()) === 1, 10_000, 'one match')
    expect(await rows(page).first().getAttribute('data-id')).toBe(String(lisbon.id))
    await context.close()
  }, 60_000)

  it('shows the error and the stack of a failed attempt', async () => {
    await rest.create('con_stack')
    const p = await claim('con_stack')
    const stack = 'Error: row 12 is not CSV\n    at parseRow (import.ts:12:7)\n    at run (import.ts:40:3)'
    await frame(p, { op: 'fail', error: 'row 12 is not CSV', stack })
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes/${p.id}`)
    const detail = page.getByTestId('process-detail')
    await detail.getByTestId('error').waitFor()
    expect(await detail.getByTestId('error').textContent()).toBe('row 12 is not CSV')
    await page.getByTestId('error-stack').first().locator('summary').click()
    expect(await page.getByTestId('error-stack').first().textContent()).toContain('at parseRow (import.ts:12:7)')
    expect(await detail.getByTestId('attempts').textContent()).toBe('1 of 1 (none left)')
    await screenshots(page, 'detail-failed')
    await context.close()
  }, 60_000)

  it('keeps the workers page live over the workspace stream', async () => {
    await rest.create('con_lease')
    const { context, page } = await open()
    await page.getByTestId('nav-workers').click()
    const row = page.locator('tr[data-worker="console-worker"]')
    await row.waitFor()
    // Within a few seconds of the claim: sooner than the page's 10-second refresh.
    const leased = await claim('con_lease')
    await waitFor(async () => ((await row.textContent()) ?? '').includes(`#${leased.id}`), 4000, 'the new lease, live')
    await frame(leased, { op: 'complete' })
    await context.close()
  }, 60_000)

  it('keeps the queues page live over the workspace stream', async () => {
    const { context, page } = await open()
    await page.getByTestId('nav-queues').click()
    await page.getByTestId('queue-table').waitFor()
    const row = page.locator('tr[data-testid="queue-row"][data-type="con_queue"]')
    expect(await row.count()).toBe(0)
    await rest.create('con_queue')
    await rest.create('con_queue')
    await waitFor(async () => (await row.count()) === 1 && ((await row.locator('td').nth(1).textContent()) ?? '') === '2', 10_000, 'the new queue, live')
    await context.close()
  }, 60_000)

  it('dates the charts’ time axis', async () => {
    const { context, page } = await open()
    await page.getByTestId('nav-charts').click()
    await page.getByTestId('chart-window').selectOption('7d')
    const labels = page.getByTestId('chart-throughput').getByTestId('x-label')
    // Every tick of the 7-day axis carries its date (the 24-hour chart drawn first may still be there).
    const dated = /^[A-Za-z]{3,} \d{1,2},? \d{1,2}:\d{2}/
    await waitFor(
      async () => {
        const all = await labels.allTextContents()
        return all.length >= 3 && all.every((label) => dated.test(label))
      },
      10_000,
      'dated ticks along the 7-day axis',
    )
    await page.getByTestId('chart-window').selectOption('1h')
    // An hour's axis shows times only, unless it spans midnight (then its ticks carry the dates too).
    const now = new Date()
    const minutesIntoDay = now.getHours() * 60 + now.getMinutes()
    const nearMidnight = minutesIntoDay < 75 || minutesIntoDay > 24 * 60 - 5
    const hourLabel = nearMidnight ? /^(?:[A-Za-z]{3,} \d{1,2},? )?\d{1,2}:\d{2}/ : /^\d{1,2}:\d{2}/
    await waitFor(async () => hourLabel.test((await labels.first().textContent()) ?? ''), 10_000, 'times only within an hour')
    expect((await page.getByTestId('chart-throughput').getByTestId('y-label').count()) >= 2).toBe(true)
    await context.close()
  }, 60_000)

  it('moves with the keyboard: j/k or arrows, Enter to open, Esc back, / to search, ? for help', async () => {
    const { context, page } = await open()
    await page.goto(`${server.url}/#/processes?type=con_many`)
    await waitFor(async () => (await rows(page).count()) > 3, 10_000, 'rows to move in')
    await page.locator('body').click({ position: { x: 5, y: 300 } })
    await page.keyboard.press('j')
    await page.keyboard.press('j')
    await page.keyboard.press('ArrowDown')
    await page.keyboard.press('k')
    const second = await rows(page).nth(1).getAttribute('data-id')
    expect(await page.locator('tr.cursor').getAttribute('data-id')).toBe(second)
    await page.keyboard.press('Enter')
    await waitFor(async () => page.url().endsWith(`#/processes/${second}`), 5000, 'the detail by Enter')
    await page.getByTestId('process-detail').getByTestId('status').waitFor()
    await page.keyboard.press('Escape')
    await waitFor(async () => page.url().endsWith('#/processes?type=con_many'), 5000, 'back to the list by Esc')
    await page.keyboard.press('/')
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('search-q')
    await page.keyboard.press('Escape')
    await page.keyboard.press('?')
    await page.getByTestId('help-dialog').waitFor()
    expect(await text(page, 'help-keys')).toContain('open the process under the cursor')
    await screenshots(page, 'help')
    await page.keyboard.press('Escape')
    await context.close()
  }, 60_000)

  it('renders the sign-in page in light and dark', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
    const page = await context.newPage()
    await page.goto(server.url)
    await page.getByTestId('token-input').waitFor()
    // Dark mode follows prefers-color-scheme: the page's background changes with it.
    const background = () => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor)
    await page.emulateMedia({ colorScheme: 'light' })
    const light = await background()
    await page.emulateMedia({ colorScheme: 'dark' })
    expect(await background()).not.toBe(light)
    await screenshots(page, 'sign-in')
    await context.close()
  }, 30_000)
})
