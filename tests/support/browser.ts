// The browser suites' common ground: Debian's Chromium driven by playwright-core (which never downloads a
// browser of its own), a signed-in page, and screenshots of a view in light and dark for review.
// Without Chromium a suite is skipped with a message on a developer machine, and FAILS where
// DASHBOARD_BROWSER_REQUIRED=1 (CI's .ci/run sets it), so a CI run can never pass by skipping it.
import { describe, expect, it } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import { ROOT } from './helpers'

/** Debian's Chromium; CHROMIUM_PATH names another build. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const SCREENSHOTS = join(ROOT, 'tests/artifacts/screenshots')

/** A describe that needs Chromium: see the file's comment for what happens without it. */
export function describeInBrowser(name: string, body: () => void | Promise<void>) {
  if (existsSync(CHROMIUM)) return describe(name, body)
  if (process.env.DASHBOARD_BROWSER_REQUIRED === '1')
    return describe(name, () => {
      it('has Chromium to run in', () => {
        throw new Error(`${CHROMIUM} is missing and DASHBOARD_BROWSER_REQUIRED=1: install it (apt-get install chromium) to run "${name}"`)
      })
    })
  console.warn(`skipping "${name}": no Chromium at ${CHROMIUM} (apt-get install chromium; CI sets DASHBOARD_BROWSER_REQUIRED=1 and fails instead)`)
  return describe.skip(name, () => {
    it('runs in Chromium', () => {})
  })
}

export function launchBrowser(): Promise<Browser> {
  mkdirSync(SCREENSHOTS, { recursive: true })
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

/** A new context signed in through the page's form (POST /auth/session), on the processes view. */
export async function signedIn(
  browser: Browser,
  url: string,
  token: string,
  workspace: string,
  viewport = { width: 1280, height: 800 },
): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport })
  const page = await context.newPage()
  await page.goto(url)
  await page.getByTestId('token-input').fill(token)
  await page.getByTestId('sign-in').click()
  await page.getByTestId('workspace-select').waitFor()
  expect(await page.getByTestId('workspace-select').textContent()).toContain(workspace)
  return { context, page }
}

/** `<name>-light.png` and `<name>-dark.png` (prefers-color-scheme) of the page as it is. */
export async function screenshots(page: Page, name: string) {
  for (const colorScheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme })
    await page.screenshot({ path: join(SCREENSHOTS, `${name}-${colorScheme}.png`), fullPage: true })
  }
  await page.emulateMedia({ colorScheme: 'light' })
}
