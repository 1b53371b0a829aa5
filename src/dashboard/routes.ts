// The dashboard: a static page, its stylesheet and its script (app.ts, bundled by a macro: see bundle.ts),
// embedded so the compiled executable serves them too.
import { Elysia } from 'elysia'
import { dashboardScript } from './bundle' with { type: 'macro' }
import page from './index.html' with { type: 'text' }
import styles from './style.css' with { type: 'text' }

const script: string = dashboardScript()

// Bun types an .html import as a bundle; `with { type: 'text' }` makes it the file's text.
const file = (body: unknown, type: string) => () =>
  new Response(body as string, { headers: { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-cache' } })

export function dashboard() {
  return new Elysia()
    .get('/', file(page, 'text/html'), { detail: { hide: true } })
    .get('/app.js', file(script, 'text/javascript'), { detail: { hide: true } })
    .get('/style.css', file(styles, 'text/css'), { detail: { hide: true } })
}
