// The live dashboard in a real headless Chromium (Debian's chromium, driven by playwright-core), against a
// real server and the real demo worker: bars move without a reload, and a cancel from the page reaches the worker.
import { afterAll, describe, expect, it } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import { BUN, ROOT, createTenant, listeningServer, testDatabase, waitFor, workerToken } from '../helpers'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = join(ROOT, 'tests', 'artifacts')

describe.skipIf(!existsSync(CHROMIUM))('dashboard in Chromium', async () => {
  const { db } = await testDatabase()
  const server = await listeningServer({ PROGRESS_FLUSH_MS: '50' }, db)
  const tenant = await createTenant(db.sql, 'Acme imports')
  const wtoken = await workerToken(db.sql)

  let workerLog = ''
  const demo = Bun.spawn([BUN, 'packages/client/src/demo-worker.ts'], {
    cwd: ROOT,
    env: { ...process.env, PROCESSES_URL: server.url, WORKER_TOKEN: wtoken },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  void (async () => {
    for await (const chunk of demo.stdout as ReadableStream<Uint8Array>) workerLog += new TextDecoder().decode(chunk)
  })()
  afterAll(() => demo.kill('SIGKILL'))

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  afterAll(() => browser.close())

  it('signs in with a pasted token and shows a process move to 100% and completed without a reload', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    await page.goto(server.url)
    await page.getByTestId('token-input').fill(tenant.token)
    await page.getByTestId('sign-in').click()
    await page.getByTestId('workspace-select').waitFor()
    expect(await page.getByTestId('workspace-select').textContent()).toContain('Acme imports')

    await page.getByTestId('create-type').fill('csv_import')
    await page.getByTestId('create-metadata').fill('{"rows": 60}')
    await page.getByTestId('create-submit').click()
    const row = page.getByTestId('process-row').first()
    await row.waitFor()
    const id = Number(await row.getAttribute('data-id'))
    // Live: the bar passes through an intermediate value, then reaches 100 with the status completed.
    await waitFor(async () => {
      const now = Number(await row.getByTestId('progress-bar').getAttribute('aria-valuenow'))
      return now > 0 && now < 100
    }, 15_000, 'an intermediate progress value')
    await waitFor(async () => (await row.getByTestId('status').textContent())?.trim() === 'completed', 20_000, 'completed in the row')
    expect(await row.getByTestId('progress-bar').getAttribute('aria-valuenow')).toBe('100')
    expect(workerLog).toContain(`#${id} completed`)

    mkdirSync(ARTIFACTS, { recursive: true })
    await row.click()
    await page.getByTestId('event-log').waitFor()
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-desktop.png') })
    await page.setViewportSize({ width: 390, height: 844 })
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth)
    expect(overflow).toBe(false)
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-phone.png') })
    await page.close()
  }, 60_000)

  it('cancels a running process from the page, and the worker is told', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
    await context.addCookies([{ name: 'ps_session', value: tenant.token, url: server.url }])
    const page = await context.newPage()
    await page.goto(server.url)
    await page.getByTestId('create-type').fill('csv_import')
    await page.getByTestId('create-metadata').fill('{"rows": 2000}')
    await page.getByTestId('create-submit').click()
    const row = page.getByTestId('process-row').first()
    await waitFor(async () => (await row.getByTestId('status').textContent())?.trim() === 'running', 15_000, 'running')
    const id = Number(await row.getAttribute('data-id'))
    await row.click()
    await page.getByTestId('process-detail').getByTestId('cancel').click()
    await waitFor(async () => (await row.getByTestId('status').textContent())?.trim() === 'cancelled', 10_000, 'cancelled in the row')
    await waitFor(() => workerLog.includes(`#${id} cancelled`), 10_000, 'the demo worker to report the cancel')
    await context.close()
  }, 60_000)
})
