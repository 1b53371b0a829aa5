// The dashboard, on the @processes/client package: a workspace's processes live over the workspace stream
// (monitorWorkspace), one process live (monitorProcess), the workers page, the charts, and the queues with the
// schedules' next runs. Routes are in the hash (#/processes?status=failed, #/processes/42, #/workers, #/charts,
// #/queues), so every view has a URL. Sign-in
// exchanges a pasted token for the HttpOnly ps_session cookie (POST /auth/session): the page never holds it.
// No inline script or style: styles are classes, widths set through the CSSOM.
import {
  PROCESS_STATUSES,
  monitorProcess,
  monitorWorkspace,
  type ConnectionState,
  type MonitorHandle,
  type Process,
  type ProcessStatus,
} from '@processes/client'
import type { QueueSummary } from '../queues/routes'
import type { Schedule } from '../schedules/model'
import type { WorkersPage } from '../workers/routes'

// ── Types of the extension routes this page reads ─────────────────────────────────────────────────────

interface Me {
  user: { id: number; email: string } | null
  workspaces: { id: number; name: string; role: string }[]
}
type Summary = Pick<Process, 'id' | 'type' | 'status' | 'progress' | 'created_at' | 'updated_at'> & Partial<Process>
interface Stats {
  counts: { type: string; status: ProcessStatus; count: number }[]
  bucket_seconds: number
  buckets: {
    start: string
    completed: number
    failed: number
    cancelled: number
    wait_p50_s: number | null
    wait_p95_s: number | null
    run_p50_s: number | null
    run_p95_s: number | null
  }[]
}
type Workers = WorkersPage
type Queue = typeof QueueSummary.static

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

// ── Small DOM helpers ─────────────────────────────────────────────────────────────────────────────────

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, string | number | boolean | undefined> = {},
  ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue
    if (key === 'text') el.textContent = String(value)
    else if (key === 'class') el.className = String(value)
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  for (const child of children) if (child !== null) el.append(child)
  return el
}

const SVG = 'http://www.w3.org/2000/svg'
function s(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag)
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value))
  if (text !== undefined) el.textContent = text
  return el
}

/** "4s", "12m", "3h", "2d": compact, for a dense table. */
function span(ms: number): string {
  const sec = Math.max(0, Math.round(ms / 1000))
  if (sec < 60) return `${sec}s`
  if (sec < 3600) return `${Math.floor(sec / 60)}m${sec % 60 ? ` ${sec % 60}s` : ''}`
  if (sec < 86_400) return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`
  return `${Math.floor(sec / 86_400)}d ${Math.floor((sec % 86_400) / 3600)}h`
}
const ago = (iso: string | null | undefined) => (iso ? span(Date.now() - Date.parse(iso)) : '—')
function duration(p: Summary): string {
  if (!p.started_at) return '—'
  const end = p.finished_at ? Date.parse(p.finished_at) : Date.now()
  return span(end - Date.parse(p.started_at))
}
const seconds = (v: number) => (v < 1 ? `${Math.round(v * 1000)}ms` : v < 120 ? `${v.toFixed(v < 10 ? 1 : 0)}s` : span(v * 1000))

// ── API ───────────────────────────────────────────────────────────────────────────────────────────────

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (init.body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) }, credentials: 'same-origin' })
  const text = await response.text()
  const body = text ? (JSON.parse(text) as unknown) : null
  if (!response.ok) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error
    if (response.status === 401 && !path.startsWith('/auth/')) showSignIn()
    throw new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? `HTTP ${response.status}`)
  }
  return body as T
}

// ── State ─────────────────────────────────────────────────────────────────────────────────────────────

const state = {
  me: null as Me | null,
  workspaceId: 0,
  role: 'viewer',
  rows: new Map<number, Summary>(),
  selected: new Set<number>(),
  counts: [] as Stats['counts'],
  stream: null as MonitorHandle | null,
  detail: null as MonitorHandle | null,
  timers: [] as ReturnType<typeof setInterval>[],
}
const canChange = () => state.role !== 'viewer'
const canAdmin = () => state.role === 'owner' || state.role === 'admin'
const wsQuery = () => `workspace_id=${state.workspaceId}`

interface Route {
  view: 'processes' | 'detail' | 'workers' | 'charts' | 'queues'
  id?: number
  status?: ProcessStatus
  type?: string
}

function parseRoute(): Route {
  const [path = '', query = ''] = location.hash.replace(/^#/, '').split('?')
  const params = new URLSearchParams(query)
  const detail = /^\/processes\/(\d+)$/.exec(path)
  if (detail) return { view: 'detail', id: Number(detail[1]) }
  if (path === '/workers') return { view: 'workers' }
  if (path === '/charts') return { view: 'charts' }
  if (path === '/queues') return { view: 'queues' }
  const status = params.get('status')
  return {
    view: 'processes',
    status: (PROCESS_STATUSES as readonly string[]).includes(status ?? '') ? (status as ProcessStatus) : undefined,
    type: params.get('type') || undefined,
  }
}

function listHash(route: Pick<Route, 'status' | 'type'>): string {
  const params = new URLSearchParams()
  if (route.status) params.set('status', route.status)
  if (route.type) params.set('type', route.type)
  const query = params.toString()
  return `#/processes${query ? `?${query}` : ''}`
}

// ── Errors and the session ────────────────────────────────────────────────────────────────────────────

function showError(error: unknown) {
  const message =
    error instanceof ApiError && error.status === 403
      ? `Not allowed: ${error.message} (your role in this workspace is ${state.role}; viewers can only look)`
      : error instanceof Error
        ? error.message
        : String(error)
  $('error-text').textContent = message
  $('error-banner').hidden = false
}

function showSignIn() {
  for (const id of ['processes-view', 'detail-view', 'workers-view', 'charts-view']) $(id).hidden = true
  $('nav').hidden = true
  $('session').hidden = true
  $('no-worker-warning').hidden = true
  $('sign-in-view').hidden = false
  state.stream?.stop()
  state.stream = null
  $('token-input').focus()
}

async function signIn(event: SubmitEvent) {
  event.preventDefault()
  const input = $<HTMLInputElement>('token-input')
  const error = $('sign-in-error')
  error.hidden = true
  try {
    await api('/auth/session', { method: 'POST', body: JSON.stringify({ token: input.value.trim() }) })
    input.value = ''
    await boot()
  } catch (e) {
    error.textContent =
      e instanceof ApiError && e.status === 401
        ? 'That token was not accepted (unknown, expired or revoked).'
        : e instanceof ApiError && e.status === 404
          ? 'This server has no sign-in endpoint (POST /auth/session).'
          : `Sign-in failed: ${(e as Error).message}`
    error.hidden = false
  }
}

async function signOut() {
  await api('/auth/session', { method: 'DELETE' }).catch(() => {})
  state.me = null
  showSignIn()
}

async function boot() {
  try {
    state.me = await api<Me>('/me')
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showSignIn()
    return showError(e)
  }
  const me = state.me
  $('sign-in-view').hidden = true
  $('nav').hidden = false
  $('session').hidden = false
  $('user-email').textContent = me.user?.email ?? ''
  const select = $<HTMLSelectElement>('workspace-select')
  select.replaceChildren(...me.workspaces.map((w) => h('option', { value: w.id, text: `${w.name} (${w.role})` })))
  const saved = Number(sessionStorage.getItem('workspace'))
  const workspace = me.workspaces.find((w) => w.id === saved) ?? me.workspaces[0]
  if (!workspace) return showError(new Error('You are not a member of any workspace.'))
  select.value = String(workspace.id)
  switchWorkspace(workspace.id)
}

function switchWorkspace(id: number) {
  state.workspaceId = id
  state.role = state.me?.workspaces.find((w) => w.id === id)?.role ?? 'viewer'
  sessionStorage.setItem('workspace', String(id))
  document.body.classList.toggle('read-only', !canChange())
  state.rows.clear()
  state.selected.clear()
  startStream()
  for (const timer of state.timers) clearInterval(timer)
  state.timers = [setInterval(() => void refreshWorkers(false), 10_000), setInterval(tickAges, 5000)]
  void refreshWorkers(false)
  void render()
}

// ── Live feed ─────────────────────────────────────────────────────────────────────────────────────────

let countsTimer: ReturnType<typeof setTimeout> | null = null
function refreshCountsSoon() {
  if (countsTimer) return
  countsTimer = setTimeout(() => {
    countsTimer = null
    void refreshCounts()
  }, 800)
}

function startStream() {
  state.stream?.stop()
  const badge = $('connection')
  state.stream = monitorWorkspace('', {
    workspaceId: state.workspaceId,
    onUpdate: (process) => {
      const known = state.rows.get(process.id)
      if (!known || known.status !== process.status) refreshCountsSoon()
      applyUpdate(process)
    },
    onReconnect: () => {
      if (parseRoute().view === 'processes') void loadList()
    },
    onConnectionState: (connection: ConnectionState) => {
      badge.dataset.state = connection
      badge.textContent = connection === 'open' ? 'live' : connection
    },
    onError: (error) => showError(error),
  })
}

function matches(p: Summary, route: Route) {
  return (!route.status || p.status === route.status) && (!route.type || p.type === route.type)
}

function applyUpdate(process: Process) {
  const route = parseRoute()
  if (route.view !== 'processes') {
    state.rows.set(process.id, process)
    return
  }
  const row = document.querySelector<HTMLTableRowElement>(`tr[data-id="${process.id}"]`)
  if (!matches(process, route)) {
    state.rows.delete(process.id)
    state.selected.delete(process.id)
    row?.remove()
    return updateBulk()
  }
  state.rows.set(process.id, process)
  const fresh = processRow(process)
  if (row) row.replaceWith(fresh)
  else {
    const body = $('process-rows')
    // Newest first: a new id goes above the first row with a smaller one.
    const after = [...body.children].find((r) => Number((r as HTMLElement).dataset.id) < process.id)
    body.insertBefore(fresh, after ?? null)
    $('empty-list').hidden = true
  }
  updateBulk()
}

// ── Processes view ────────────────────────────────────────────────────────────────────────────────────

async function refreshCounts() {
  try {
    const stats = await api<Stats>(`/processes/stats?${wsQuery()}&buckets=false`)
    state.counts = stats.counts
    renderTabs(parseRoute())
  } catch (e) {
    showError(e)
  }
}

function renderTabs(route: Route) {
  const type = route.type
  const count = (status?: ProcessStatus) =>
    state.counts.filter((c) => (!status || c.status === status) && (!type || c.type === type)).reduce((n, c) => n + c.count, 0)
  const tabs: (ProcessStatus | undefined)[] = [undefined, ...PROCESS_STATUSES]
  $('status-tabs').replaceChildren(
    ...tabs.map((status) =>
      h(
        'a',
        {
          href: listHash({ status, type }),
          role: 'tab',
          'aria-selected': String(route.status === status),
          class: `tab${route.status === status ? ' active' : ''}`,
          'data-testid': `tab-${status ?? 'all'}`,
        },
        (status ?? 'all').replace('_', ' '),
        h('span', { class: 'count', 'data-testid': 'count', text: count(status) }),
      ),
    ),
  )
  const typeSelect = $<HTMLSelectElement>('type-filter')
  const types = [...new Set(state.counts.map((c) => c.type))].sort()
  if (type && !types.includes(type)) types.push(type)
  typeSelect.replaceChildren(h('option', { value: '', text: 'all' }), ...types.map((t) => h('option', { value: t, text: t })))
  typeSelect.value = type ?? ''
}

function processRow(p: Summary): HTMLTableRowElement {
  const bar = h(
    'div',
    { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': p.progress, 'data-testid': 'progress-bar' },
    h('div', { class: `fill ${p.status}` }),
  )
  ;(bar.firstChild as HTMLElement).style.width = `${p.progress}%`
  const check =
    p.status === 'failed' && canChange()
      ? h('input', { type: 'checkbox', class: 'select', 'data-testid': 'select', 'aria-label': `Select #${p.id}`, checked: state.selected.has(p.id) })
      : null
  check?.addEventListener('change', () => {
    if ((check as HTMLInputElement).checked) state.selected.add(p.id)
    else state.selected.delete(p.id)
    updateBulk()
  })
  const row = h(
    'tr',
    { 'data-id': p.id, 'data-status': p.status, 'data-testid': 'process-row' },
    h('td', { class: 'check' }, check),
    h('td', { class: 'num' }, h('a', { href: `#/processes/${p.id}`, 'data-testid': 'process-link', text: `#${p.id}` })),
    h('td', { text: p.type }),
    h('td', {}, h('span', { class: `badge ${p.status}`, 'data-testid': 'status', text: p.status })),
    h('td', { class: 'bar-col' }, bar, h('span', { class: 'pct', text: `${p.progress}%` })),
    h('td', { class: 'num age', 'data-created': p.created_at, text: ago(p.created_at) }),
    h('td', { class: 'num duration', text: duration(p) }),
    h('td', { class: 'mono', text: p.worker_id ?? '' }),
    h('td', { class: 'message', title: p.error ?? p.message ?? '', text: p.error ?? p.message ?? '' }),
  )
  return row
}

function tickAges() {
  for (const cell of document.querySelectorAll<HTMLElement>('td.age')) cell.textContent = ago(cell.dataset.created)
  for (const row of document.querySelectorAll<HTMLElement>('tr[data-testid="process-row"]')) {
    const p = state.rows.get(Number(row.dataset.id))
    const cell = row.querySelector('td.duration')
    if (p && cell && p.started_at && !p.finished_at) cell.textContent = duration(p)
  }
}

function updateBulk() {
  for (const id of state.selected) if (state.rows.get(id)?.status !== 'failed') state.selected.delete(id)
  const button = $<HTMLButtonElement>('bulk-retry')
  button.disabled = state.selected.size === 0
  button.textContent = `Retry selected failed (${state.selected.size})`
}

async function loadList() {
  const route = parseRoute()
  const params = new URLSearchParams({ workspace_id: String(state.workspaceId), limit: '100' })
  if (route.status) params.set('status', route.status)
  if (route.type) params.set('type', route.type)
  try {
    const list = await api<Summary[]>(`/processes?${params}`)
    if (parseRoute().view !== 'processes') return
    for (const p of list) state.rows.set(p.id, { ...state.rows.get(p.id), ...p })
    const shown = list.map((p) => state.rows.get(p.id)!).filter((p) => matches(p, route))
    $('process-rows').replaceChildren(...shown.map(processRow))
    $('empty-list').hidden = shown.length > 0
    updateBulk()
  } catch (e) {
    showError(e)
  }
}

async function bulkRetry() {
  const ids = [...state.selected]
  if (ids.length === 0) return
  if (!(await confirmAction(`Retry ${ids.length} failed process${ids.length === 1 ? '' : 'es'}? They go back to pending for a worker to claim.`))) return
  const results = await Promise.allSettled(ids.map((id) => api<Process>(`/processes/${id}/retry`, { method: 'POST' })))
  state.selected.clear()
  for (const result of results) {
    if (result.status === 'fulfilled') applyUpdate(result.value)
  }
  const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[]
  if (failed.length > 0) showError(new Error(`${failed.length} of ${ids.length} not retried: ${(failed[0]!.reason as Error).message}`))
  updateBulk()
  refreshCountsSoon()
}

async function createProcess(event: SubmitEvent) {
  event.preventDefault()
  const type = $<HTMLInputElement>('create-type').value.trim()
  const text = $<HTMLInputElement>('create-metadata').value.trim()
  let metadata: unknown = {}
  try {
    metadata = text ? JSON.parse(text) : {}
  } catch {
    return showError(new Error('Metadata is not valid JSON.'))
  }
  try {
    const process = await api<Process>('/processes', { method: 'POST', body: JSON.stringify({ type, metadata, workspace_id: state.workspaceId }) })
    applyUpdate(process)
    refreshCountsSoon()
  } catch (e) {
    showError(e)
  }
}

// ── Detail view ───────────────────────────────────────────────────────────────────────────────────────

function confirmAction(text: string): Promise<boolean> {
  const dialog = $<HTMLDialogElement>('confirm-dialog')
  $('confirm-text').textContent = text
  dialog.returnValue = ''
  dialog.showModal()
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true }))
}

async function act(p: Process, action: 'cancel' | 'retry' | 'approve' | 'discard') {
  const confirmText =
    action === 'cancel'
      ? `Cancel #${p.id} (${p.type})? Its worker is told to stop at once.`
      : action === 'discard'
        ? `Discard the result of #${p.id}? It ends cancelled.`
        : null
  if (confirmText && !(await confirmAction(confirmText))) return
  try {
    const path = action === 'approve' || action === 'discard' ? `/processes/${p.id}/review` : `/processes/${p.id}/${action}`
    const body = action === 'approve' || action === 'discard' ? JSON.stringify({ decision: action }) : undefined
    const changed = await api<Process>(path, { method: 'POST', body })
    renderDetail(changed)
    void loadEvents(p.id)
    if (changed.status === 'pending') followDetail(p.id)
  } catch (e) {
    showError(e)
  }
}

function field(name: string, value: Node | string) {
  return [h('dt', { text: name }), h('dd', {}, value)]
}

function renderDetail(p: Process) {
  const panel = $('process-detail')
  const bar = h(
    'div',
    { class: 'bar wide', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': p.progress, 'data-testid': 'progress-bar' },
    h('div', { class: `fill ${p.status}` }),
  )
  ;(bar.firstChild as HTMLElement).style.width = `${p.progress}%`
  const buttons: HTMLButtonElement[] = []
  const button = (label: string, action: 'cancel' | 'retry' | 'approve' | 'discard', cls = '') => {
    const b = h('button', {
      type: 'button',
      class: cls,
      'data-testid': action,
      text: label,
      disabled: !canChange(),
      title: canChange() ? undefined : 'Viewers cannot change processes',
    })
    b.addEventListener('click', () => void act(p, action))
    buttons.push(b)
  }
  if (p.status === 'pending' || p.status === 'running') button('Cancel', 'cancel', 'danger')
  if (p.status === 'failed') button('Retry', 'retry')
  if (p.status === 'waiting_review') {
    button('Approve', 'approve')
    button('Discard', 'discard', 'danger')
  }
  const json = (value: unknown) => h('pre', { text: JSON.stringify(value, null, 2) })
  panel.replaceChildren(
    h(
      'div',
      { class: 'detail-head' },
      h('h2', { text: `#${p.id} ${p.type}` }),
      h('span', { class: `badge ${p.status}`, 'data-testid': 'status', text: p.status }),
      h('div', { class: 'actions' }, ...buttons),
    ),
    h('div', { class: 'progress-line' }, bar, h('span', { class: 'pct', text: `${p.progress}%` }), h('span', { class: 'muted', text: p.message ?? '' })),
    h(
      'dl',
      { class: 'fields' },
      ...field('Created', `${new Date(p.created_at).toLocaleString()} (${ago(p.created_at)} ago)`),
      ...field('Started', p.started_at ? new Date(p.started_at).toLocaleString() : '—'),
      ...field('Finished', p.finished_at ? new Date(p.finished_at).toLocaleString() : '—'),
      ...field('Duration', duration(p)),
      ...field('Attempts', String(p.attempts)),
      ...field('Worker', p.worker_id ?? '—'),
      ...field('Version', String(p.version)),
      ...(p.parent_id !== null && p.parent_id !== undefined
        ? field('Parent', h('a', { href: `#/processes/${p.parent_id}`, 'data-testid': 'parent-link', text: `#${p.parent_id}` }))
        : []),
      ...(p.error ? field('Error', h('span', { class: 'error-text', text: p.error })) : []),
    ),
    ...childrenSection(p),
    h(
      'div',
      { class: 'columns' },
      h('div', {}, h('h3', { text: 'Metadata' }), json(p.metadata)),
      h('div', {}, h('h3', { text: 'Result' }), json(p.result_summary)),
    ),
    h('h3', { text: 'Events' }),
    h('ol', { class: 'events', id: 'event-log', 'data-testid': 'event-log' }),
  )
}

// A parent's children: the counts from its state, and a page of them with links, oldest first.
function childrenSection(p: Process): HTMLElement[] {
  const c = p.children
  if (!c) return []
  const counts = (['pending', 'running', 'waiting_review', 'completed', 'failed', 'cancelled'] as const)
    .filter((k) => c[k] > 0)
    .map((k) => h('span', { class: `badge ${k}`, text: `${k} ${c[k]}` }))
  return [
    h('h3', { text: `Children (${c.total})` }),
    h('div', { class: 'child-counts', 'data-testid': 'child-counts' }, ...counts),
    h('ol', { class: 'events', id: 'child-list', 'data-testid': 'child-list' }),
    h('button', { type: 'button', id: 'child-more', hidden: true, text: 'More children' }),
  ]
}

async function loadChildren(id: number, after?: number) {
  try {
    const page = await api<Process[]>(`/processes/${id}/children?limit=50${after ? `&after=${after}` : ''}`)
    const list = document.getElementById('child-list')
    if (!list) return
    const items = page.map((k) =>
      h(
        'li',
        {},
        h('a', { href: `#/processes/${k.id}`, 'data-testid': 'child-link', text: `#${k.id}` }),
        h('span', { class: `badge ${k.status}`, text: k.status }),
        h('span', { text: `${k.type} · ${k.progress}%${k.message ? ` · ${k.message}` : ''}` }),
      ),
    )
    if (after) list.append(...items)
    else list.replaceChildren(...items)
    const more = document.getElementById('child-more') as HTMLButtonElement | null
    if (more) {
      more.hidden = page.length < 50
      more.onclick = () => void loadChildren(id, page.at(-1)?.id)
    }
  } catch (e) {
    showError(e)
  }
}

async function loadEvents(id: number) {
  try {
    const events = await api<{ id: number; status: string; message: string | null; created_at: string }[]>(`/processes/${id}/events`)
    const list = document.getElementById('event-log')
    list?.replaceChildren(
      ...events.map((e) =>
        h(
          'li',
          {},
          h('time', { text: new Date(e.created_at).toLocaleTimeString() }),
          h('span', { class: `badge ${e.status}`, text: e.status }),
          h('span', { text: e.message ?? '' }),
        ),
      ),
    )
  } catch (e) {
    showError(e)
  }
}

function followDetail(id: number) {
  state.detail?.stop()
  let lastStatus = ''
  // The live output, like a log pane: text as it comes, other chunks as a line of JSON each.
  const pane = $('process-output')
  pane.textContent = ''
  $('output-card').hidden = true
  state.detail = monitorProcess('', id, {
    onOutput: ({ chunk }) => {
      if (parseRoute().id !== id) return
      const stick = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4
      pane.append(typeof chunk === 'string' ? chunk : `${JSON.stringify(chunk)}\n`)
      $('output-card').hidden = false
      if (stick) pane.scrollTop = pane.scrollHeight
    },
    onUpdate: (p) => {
      if (parseRoute().id !== id) return
      renderDetail(p)
      if (p.status !== lastStatus) void loadEvents(id)
      lastStatus = p.status
      // A rendered detail starts with an empty list: the first page again (the counts say what changed).
      if (p.children) void loadChildren(id)
    },
    onDone: (p) => {
      renderDetail(p)
      void loadEvents(id)
      if (p.children) void loadChildren(id)
    },
    onError: (error) => {
      if (error.status === 404)
        $('process-detail').replaceChildren(
          h('p', { class: 'muted', 'data-testid': 'not-found', text: `Process #${id} is not in this workspace, or does not exist.` }),
        )
      else showError(error)
    },
  })
}

// ── Workers view, and the warning on every view ───────────────────────────────────────────────────────

async function refreshWorkers(render: boolean) {
  if (!state.workspaceId) return
  let page: Workers
  try {
    page = await api<Workers>(`/workers?${wsQuery()}`)
  } catch (e) {
    return showError(e)
  }
  const uncovered = page.pending.filter((p) => !p.covered)
  const warning = $('no-worker-warning')
  warning.hidden = uncovered.length === 0
  warning.textContent = uncovered.length
    ? `No connected worker claims ${uncovered.map((p) => `${p.type} (${p.count} pending)`).join(', ')}: that work will wait until one does.`
    : ''
  if (!render && parseRoute().view !== 'workers') return
  const connected = page.workers.filter((w) => w.connected)
  $('workers-summary').textContent = `${connected.length} connected, ${page.workers.reduce((n, w) => n + w.leases.length, 0)} leases in this workspace`
  $('no-workers').hidden = page.workers.length > 0
  $('worker-rows').replaceChildren(
    ...page.workers.map((w) =>
      h(
        'tr',
        { 'data-testid': 'worker-row', 'data-worker': w.worker_id },
        h('td', { class: 'mono', text: w.worker_id }),
        h(
          'td',
          {},
          h('span', {
            class: `badge ${w.connected ? 'running' : 'failed'}`,
            text: w.connected ? `connected${w.connections > 1 ? ` ×${w.connections}` : ''}` : 'disconnected',
          }),
        ),
        h('td', { text: w.types === null ? 'any type' : w.types.join(', ') }),
        h('td', { class: 'num', text: w.connected_at ? ago(w.connected_at) : '—' }),
        h('td', { class: 'num', 'data-testid': 'last-frame', text: w.last_frame_at ? `${ago(w.last_frame_at)} ago` : '—' }),
        h(
          'td',
          {},
          w.leases.length === 0
            ? h('span', { class: 'muted', text: 'none' })
            : h(
                'ul',
                { class: 'leases' },
                ...w.leases.map((l) =>
                  h(
                    'li',
                    { 'data-testid': 'lease' },
                    h('a', { href: `#/processes/${l.process_id}`, text: `#${l.process_id}` }),
                    ` ${l.type} ${l.progress}% · heartbeat ${ago(l.heartbeat_at)} ago`,
                  ),
                ),
              ),
        ),
      ),
    ),
  )
}

// ── Charts: inline SVG, drawn here ────────────────────────────────────────────────────────────────────

const W = 640
const H = 160
const PAD = { left: 44, right: 8, top: 10, bottom: 22 }

function frame(max: number, format: (v: number) => string, buckets: Stats['buckets']): SVGElement {
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' })
  const y0 = H - PAD.bottom
  svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y0, y2: y0, class: 'axis' }))
  svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: PAD.top, y2: PAD.top, class: 'grid-line' }))
  svg.append(s('text', { x: PAD.left - 4, y: PAD.top + 4, class: 'label end' }, format(max)))
  svg.append(s('text', { x: PAD.left - 4, y: y0, class: 'label end' }, format(0)))
  const time = (iso: string) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  if (buckets.length > 0) {
    svg.append(s('text', { x: PAD.left, y: H - 6, class: 'label' }, time(buckets[0]!.start)))
    svg.append(s('text', { x: W - PAD.right, y: H - 6, class: 'label end' }, time(buckets.at(-1)!.start)))
  }
  return svg
}

function barChart(buckets: Stats['buckets']): SVGElement {
  const max = Math.max(1, ...buckets.map((b) => b.completed + b.failed + b.cancelled))
  const svg = frame(max, (v) => String(Math.round(v)), buckets)
  const width = (W - PAD.left - PAD.right) / Math.max(1, buckets.length)
  const scale = (H - PAD.top - PAD.bottom) / max
  buckets.forEach((b, i) => {
    let y = H - PAD.bottom
    for (const [key, value] of [
      ['completed', b.completed],
      ['failed', b.failed],
      ['cancelled', b.cancelled],
    ] as const) {
      if (value === 0) continue
      const height = value * scale
      y -= height
      const rect = s('rect', { x: PAD.left + i * width + 1, y, width: Math.max(1, width - 2), height, class: `bar-${key}`, 'data-testid': 'bar' })
      rect.append(s('title', {}, `${new Date(b.start).toLocaleString()}: ${value} ${key}`))
      svg.append(rect)
    }
  })
  return svg
}

function lineChart(
  buckets: Stats['buckets'],
  p50: (b: Stats['buckets'][number]) => number | null,
  p95: (b: Stats['buckets'][number]) => number | null,
): SVGElement {
  const values = buckets.flatMap((b) => [p50(b), p95(b)]).filter((v): v is number => v !== null)
  const max = Math.max(0.001, ...values)
  const svg = frame(max, seconds, buckets)
  const step = (W - PAD.left - PAD.right) / Math.max(1, buckets.length)
  const scale = (H - PAD.top - PAD.bottom) / max
  for (const [cls, pick] of [
    ['p95', p95],
    ['p50', p50],
  ] as const) {
    const points = buckets.flatMap((b, i) => {
      const v = pick(b)
      return v === null ? [] : [[PAD.left + (i + 0.5) * step, H - PAD.bottom - v * scale] as const]
    })
    if (points.length > 1) svg.append(s('polyline', { points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '), class: `line-${cls}` }))
    for (const [x, y] of points) svg.append(s('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5, class: `dot-${cls}`, 'data-testid': 'point' }))
  }
  if (values.length === 0) svg.append(s('text', { x: W / 2, y: H / 2, class: 'label middle' }, 'no data in this window'))
  return svg
}

async function renderCharts() {
  const window = $<HTMLSelectElement>('chart-window').value
  try {
    const stats = await api<Stats>(`/processes/stats?${wsQuery()}&window=${window}`)
    $('chart-throughput').replaceChildren(barChart(stats.buckets))
    $('chart-wait').replaceChildren(
      lineChart(
        stats.buckets,
        (b) => b.wait_p50_s,
        (b) => b.wait_p95_s,
      ),
    )
    $('chart-run').replaceChildren(
      lineChart(
        stats.buckets,
        (b) => b.run_p50_s,
        (b) => b.run_p95_s,
      ),
    )
  } catch (e) {
    showError(e)
  }
}

// ── Queues and schedules ──────────────────────────────────────────────────────────────────────────────

async function renderQueues() {
  let queues: Queue[]
  let schedules: Schedule[]
  try {
    const [q, list] = await Promise.all([api<{ queues: Queue[] }>(`/queues?${wsQuery()}`), api<Schedule[]>(`/schedules?${wsQuery()}`)])
    queues = q.queues
    schedules = list
  } catch (e) {
    return showError(e)
  }
  $('no-queues').hidden = queues.length > 0
  $('queue-rows').replaceChildren(
    ...queues.map((q) => {
      const action = q.paused ? 'resume' : 'pause'
      // A pause of every workspace is the operators' (the CLI): a workspace's admins cannot lift it.
      const button =
        canAdmin() && q.paused_in !== 'all'
          ? h('button', { class: q.paused ? '' : 'quiet', 'data-testid': `queue-${action}`, text: q.paused ? 'Resume' : 'Pause' })
          : null
      button?.addEventListener('click', () => void setPaused(q.type, action))
      return h(
        'tr',
        { 'data-testid': 'queue-row', 'data-type': q.type },
        h('td', { class: 'mono', text: q.type }),
        h('td', { class: 'num', text: String(q.pending) }),
        h('td', { class: 'num', text: String(q.running) }),
        h('td', { class: 'num', text: q.oldest_pending_age_s === null ? '—' : span(q.oldest_pending_age_s * 1000) }),
        h('td', { class: 'num', text: String(q.finished_last_minute) }),
        h('td', { text: q.rate ? `${q.rate.max} per ${seconds(q.rate.per_ms / 1000)}` : '—' }),
        h(
          'td',
          {},
          h('span', {
            class: `badge ${q.paused ? 'failed' : 'running'}`,
            'data-testid': 'queue-state',
            text: q.paused ? (q.paused_in === 'all' ? 'paused everywhere' : 'paused') : 'active',
          }),
        ),
        h('td', {}, button),
      )
    }),
  )
  $('no-schedules').hidden = schedules.length > 0
  $('schedule-rows').replaceChildren(
    ...schedules.map((sch) =>
      h(
        'tr',
        { 'data-testid': 'schedule-row', 'data-id': sch.id },
        h('td', { class: 'mono', text: sch.type }),
        h('td', { class: 'mono', text: sch.cron }),
        h('td', { text: sch.timezone }),
        h('td', { text: `${sch.overlap} / ${sch.catch_up}` }),
        h(
          'td',
          { 'data-testid': 'next-runs' },
          sch.enabled ? sch.next_runs.map((run) => new Date(run).toLocaleString()).join(' · ') || 'never' : h('span', { class: 'muted', text: 'disabled' }),
        ),
      ),
    ),
  )
}

async function setPaused(type: string, action: 'pause' | 'resume') {
  try {
    await api(`/queues/${encodeURIComponent(type)}/${action}?${wsQuery()}`, { method: 'POST' })
  } catch (e) {
    showError(e)
  }
  await renderQueues()
}

// ── Routing ───────────────────────────────────────────────────────────────────────────────────────────

async function render() {
  if (!state.me || !state.workspaceId) return
  const route = parseRoute()
  for (const [id, view] of [
    ['processes-view', 'processes'],
    ['detail-view', 'detail'],
    ['workers-view', 'workers'],
    ['charts-view', 'charts'],
    ['queues-view', 'queues'],
  ] as const)
    $(id).hidden = route.view !== view
  for (const link of document.querySelectorAll<HTMLElement>('#nav a'))
    link.classList.toggle('active', link.dataset.view === (route.view === 'detail' ? 'processes' : route.view))
  if (route.view !== 'detail') {
    state.detail?.stop()
    state.detail = null
  }
  if (route.view === 'processes') {
    renderTabs(route)
    await Promise.all([loadList(), refreshCounts()])
  } else if (route.view === 'detail') {
    $('process-detail').replaceChildren(h('p', { class: 'muted', text: `Loading #${route.id}…` }))
    followDetail(route.id!)
    void loadEvents(route.id!)
  } else if (route.view === 'workers') await refreshWorkers(true)
  else if (route.view === 'queues') await renderQueues()
  else await renderCharts()
}

function start() {
  $('sign-in-form').addEventListener('submit', (e) => void signIn(e as SubmitEvent))
  $('sign-out').addEventListener('click', () => void signOut())
  $('error-dismiss').addEventListener('click', () => ($('error-banner').hidden = true))
  $('workspace-select').addEventListener('change', (e) => switchWorkspace(Number((e.target as HTMLSelectElement).value)))
  $('type-filter').addEventListener('change', (e) => (location.hash = listHash({ ...parseRoute(), type: (e.target as HTMLSelectElement).value || undefined })))
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const id = $<HTMLInputElement>('search-id').value.trim().replace(/^#/, '')
    if (/^[1-9][0-9]*$/.test(id)) location.hash = `#/processes/${id}`
    else showError(new Error('An id is a positive whole number.'))
  })
  $('select-all').addEventListener('change', (e) => {
    const on = (e.target as HTMLInputElement).checked
    for (const box of document.querySelectorAll<HTMLInputElement>('input.select')) {
      box.checked = on
      const id = Number(box.closest('tr')!.dataset.id)
      if (on) state.selected.add(id)
      else state.selected.delete(id)
    }
    updateBulk()
  })
  $('bulk-retry').addEventListener('click', () => void bulkRetry())
  $('create-form').addEventListener('submit', (e) => void createProcess(e as SubmitEvent))
  $('chart-window').addEventListener('change', () => void renderCharts())
  window.addEventListener('hashchange', () => void render())
  void boot()
}

start()
