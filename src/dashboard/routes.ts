// The dashboard: a static page, its stylesheet and its script (browser.ts, bundled by a macro: see bundle.ts),
// embedded so the compiled executable serves them too.
import { Elysia } from 'elysia'
import { dashboardScript } from './bundle' with { type: 'macro' }
import page from './index.html' with { type: 'text' }
import styles from './style.css' with { type: 'text' }

const script: string = dashboardScript()

// Bun types an .html import as a bundle; `with { type: 'text' }` makes it the file's text.
// No inline script or style may run, nothing may frame the page (clickjacking), nothing is sniffed.
export const DASHBOARD_SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
}

const file = (body: unknown, type: string) => () =>
  new Response(body as string, { headers: { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-cache', ...DASHBOARD_SECURITY_HEADERS } })

export function dashboard() {
  return new Elysia()
    .get('/', file(page, 'text/html'), { detail: { hide: true } })
    .get('/app.js', file(script, 'text/javascript'), { detail: { hide: true } })
    .get('/style.css', file(styles, 'text/css'), { detail: { hide: true } })
}
