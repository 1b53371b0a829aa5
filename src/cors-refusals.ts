// Cross-origin requests from an origin CORS_ORIGINS does not list. A browser shows the page only a network
// error, and the server used to say nothing (an OPTIONS preflight was an ordinary 404): the operator now gets
// a warning naming the origin and CORS_ORIGINS, and a preflight a 403 saying why.
import { errorResponse } from './errors'
import type { Logger } from './ops/log'

/** Once per origin per minute: a page retrying every second must not flood the log. */
const REPEAT_MS = 60_000
const MAX_TRACKED = 1000

export class CorsRefusals {
  private readonly lastLogged = new Map<string, number>()

  constructor(
    private readonly log: Logger,
    private readonly configured: string,
    /** The route template a path matches (a preflight is refused before routing), else null: logged as `unmatched`. */
    private readonly templateOf: (pathname: string) => string | null = () => null,
  ) {}

  /**
   * True when `origin` is another origin than the one the request was sent to: its host is neither the `Host`
   * nor the `X-Forwarded-Host` (a same-origin page's POST carries an `Origin` too).
   */
  static isForeign(origin: string, request: Request): boolean {
    const scheme = origin.indexOf('://')
    const host = scheme === -1 ? origin : origin.slice(scheme + 3)
    return host !== request.headers.get('host') && host !== request.headers.get('x-forwarded-host')
  }

  /** Logs the refusal (rate-limited); a preflight is answered here, 403 naming CORS_ORIGINS. */
  refuse(origin: string, request: Request, route: string | null): Response | null {
    const now = Date.now()
    const last = this.lastLogged.get(origin)
    if (last === undefined || now - last >= REPEAT_MS) {
      if (this.lastLogged.size >= MAX_TRACKED) this.lastLogged.clear()
      this.lastLogged.set(origin, now)
      this.log.warn('cross-origin request refused', {
        origin: origin.slice(0, 256),
        method: request.method.slice(0, 16),
        route: route ?? this.templateOf(new URL(request.url).pathname) ?? 'unmatched',
        CORS_ORIGINS: this.configured,
        hint: `browsers on ${origin} cannot read this server's answers: add ${origin} to CORS_ORIGINS (comma-separated) to allow it`,
      })
    }
    if (request.method !== 'OPTIONS' || !request.headers.has('access-control-request-method')) return null
    const listed = this.configured.trim() === '' ? 'CORS_ORIGINS is empty' : `CORS_ORIGINS is ${JSON.stringify(this.configured)}`
    return errorResponse(403, 'forbidden', `Origin ${origin} is not allowed cross-origin (${listed})`, undefined, { vary: 'Origin' })
  }
}
