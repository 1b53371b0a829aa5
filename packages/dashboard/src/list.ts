// The processes list: cursor-paged (`before`, from the Link header) under the route's filter, newest first,
// kept live by the workspace stream, with "n of m" beside "Show more" (m: the tab's count).
import { apiPage } from './api'
import { showError } from './banner'
import { selection, updateBulk } from './selection'
import { $, h, progressBar } from './dom'
import { ago, duration, isDelayed, relative } from './format'
import { filterParams, type ListRoute, listRoute, matches } from './router'
import { canChange, session } from './state'
import { countHooks, refreshCountsSoon, tabCount } from './tabs'
import type { Summary } from './types'

export const PAGE_SIZE = 100

/** What the list holds: its rows by id, and where the next page starts (null: everything is loaded). */
export const list = {
  rows: new Map<number, Summary>(),
  before: null as number | null,
  key: '',
  loading: false,
}

const routeKey = (route: ListRoute) => `${session.workspaceId}?${filterParams(route)}`

/** The first page under the current filter (again: after a reconnect, or a bulk action). */
export async function loadList() {
  const route = listRoute()
  if (!route) return
  const key = routeKey(route)
  try {
    const page = await fetchPage(route, null)
    if (routeKey(listRoute() ?? {}) !== key) return
    list.key = key
    list.rows = new Map(page.items.map((p) => [p.id, p]))
    list.before = page.before
    $('process-rows').replaceChildren(...page.items.map(processRow))
    afterChange()
  } catch (e) {
    showError(e)
  }
}

export async function loadMore() {
  const route = listRoute()
  if (!route || list.before === null || list.loading) return
  const key = list.key
  list.loading = true
  try {
    const page = await fetchPage(route, list.before)
    if (list.key !== key) return
    const fresh = page.items.filter((p) => !list.rows.has(p.id))
    for (const p of fresh) list.rows.set(p.id, p)
    list.before = page.before
    $('process-rows').append(...fresh.map(processRow))
    afterChange()
  } catch (e) {
    showError(e)
  } finally {
    list.loading = false
  }
}

function fetchPage(route: ListRoute, before: number | null) {
  const params = filterParams(route)
  params.set('workspace_id', String(session.workspaceId))
  params.set('limit', String(PAGE_SIZE))
  if (before !== null) params.set('before', String(before))
  return apiPage<Summary>(`/processes?${params}`)
}

/** A change from the workspace stream: placed where the loaded pages reach, left to a later page otherwise. */
export function applyUpdate(p: Summary) {
  const known = list.rows.get(p.id)
  if (!known || known.status !== p.status) refreshCountsSoon()
  const route = listRoute()
  if (!route || list.key !== routeKey(route)) return
  const row = document.querySelector<HTMLTableRowElement>(`#process-rows tr[data-id="${p.id}"]`)
  const oldest = Math.min(...list.rows.keys())
  if (!matches(p, route) || (!known && list.before !== null && p.id < oldest)) {
    if (known) {
      list.rows.delete(p.id)
      selection.ids.delete(p.id)
      row?.remove()
      afterChange()
    }
    return
  }
  list.rows.set(p.id, { ...known, ...p })
  const fresh = processRow(list.rows.get(p.id)!)
  if (row) {
    fresh.classList.toggle('cursor', row.classList.contains('cursor'))
    row.replaceWith(fresh)
  } else {
    const body = $('process-rows')
    // Newest first: a new id goes above the first row with a smaller one.
    const after = [...body.children].find((r) => Number((r as HTMLElement).dataset.id) < p.id)
    body.insertBefore(fresh, after ?? null)
  }
  afterChange()
}

countHooks.changed = () => afterChange()

/** The footer: how many are shown of how many the tab counts, and whether more can be loaded. */
export function afterChange() {
  const route = listRoute()
  const shown = list.rows.size
  // A search reads a bounded number of rows per page: a page may be empty and still have older ones after it.
  $('empty-list').hidden = shown > 0
  $('empty-list').textContent = list.before !== null ? 'None in the rows read so far: "Show more" searches older ones.' : 'No processes match.'
  const total = route ? tabCount(route) : null
  const more = list.before !== null
  const of = total !== null && !route?.q ? ` of ${Math.max(total, shown)}` : more ? '+' : ''
  $('list-count').textContent = `${shown}${of} shown`
  $<HTMLButtonElement>('list-more').hidden = !more
  updateBulk()
}

export function processRow(p: Summary): HTMLTableRowElement {
  const delayed = isDelayed(p)
  const check = canChange()
    ? h('input', { type: 'checkbox', class: 'select', 'data-testid': 'select', 'aria-label': `Select #${p.id}`, checked: selection.ids.has(p.id) })
    : null
  check?.addEventListener('change', () => {
    if ((check as HTMLInputElement).checked) selection.ids.add(p.id)
    else selection.ids.delete(p.id)
    updateBulk()
  })
  const badge = delayed
    ? h('span', { class: 'badge scheduled', 'data-testid': 'status', 'data-delayed': '', title: `pending, runs ${relative(p.run_at!)}`, text: 'scheduled' })
    : h('span', { class: `badge ${p.status}`, 'data-testid': 'status', text: p.status })
  const note = delayed ? `runs ${relative(p.run_at!)}${p.message ? ` · ${p.message}` : ''}` : (p.error ?? p.message ?? '')
  return h(
    'tr',
    { 'data-id': p.id, 'data-status': p.status, 'data-testid': 'process-row', class: delayed ? 'delayed' : undefined },
    h('td', { class: 'check' }, check),
    h('td', { class: 'num' }, h('a', { href: `#/processes/${p.id}`, 'data-testid': 'process-link', text: `#${p.id}` })),
    h('td', { text: p.type }),
    h('td', {}, badge),
    h('td', { class: 'bar-col' }, progressBar(p.progress, p.status), h('span', { class: 'pct', text: `${p.progress}%` })),
    h('td', { class: 'num', title: 'attempts of max_attempts', text: `${p.attempts}/${p.max_attempts}` }),
    h('td', { class: 'num age', 'data-created': p.created_at, text: ago(p.created_at) }),
    h('td', { class: 'num duration', text: duration(p) }),
    h('td', { class: 'mono', text: p.worker_id ?? '' }),
    h('td', { class: 'message', title: note, text: note }),
  )
}

export function tickAges() {
  for (const cell of document.querySelectorAll<HTMLElement>('td.age')) cell.textContent = ago(cell.dataset.created)
  // A delayed process that came due: no longer scheduled (and out of the scheduled view), with no change sent.
  for (const row of document.querySelectorAll<HTMLElement>('#process-rows tr.delayed')) {
    const p = list.rows.get(Number(row.dataset.id))
    if (p && !isDelayed(p)) applyUpdate(p)
  }
  for (const row of document.querySelectorAll<HTMLElement>('tr[data-testid="process-row"]')) {
    const p = list.rows.get(Number(row.dataset.id))
    const cell = row.querySelector('td.duration')
    if (p && cell && p.started_at && !p.finished_at) cell.textContent = duration(p)
  }
}
