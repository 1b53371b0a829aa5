// The list's tabs: every status and the three views, each with its count from GET /processes/stats (the same
// predicates as the list's filters, so a tab's count is what paging through its list reaches).
import { PROCESS_STATUSES } from '@processes/client'
import { api } from './api'
import { showError } from './banner'
import { $, h } from './dom'
import { LIST_VIEWS, type ListRoute, listHash, listRoute } from './router'
import { wsQuery } from './state'
import type { ProcessStatus, Stats } from './types'

export const counts = { byStatus: [] as Stats['counts'], views: null as Stats['views'] | null }
/** Set by list.ts: its footer ("n of m shown") follows the counts. */
export const countHooks = { changed: () => {} }

let timer: ReturnType<typeof setTimeout> | null = null
/** A status changed somewhere: count again, at most once per 800 ms however many change. */
export function refreshCountsSoon() {
  if (timer) return
  timer = setTimeout(() => {
    timer = null
    void refreshCounts()
  }, 800)
}

export async function refreshCounts() {
  try {
    const stats = await api<Stats>(`/processes/stats?${wsQuery()}&buckets=false`)
    counts.byStatus = stats.counts
    counts.views = stats.views
    const route = listRoute()
    if (route) {
      renderTabs(route)
      countHooks.changed()
    }
  } catch (e) {
    showError(e)
  }
}

/** The count of a tab under the route's type filter; null where the server gives none (a view within one type). */
export function tabCount(route: ListRoute): number | null {
  if (route.listView) return route.type || !counts.views ? null : (counts.views[route.listView] ?? null)
  return counts.byStatus.filter((c) => (!route.status || c.status === route.status) && (!route.type || c.type === route.type)).reduce((n, c) => n + c.count, 0)
}

export function renderTabs(route: ListRoute) {
  const type = route.type
  const tab = (label: string, target: ListRoute, key: string) => {
    const active = target.status === route.status && target.listView === route.listView
    const n = tabCount(target)
    return h(
      'a',
      {
        href: listHash({ ...target, q: route.q }),
        role: 'tab',
        'aria-selected': String(active),
        class: `tab${active ? ' active' : ''}`,
        'data-testid': `tab-${key}`,
      },
      label,
      h('span', { class: 'count', 'data-testid': 'count', title: n === null ? 'no count for a view within one type' : undefined, text: n === null ? '·' : n }),
    )
  }
  const statuses: (ProcessStatus | undefined)[] = [undefined, ...PROCESS_STATUSES]
  $('status-tabs').replaceChildren(
    ...statuses.map((status) => tab((status ?? 'all').replace('_', ' '), { status, type }, status ?? 'all')),
    h('span', { class: 'tab-gap' }),
    ...LIST_VIEWS.map((listView) => tab(listView, { listView, type }, listView)),
  )
  const select = $<HTMLSelectElement>('type-filter')
  const types = [...new Set(counts.byStatus.map((c) => c.type))].sort()
  if (type && !types.includes(type)) types.push(type)
  select.replaceChildren(h('option', { value: '', text: 'all' }), ...types.map((t) => h('option', { value: t, text: t })))
  select.value = type ?? ''
  const search = $<HTMLInputElement>('search-q')
  if (document.activeElement !== search) search.value = route.q ?? ''
}
