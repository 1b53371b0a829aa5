// The console (packages/dashboard): its page, stylesheet and script, built by the package's dashboardAssets()
// run as a Bun macro, so they are bundled once when this file is loaded or compiled and the executable serves
// them with no file beside it.
import { Elysia } from 'elysia'
import { dashboardAssets } from '@processes/dashboard/build' with { type: 'macro' }

const assets = dashboardAssets()

// No inline script or style may run, nothing may frame the page (clickjacking), nothing is sniffed.
export const DASHBOARD_SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
}

const file = (body: string, type: string) => () =>
  new Response(body, { headers: { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-cache', ...DASHBOARD_SECURITY_HEADERS } })

export function dashboard() {
  return new Elysia()
    .get('/', file(assets.html, 'text/html'), { detail: { hide: true } })
    .get('/app.js', file(assets.script, 'text/javascript'), { detail: { hide: true } })
    .get('/style.css', file(assets.css, 'text/css'), { detail: { hide: true } })
}
