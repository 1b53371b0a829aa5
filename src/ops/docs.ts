// The API docs at /openapi: Swagger UI served from this server (the swagger-ui-dist package, embedded as text so
// the compiled executable carries it), reading /openapi/json. Nothing is fetched from another host: no CDN, and
// Swagger UI's online validator is turned off.
import type { TSchema } from '@sinclair/typebox'
import { Elysia } from 'elysia'
import bundle from 'swagger-ui-dist/swagger-ui-bundle.js' with { type: 'text' }
import styles from 'swagger-ui-dist/swagger-ui.css' with { type: 'text' }

/** A route with no auth: the document shows no lock on it (overrides the document-wide bearer). */
export const PUBLIC: { security: [] } = { security: [] }

/** OpenAPI responses from TypeBox schemas, documented only (not validated at run time, as in processes/index.ts). */
export function documented(map: Record<number, [string, TSchema | null, string?]>) {
  return Object.fromEntries(
    Object.entries(map).map(([status, [description, schema, type = 'application/json']]) => [
      status,
      schema ? { description, content: { [type]: { schema } } } : { description },
    ]),
  )
}

const PAGE = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>Processes API</title>
    <link rel="icon" href="data:," />
    <link rel="stylesheet" href="/openapi/assets/swagger-ui.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/openapi/assets/swagger-ui-bundle.js"></script>
    <script src="/openapi/assets/init.js"></script>
  </body>
</html>
`

// A file of its own rather than an inline script, so a strict Content-Security-Policy (script-src 'self') holds.
const INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi/json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  withCredentials: true,
})
`

/**
 * The docs page may run only its own scripts and be framed by no one (clickjacking). Swagger UI
 * sets style attributes and draws icons as data: images, so styles allow inline and images data:.
 */
export const DOCS_SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
}

const asset = (body: string, type: string, cache: string) => () =>
  new Response(body, { headers: { 'content-type': `${type}; charset=utf-8`, 'cache-control': cache, ...DOCS_SECURITY_HEADERS } })

export function docs() {
  const hidden = { detail: { hide: true } }
  return (
    new Elysia({ name: 'docs' })
      .get('/openapi', asset(PAGE, 'text/html', 'no-cache'), hidden)
      .get('/openapi/assets/init.js', asset(INIT, 'text/javascript', 'no-cache'), hidden)
      // The package's version is in the lock file; a day's cache is plenty and survives an upgrade's restart.
      .get('/openapi/assets/swagger-ui-bundle.js', asset(bundle, 'text/javascript', 'public, max-age=86400'), hidden)
      .get('/openapi/assets/swagger-ui.css', asset(styles, 'text/css', 'public, max-age=86400'), hidden)
  )
}
