// The console's entry: wires the page's controls, signs in (GET /me, else the sign-in form), picks the
// workspace, and renders the view the hash names. Views: list.ts (with tabs, selection, bulk), detail.ts
// (with output.ts and tree.ts), workers.ts, queues.ts, charts.ts; live.ts is the workspace stream.
import { ApiError, api, apiHooks } from './api'
import { clearError, clearLoadError, showError } from './banner'
import { bulk } from './bulk'
import { renderCharts } from './charts'
import { followDetail, stopDetail } from './detail'
import { $, h } from './dom'
import { KEYS, onKey, rememberList } from './keys'
import { list, loadList, loadMore, tickAges } from './list'
import { startStream, stopStream } from './live'
import { renderQueues } from './queues'
import { listHash, listRoute, parseRoute } from './router'
import { clearSelection, selectAll } from './selection'
import { hideSignIn, showSignIn, signIn, signOut } from './sign-in'
import { canChange, session } from './state'
import { refreshCounts, renderTabs } from './tabs'
import type { Me, Process } from './types'
import { refreshWorkers } from './workers'

let timers: ReturnType<typeof setInterval>[] = []

function stopAll() {
  stopStream()
  stopDetail()
  for (const timer of timers) clearInterval(timer)
  timers = []
}

async function boot() {
  try {
    session.me = await api<Me>('/me')
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showSignIn(stopAll)
    return showError(e)
  }
  const me = session.me
  hideSignIn()
  $('user-email').textContent = me.user?.email ?? ''
  const select = $<HTMLSelectElement>('workspace-select')
  select.replaceChildren(...me.workspaces.map((w) => h('option', { value: w.id, text: `${w.name} (${w.role})` })))
  const saved = Number(sessionStorage.getItem('workspace'))
  const workspace = me.workspaces.find((w) => w.id === saved) ?? me.workspaces[0]
  if (!workspace) return showError(new Error('You are not a member of any workspace.'), 'action')
  select.value = String(workspace.id)
  switchWorkspace(workspace.id)
}

function switchWorkspace(id: number) {
  session.workspaceId = id
  session.role = session.me?.workspaces.find((w) => w.id === id)?.role ?? 'viewer'
  sessionStorage.setItem('workspace', String(id))
  document.body.classList.toggle('read-only', !canChange())
  list.rows.clear()
  list.key = ''
  stopAll()
  startStream()
  timers = [setInterval(() => void refreshWorkers(false), 10_000), setInterval(tickAges, 5000)]
  void refreshWorkers(false)
  void render()
}

const VIEWS = [
  ['processes-view', 'processes'],
  ['detail-view', 'detail'],
  ['workers-view', 'workers'],
  ['charts-view', 'charts'],
  ['queues-view', 'queues'],
] as const

async function render() {
  if (!session.me || !session.workspaceId) return
  // A new view: the last one's error does not belong here.
  clearError()
  rememberList()
  const route = parseRoute()
  for (const [id, view] of VIEWS) $(id).hidden = route.view !== view
  for (const link of document.querySelectorAll<HTMLElement>('#nav a'))
    link.classList.toggle('active', link.dataset.view === (route.view === 'detail' ? 'processes' : route.view))
  if (route.view !== 'detail') stopDetail()
  if (route.view === 'processes') {
    clearSelection()
    renderTabs(route)
    await Promise.all([loadList(), refreshCounts()])
  } else if (route.view === 'detail') followDetail(route.id)
  else if (route.view === 'workers') await refreshWorkers(true)
  else if (route.view === 'queues') await renderQueues()
  else await renderCharts()
}

async function createProcess(event: SubmitEvent) {
  event.preventDefault()
  const type = $<HTMLInputElement>('create-type').value.trim()
  const text = $<HTMLInputElement>('create-metadata').value.trim()
  let metadata: unknown = {}
  try {
    metadata = text ? JSON.parse(text) : {}
  } catch {
    return showError(new Error('Metadata is not valid JSON.'), 'action')
  }
  try {
    await api<Process>('/processes', { method: 'POST', body: JSON.stringify({ type, metadata, workspace_id: session.workspaceId }) })
  } catch (e) {
    showError(e, 'action')
  }
}

function search(event: SubmitEvent) {
  event.preventDefault()
  const route = listRoute() ?? {}
  const q = $<HTMLInputElement>('search-q').value.trim()
  // "#42" opens process 42; anything else searches messages, errors, types and metadata.
  const id = /^#([1-9][0-9]{0,15})$/.exec(q)
  location.hash = id ? `#/processes/${id[1]}` : listHash({ ...route, q: q || undefined })
}

function start() {
  apiHooks.unauthenticated = () => showSignIn(stopAll)
  apiHooks.answered = clearLoadError
  $('sign-in-form').addEventListener('submit', (e) => void signIn(e as SubmitEvent, boot))
  $('sign-out').addEventListener('click', () => {
    session.me = null
    void signOut().then(() => showSignIn(stopAll))
  })
  $('error-dismiss').addEventListener('click', clearError)
  $('workspace-select').addEventListener('change', (e) => switchWorkspace(Number((e.target as HTMLSelectElement).value)))
  $('type-filter').addEventListener(
    'change',
    (e) => (location.hash = listHash({ ...(listRoute() ?? {}), type: (e.target as HTMLSelectElement).value || undefined })),
  )
  $('search-id-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const id = $<HTMLInputElement>('search-id').value.trim().replace(/^#/, '')
    if (/^[1-9][0-9]{0,15}$/.test(id)) location.hash = `#/processes/${id}`
    else showError(new Error('An id is a positive whole number.'), 'action')
  })
  $('search-form').addEventListener('submit', (e) => search(e as SubmitEvent))
  $('select-all').addEventListener('change', (e) => selectAll((e.target as HTMLInputElement).checked))
  $('bulk-retry').addEventListener('click', () => void bulk('retry'))
  $('bulk-cancel').addEventListener('click', () => void bulk('cancel'))
  $('bulk-discard').addEventListener('click', () => void bulk('discard'))
  $('list-more').addEventListener('click', () => void loadMore())
  $('create-form').addEventListener('submit', (e) => void createProcess(e as SubmitEvent))
  $('chart-window').addEventListener('change', () => void renderCharts())
  $('help-open').addEventListener('click', () => $<HTMLDialogElement>('help-dialog').showModal())
  $('help-keys').replaceChildren(...KEYS.flatMap(([key, what]) => [h('dt', {}, h('kbd', { text: key })), h('dd', { text: what })]))
  document.addEventListener('keydown', onKey)
  window.addEventListener('hashchange', () => void render())
  // The network is back: reconnect at once (not at the stream's next back-off) and load the view again.
  window.addEventListener('online', () => {
    if (!session.me || !session.workspaceId) return
    startStream()
    void render()
  })
  void boot()
}

start()
