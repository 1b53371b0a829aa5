// Routes live in the hash, so every view has a URL: #/processes?status=failed&type=csv_import&q=stores,
// #/processes?view=dead, #/processes/42, #/workers, #/charts, #/queues.
import { PROCESS_STATUSES, PROCESS_VIEWS } from '@processes/client'
import type { ProcessStatus, ProcessView, Summary } from './types'

/** The list's views beyond a status: delayed, waiting for a retry, failed for good (the server's `view=`). */
export const LIST_VIEWS = PROCESS_VIEWS
export type ListView = ProcessView

export interface ListRoute {
  status?: ProcessStatus
  listView?: ListView
  type?: string
  q?: string
}

export type Route = ({ view: 'processes' } & ListRoute) | { view: 'detail'; id: number } | { view: 'workers' | 'charts' | 'queues' }

export function parseRoute(): Route {
  const [path = '', query = ''] = location.hash.replace(/^#/, '').split('?')
  const params = new URLSearchParams(query)
  const detail = /^\/processes\/(\d+)$/.exec(path)
  if (detail) return { view: 'detail', id: Number(detail[1]) }
  if (path === '/workers' || path === '/charts' || path === '/queues') return { view: path.slice(1) as 'workers' | 'charts' | 'queues' }
  const status = params.get('status') ?? ''
  const listView = params.get('view') ?? ''
  return {
    view: 'processes',
    status: (PROCESS_STATUSES as readonly string[]).includes(status) ? (status as ProcessStatus) : undefined,
    listView: (LIST_VIEWS as readonly string[]).includes(listView) ? (listView as ListView) : undefined,
    type: params.get('type') || undefined,
    q: params.get('q')?.trim() || undefined,
  }
}

export const listRoute = (): ListRoute | null => {
  const route = parseRoute()
  return route.view === 'processes' ? route : null
}

/** The filter as query parameters: the same for the list, the bulk action and the hash. */
export function filterParams(route: ListRoute): URLSearchParams {
  const params = new URLSearchParams()
  if (route.status) params.set('status', route.status)
  if (route.listView) params.set('view', route.listView)
  if (route.type) params.set('type', route.type)
  if (route.q) params.set('q', route.q)
  return params
}

export function listHash(route: ListRoute): string {
  const query = filterParams(route).toString()
  return `#/processes${query ? `?${query}` : ''}`
}

/**
 * Whether a process the stream sent belongs in the list as filtered. The server decides what a page holds;
 * this only places live changes (the view predicates are the server's: scheduled = pending with run_at ahead,
 * retrying = pending after a failed attempt, dead = failed with no attempt left).
 */
export function matches(p: Summary, route: ListRoute): boolean {
  if (route.status && p.status !== route.status) return false
  if (route.type && p.type !== route.type) return false
  if (route.listView === 'scheduled' && !(p.status === 'pending' && p.run_at && Date.parse(p.run_at) > Date.now())) return false
  if (route.listView === 'retrying' && !(p.status === 'pending' && p.attempts > 0)) return false
  if (route.listView === 'dead' && !(p.status === 'failed' && p.attempts >= p.max_attempts)) return false
  if (route.q) {
    const needle = route.q.toLowerCase()
    const text = [p.type, p.message, p.error, p.metadata ? JSON.stringify(p.metadata) : ''].join('\n').toLowerCase()
    if (!text.includes(needle)) return false
  }
  return true
}
