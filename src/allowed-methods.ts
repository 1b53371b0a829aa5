// What a known path answers to, for `405 method_not_allowed` with `Allow` instead of "No such route" when only
// the method is wrong (`DELETE /processes/1`, `GET /processes/1/cancel`).

interface RouteLike {
  method: string
  path: string
}

/**
 * From the app's routes: path → the template of a route it matches (`/processes/:id/cancel`), or null. What a
 * request refused before routing (413) is counted and audited under, never its raw path.
 */
export function routeTemplates(routes: readonly RouteLike[]): (pathname: string) => string | null {
  const table = routes
    .filter((route) => route.method !== 'ALL' && !route.path.includes('*'))
    .map((route) => ({ path: route.path, segments: route.path.split('/') }))
  return (pathname) => {
    const segments = pathname.split('/')
    for (const route of table) {
      if (route.segments.length !== segments.length) continue
      if (route.segments.every((segment, i) => (segment.startsWith(':') ? segments[i] !== '' : segment === segments[i]))) return route.path
    }
    return null
  }
}

/** From the app's routes: path → the methods it takes (`HEAD` with every `GET`, as the handler answers it). */
export function allowedMethods(routes: readonly RouteLike[]): (pathname: string) => string[] {
  const table = routes
    .filter((route) => route.method !== 'ALL' && !route.path.includes('*'))
    .map((route) => ({ method: route.method, segments: route.path.split('/') }))
  return (pathname) => {
    const segments = pathname.split('/')
    const methods = new Set<string>()
    for (const route of table) {
      if (route.segments.length !== segments.length) continue
      if (route.segments.every((segment, i) => (segment.startsWith(':') ? segments[i] !== '' : segment === segments[i]))) {
        methods.add(route.method)
        if (route.method === 'GET') methods.add('HEAD')
      }
    }
    return [...methods].sort()
  }
}
