// The live dashboard: plain ES module, no build step, no framework.
// Auth is the ps_session cookie (a same-origin EventSource sends it). One
// workspace stream feeds every row; the selected process adds its details and
// event log. All data goes into the DOM through textContent, never innerHTML.

const WORKSPACE_KEY = 'processes.workspace'
const LIST_LIMIT = 50
// The stream reconnects by itself every ~25 s; only a longer gap is worth showing.
const OFFLINE_AFTER_MS = 3000
// Progress can tick every 100 ms: fetch new events at most this often, unless the status changed.
const EVENTS_REFRESH_MS = 1000

/** What each status allows (contract §5): the buttons shown for it. */
const ACTIONS_BY_STATUS = {
  pending: ['cancel'],
  running: ['cancel'],
  waiting_review: ['approve', 'discard'],
  failed: ['retry'],
  completed: [],
  cancelled: [],
}

const ACTIONS = {
  cancel: { label: 'Cancel', path: 'cancel', style: 'button-danger', done: 'Cancelled' },
  retry: { label: 'Retry', path: 'retry', style: 'button-primary', done: 'Queued again' },
  approve: { label: 'Approve', path: 'review', body: { decision: 'approve' }, style: 'button-primary', done: 'Approved' },
  discard: { label: 'Discard', path: 'review', body: { decision: 'discard' }, style: 'button-danger', done: 'Discarded' },
}

const STATUS_LABELS = {
  pending: 'Pending',
  running: 'Running',
  waiting_review: 'Waiting for review',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
}

const $ = (id) => document.getElementById(id)
const ui = {
  session: $('session'),
  workspaceSelect: $('workspace-select'),
  userEmail: $('user-email'),
  signOut: $('sign-out'),
  errorBanner: $('error-banner'),
  errorText: $('error-text'),
  errorDismiss: $('error-dismiss'),
  signInView: $('sign-in-view'),
  signInForm: $('sign-in-form'),
  tokenInput: $('token-input'),
  signInError: $('sign-in-error'),
  appView: $('app-view'),
  live: $('live-indicator'),
  createForm: $('create-form'),
  createType: $('create-type'),
  createMetadata: $('create-metadata'),
  list: $('process-list'),
  listEmpty: $('list-empty'),
  loadMore: $('load-more'),
  detailEmpty: $('detail-empty'),
  detailBody: $('detail-body'),
  detailBack: $('detail-back'),
  detailTitle: $('detail-title'),
  detailStatus: $('detail-status'),
  detailProgress: $('detail-progress'),
  detailPercent: $('detail-percent'),
  detailMessage: $('detail-message'),
  detailError: $('detail-error'),
  detailActions: $('detail-actions'),
  detailFacts: $('detail-facts'),
  detailMetadata: $('detail-metadata'),
  detailResult: $('detail-result'),
  detailResultBox: $('detail-result-box'),
  eventLog: $('event-log'),
  announcer: $('announcer'),
}

const state = {
  workspaces: [],
  workspaceId: null,
  /** id → the newest process seen (list summaries and stream events merged by version). */
  processes: new Map(),
  /** id → its <li>, created once and updated in place so focus and transitions survive. */
  rows: new Map(),
  nextPage: null,
  selectedId: null,
  /** The selected process in full (metadata, result_summary). */
  detail: null,
  events: [],
  renderedActionsFor: null,
  stream: null,
}

// ── API ────────────────────────────────────────────────────────────────────

class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** JSON in and out; errors carry the contract's `{error: {code, message}}`. */
async function api(path, { method = 'GET', body, headers = {} } = {}) {
  let response
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: { Accept: 'application/json', ...(body ? { 'Content-Type': 'application/json' } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    })
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.')
  }
  const data = await response.json().catch(() => null)
  if (response.status === 401) sessionEnded()
  if (!response.ok) {
    const error = data && data.error
    throw new ApiError(response.status, error?.code ?? 'http_error', error?.message ?? `Request failed (HTTP ${response.status})`)
  }
  return { data, response }
}

// ── Session ────────────────────────────────────────────────────────────────

// The token is exchanged for a session (POST /auth/session): the server sets the HttpOnly ps_session cookie,
// which no script here can read; the raw token is never stored.
function endSession() {
  return api('/auth/session', { method: 'DELETE' }).catch(() => {})
}

async function signIn(event) {
  event.preventDefault()
  const token = ui.tokenInput.value.trim()
  ui.signInError.textContent = ''
  if (!token) {
    ui.signInError.textContent = 'Paste your API token first.'
    return ui.tokenInput.focus()
  }
  try {
    await api('/auth/session', { method: 'POST', body: { token } })
    const { data } = await api('/me')
    ui.tokenInput.value = ''
    await showApp(data)
  } catch (error) {
    ui.signInError.textContent =
      error.status === 401 ? 'That token was not accepted. Check it and try again.' : error.message
    ui.tokenInput.focus()
  }
}

async function signOut() {
  await endSession()
  showSignIn('Signed out.')
}

/** Any 401: the token expired or was revoked. */
function sessionEnded() {
  if (ui.appView.hidden) return
  showSignIn('Your session has ended. Sign in again.')
}

function showSignIn(notice = '') {
  stopStream()
  resetWorkspaceState()
  ui.appView.hidden = true
  ui.session.hidden = true
  ui.signInView.hidden = false
  ui.signInError.textContent = notice
  hideError()
  ui.tokenInput.focus()
}

async function showApp(me) {
  state.workspaces = me.workspaces ?? []
  ui.userEmail.textContent = me.user?.email ?? ''
  ui.signInView.hidden = true
  ui.session.hidden = false
  ui.appView.hidden = false
  fillWorkspaceSelect()
  if (state.workspaces.length === 0) {
    return showError('This account is not a member of any workspace yet.')
  }
  const remembered = localStorage.getItem(WORKSPACE_KEY)
  const initial = state.workspaces.find((w) => String(w.id) === remembered) ?? state.workspaces[0]
  ui.workspaceSelect.value = String(initial.id)
  await openWorkspace(initial.id)
}

function fillWorkspaceSelect() {
  ui.workspaceSelect.replaceChildren(
    ...state.workspaces.map((w) => el('option', { value: String(w.id) }, `${w.name} (${w.role})`)),
  )
}

// ── Workspace: list + one stream ───────────────────────────────────────────

function resetWorkspaceState() {
  state.processes.clear()
  state.rows.clear()
  state.nextPage = null
  ui.list.replaceChildren()
  selectProcess(null)
}

async function openWorkspace(workspaceId) {
  stopStream()
  resetWorkspaceState()
  state.workspaceId = workspaceId
  localStorage.setItem(WORKSPACE_KEY, String(workspaceId))
  // Subscribe first, then read: nothing changes unseen in between (versions settle the overlap).
  startStream()
  await loadList()
}

async function loadList({ older = false } = {}) {
  const path = older && state.nextPage ? state.nextPage : `/processes?workspace_id=${encodeURIComponent(state.workspaceId)}&limit=${LIST_LIMIT}`
  const workspaceId = state.workspaceId
  try {
    const { data, response } = await api(path)
    if (workspaceId !== state.workspaceId) return
    for (const process of data) mergeProcess(process)
    // Only the first page decides where "Load older" starts; a resync must not reset it.
    if (older || state.nextPage === null) state.nextPage = nextLink(response.headers.get('Link'))
    renderList()
  } catch (error) {
    if (error.status !== 401) showError(error.message)
  }
}

function startStream() {
  const source = new EventSource(`/processes/stream?workspace_id=${encodeURIComponent(state.workspaceId)}`)
  let opened = false
  let offlineTimer
  const close = () => {
    clearTimeout(offlineTimer)
    source.close()
  }
  state.stream = { source, close }

  source.onopen = () => {
    clearTimeout(offlineTimer)
    setLive('live')
    // The reconnect snapshot lists non-final processes only: re-read the list to
    // catch the ones that finished while we were between windows.
    if (opened) resync()
    opened = true
  }
  source.onmessage = (event) => {
    const process = parseJson(event.data)
    if (process && typeof process.id === 'number') applyUpdate(process)
  }
  source.onerror = () => {
    clearTimeout(offlineTimer)
    offlineTimer = setTimeout(() => setLive('offline'), OFFLINE_AFTER_MS)
    // CLOSED: the browser gave up (an HTTP error, not the 25 s end). Find out why, then retry ourselves.
    if (source.readyState === EventSource.CLOSED) void recoverStream(source)
  }
}

async function recoverStream(source) {
  await new Promise((resolve) => setTimeout(resolve, 5000))
  if (state.stream?.source !== source) return
  try {
    await api('/me') // a 401 here signs out
    stopStream()
    startStream()
    resync()
  } catch (error) {
    if (error.status !== 401) void recoverStream(source)
  }
}

function stopStream() {
  state.stream?.close()
  state.stream = null
  setLive('connecting')
}

function resync() {
  void loadList()
  if (state.selectedId !== null) void refreshDetail(state.selectedId)
}

function setLive(mode) {
  ui.live.dataset.state = mode
  ui.live.textContent = { live: 'Live', offline: 'Reconnecting…', connecting: 'Connecting…' }[mode]
}

// ── Merging updates ────────────────────────────────────────────────────────

function isNewer(incoming, current) {
  if (!current) return true
  if (typeof incoming.version === 'number' && typeof current.version === 'number') {
    return incoming.version > current.version
  }
  return Date.parse(incoming.updated_at) >= Date.parse(current.updated_at)
}

/** Keep the newest version per id; returns the merged process, or null when the incoming one is stale. */
function mergeProcess(incoming) {
  const current = state.processes.get(incoming.id)
  if (!isNewer(incoming, current)) return null
  const merged = { ...current, ...incoming }
  state.processes.set(incoming.id, merged)
  return merged
}

/** A process from the stream or from an action's response. */
function applyUpdate(process) {
  const previous = state.processes.get(process.id)
  const merged = mergeProcess(process)
  if (!merged) return
  if (!previous) renderList()
  else updateRow(state.rows.get(process.id), merged)
  if (previous && previous.status !== merged.status) {
    announce(`#${merged.id} ${merged.type}: ${STATUS_LABELS[merged.status] ?? merged.status}`)
  }
  if (process.id === state.selectedId) {
    const statusChanged = state.detail?.status !== process.status
    const messageChanged = state.detail?.message !== process.message
    if (!state.detail || isNewer(process, state.detail)) state.detail = { ...state.detail, ...process }
    renderDetail()
    if (statusChanged) scheduleEventsRefresh(0)
    else if (messageChanged) scheduleEventsRefresh(EVENTS_REFRESH_MS)
  }
}

// ── The list ───────────────────────────────────────────────────────────────

function renderList() {
  const ordered = [...state.processes.values()].sort((a, b) => b.id - a.id)
  // Insert or move only rows that are out of place: moving a focused row would drop focus.
  let cursor = ui.list.firstElementChild
  for (const process of ordered) {
    let row = state.rows.get(process.id)
    if (!row) {
      row = createRow(process.id)
      state.rows.set(process.id, row)
    }
    updateRow(row, process)
    if (row === cursor) cursor = cursor.nextElementSibling
    else ui.list.insertBefore(row, cursor)
  }
  ui.listEmpty.hidden = ordered.length > 0
  ui.loadMore.hidden = !state.nextPage
}

function createRow(id) {
  const titleId = `row-title-${id}`
  const row = el(
    'li',
    { className: 'process-row', dataset: { testid: 'process-row', id: String(id) } },
    el(
      'div',
      { className: 'row-top' },
      el('button', { type: 'button', className: 'row-title', id: titleId }),
      el('span', { className: 'badge', dataset: { testid: 'status' } }),
    ),
    el(
      'div',
      { className: 'progress-row' },
      progressBar({ 'aria-labelledby': titleId }),
      el('span', { className: 'percent' }),
    ),
    el('p', { className: 'row-message' }),
  )
  // The whole row is a click target; the button makes it reachable by keyboard.
  row.addEventListener('click', () => selectProcess(id))
  return row
}

function updateRow(row, process) {
  if (!row) return
  row.querySelector('.row-title').textContent = `#${process.id} ${process.type}`
  setBadge(row.querySelector('.badge'), process.status)
  setProgress(row.querySelector('.progress'), process)
  row.querySelector('.percent').textContent = `${process.progress ?? 0}%`
  row.querySelector('.row-message').textContent =
    process.error ?? process.message ?? `Created ${formatTime(process.created_at)}`
  row.classList.toggle('is-selected', process.id === state.selectedId)
  row.querySelector('.row-title').setAttribute('aria-current', process.id === state.selectedId ? 'true' : 'false')
}

// ── The selected process ───────────────────────────────────────────────────

function selectProcess(id) {
  const previous = state.selectedId
  state.selectedId = id
  state.detail = id === null ? null : (state.processes.get(id) ?? null)
  state.events = []
  state.renderedActionsFor = null
  ui.eventLog.replaceChildren()
  document.body.classList.toggle('has-selection', id !== null)
  for (const changed of [previous, id]) {
    const process = state.processes.get(changed)
    if (process) updateRow(state.rows.get(changed), process)
  }
  renderDetail()
  if (id === null) return
  ui.detailTitle.focus({ preventScroll: true })
  // On a phone the detail is stacked above the list: bring it into view.
  if (matchMedia('(max-width: 759px)').matches) window.scrollTo({ top: 0 })
  void refreshDetail(id)
}

async function refreshDetail(id) {
  try {
    const [{ data: process }, { data: events }] = await Promise.all([
      api(`/processes/${id}`),
      api(`/processes/${id}/events?limit=1000`),
    ])
    if (state.selectedId !== id) return
    applyUpdate(process)
    if (!state.detail || !isNewer(state.detail, process)) state.detail = { ...state.detail, ...process }
    state.events = events
    renderDetail()
    renderEvents()
  } catch (error) {
    if (state.selectedId !== id || error.status === 401) return
    showError(error.status === 404 ? `Process #${id} is not visible in this workspace.` : error.message)
  }
}

let eventsTimer = null
let eventsInFlight = false

/** Coalesce event-log refreshes: one request at a time, at most every `delayMs`. */
function scheduleEventsRefresh(delayMs) {
  if (eventsTimer !== null && delayMs > 0) return
  clearTimeout(eventsTimer)
  eventsTimer = setTimeout(loadNewEvents, delayMs)
}

async function loadNewEvents() {
  eventsTimer = null
  const id = state.selectedId
  if (id === null) return
  if (eventsInFlight) return scheduleEventsRefresh(EVENTS_REFRESH_MS)
  eventsInFlight = true
  try {
    const after = state.events.at(-1)?.id ?? 0
    const { data } = await api(`/processes/${id}/events?after=${after}&limit=1000`)
    if (state.selectedId !== id) return
    const known = new Set(state.events.map((e) => e.id))
    state.events.push(...data.filter((e) => !known.has(e.id)))
    renderEvents()
  } catch {
    // The next update or reconnect tries again; the log is not worth an error banner.
  } finally {
    eventsInFlight = false
  }
}

function renderDetail() {
  const process = state.detail
  ui.detailEmpty.hidden = process !== null
  ui.detailBody.hidden = process === null
  if (!process) return
  ui.detailTitle.textContent = `#${process.id} ${process.type}`
  setBadge(ui.detailStatus, process.status)
  setProgress(ui.detailProgress, process)
  ui.detailPercent.textContent = `${process.progress ?? 0}%`
  ui.detailMessage.textContent = process.message ?? ''
  ui.detailMessage.hidden = !process.message
  ui.detailError.textContent = process.error ? `Error: ${process.error}` : ''
  ui.detailError.hidden = !process.error
  renderActions(process)
  renderFacts(process)
  ui.detailMetadata.textContent = process.metadata ? JSON.stringify(process.metadata, null, 2) : '—'
  ui.detailResult.textContent = process.result_summary ? JSON.stringify(process.result_summary, null, 2) : '—'
}

/** Rebuilt only when the status changes, so a focused button is not replaced under the user. */
function renderActions(process) {
  const key = `${process.id}:${process.status}`
  if (state.renderedActionsFor === key) return
  const hadFocus = ui.detailActions.contains(document.activeElement)
  state.renderedActionsFor = key
  const allowed = ACTIONS_BY_STATUS[process.status] ?? []
  ui.detailActions.replaceChildren(
    ...allowed.map((name) =>
      el(
        'button',
        {
          type: 'button',
          className: `button ${ACTIONS[name].style}`,
          dataset: { testid: name, action: name },
        },
        ACTIONS[name].label,
      ),
    ),
  )
  ui.detailActions.hidden = allowed.length === 0
  if (hadFocus) (ui.detailActions.querySelector('button') ?? ui.detailTitle).focus()
}

function renderFacts(process) {
  const facts = [
    ['Attempts', String(process.attempts ?? '—')],
    ['Worker', process.worker_id ?? '—'],
    ['Created', formatTime(process.created_at)],
    ['Started', formatTime(process.started_at)],
    ['Finished', formatTime(process.finished_at)],
    ['Updated', formatTime(process.updated_at)],
    ['Version', String(process.version ?? '—')],
  ]
  ui.detailFacts.replaceChildren(...facts.flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]))
}

function renderEvents() {
  ui.eventLog.replaceChildren(
    ...state.events.map((event) =>
      el(
        'li',
        { className: 'event' },
        el('time', { dateTime: event.created_at }, formatTime(event.created_at)),
        setBadge(el('span', { className: 'badge' }), event.status),
        el('span', { className: 'event-message' }, event.message ?? ''),
      ),
    ),
  )
  if (state.events.length === 0) ui.eventLog.append(el('li', { className: 'event empty' }, 'No events yet.'))
}

async function runAction(name, button) {
  const id = state.selectedId
  const action = ACTIONS[name]
  if (id === null || !action) return
  for (const b of ui.detailActions.querySelectorAll('button')) b.disabled = true
  button.setAttribute('aria-busy', 'true')
  try {
    const { data } = await api(`/processes/${id}/${action.path}`, { method: 'POST', body: action.body ?? {} })
    hideError()
    applyUpdate(data)
    announce(`${action.done}: #${id}`)
    scheduleEventsRefresh(0)
  } catch (error) {
    if (error.status === 401) return
    showError(error.message)
    // 409: someone else moved it first. Show where it is now (and its buttons).
    state.renderedActionsFor = null
    void refreshDetail(id)
  } finally {
    button.removeAttribute('aria-busy')
    for (const b of ui.detailActions.querySelectorAll('button')) b.disabled = false
  }
}

// ── Creating ───────────────────────────────────────────────────────────────

async function createProcess(event) {
  event.preventDefault()
  const type = ui.createType.value.trim()
  const metadata = parseMetadata(ui.createMetadata.value)
  if (!type) return fieldError(ui.createType, 'Enter a type, such as csv_import.')
  if (metadata === undefined) return fieldError(ui.createMetadata, 'Metadata must be a JSON object, such as {"rows": 200}.')
  const submit = ui.createForm.querySelector('button[type="submit"]')
  submit.disabled = true
  try {
    const { data } = await api('/processes', {
      method: 'POST',
      body: { type, workspace_id: state.workspaceId, ...(metadata ? { metadata } : {}) },
      // A double submit (or a retried request) creates one process, not two.
      headers: crypto.randomUUID ? { 'Idempotency-Key': crypto.randomUUID() } : {},
    })
    hideError()
    ui.createMetadata.value = ''
    applyUpdate(data)
    flashRow(data.id)
    announce(`Created #${data.id} ${data.type}`)
  } catch (error) {
    if (error.status !== 401) showError(error.message)
  } finally {
    submit.disabled = false
  }
}

/** null: none given; undefined: invalid; else the object. */
function parseMetadata(text) {
  if (!text.trim()) return null
  const value = parseJson(text)
  return value && typeof value === 'object' && !Array.isArray(value) ? value : undefined
}

function fieldError(input, message) {
  showError(message)
  input.setAttribute('aria-invalid', 'true')
  input.focus()
  input.addEventListener('input', () => input.removeAttribute('aria-invalid'), { once: true })
}

function flashRow(id) {
  const row = state.rows.get(id)
  if (!row) return
  row.classList.add('is-new')
  setTimeout(() => row.classList.remove('is-new'), 2000)
}

// ── Small helpers ──────────────────────────────────────────────────────────

/** `el('li', {className, dataset: {testid}}, ...children)`; children are nodes or text. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag)
  const { dataset = {}, ...rest } = props
  for (const [key, value] of Object.entries(rest)) {
    if (key === 'role' || key.startsWith('aria-')) node.setAttribute(key, value)
    else node[key] = value
  }
  Object.assign(node.dataset, dataset)
  node.append(...children)
  return node
}

function progressBar(attributes) {
  return el(
    'div',
    {
      className: 'progress',
      role: 'progressbar',
      'aria-valuemin': '0',
      'aria-valuemax': '100',
      'aria-valuenow': '0',
      dataset: { testid: 'progress-bar' },
      ...attributes,
    },
    el('div', { className: 'progress-fill' }),
  )
}

function setProgress(bar, process) {
  const value = Math.max(0, Math.min(100, Number(process.progress) || 0))
  bar.setAttribute('aria-valuenow', String(value))
  bar.dataset.status = process.status
  bar.firstElementChild.style.width = `${value}%`
}

/** The badge says the raw status (`waiting_review`): the API's, the docs' and the tests' word for it. */
function setBadge(badge, status) {
  badge.textContent = status
  badge.dataset.status = status
  return badge
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' })
function formatTime(iso) {
  return iso ? dateFormat.format(new Date(iso)) : '—'
}

function parseJson(text) {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

/** `<https://…?before=12>; rel="next"` → the URL's path and query (same origin). */
function nextLink(header) {
  const match = header && /<([^>]+)>\s*;\s*rel="?next"?/i.exec(header)
  if (!match) return null
  const url = new URL(match[1], location.href)
  return url.origin === location.origin ? url.pathname + url.search : null
}

function announce(text) {
  // Clearing first makes a repeated message announced again.
  ui.announcer.textContent = ''
  setTimeout(() => (ui.announcer.textContent = text), 50)
}

function showError(message) {
  ui.errorText.textContent = message
  ui.errorBanner.hidden = false
}

function hideError() {
  ui.errorBanner.hidden = true
  ui.errorText.textContent = ''
}

// ── Wiring ─────────────────────────────────────────────────────────────────

ui.signInForm.addEventListener('submit', signIn)
ui.signOut.addEventListener('click', signOut)
ui.errorDismiss.addEventListener('click', hideError)
ui.createForm.addEventListener('submit', createProcess)
ui.loadMore.addEventListener('click', () => loadList({ older: true }))
ui.detailBack.addEventListener('click', () => {
  const id = state.selectedId
  selectProcess(null)
  state.rows.get(id)?.querySelector('.row-title').focus()
})
ui.workspaceSelect.addEventListener('change', () => {
  const workspace = state.workspaces.find((w) => String(w.id) === ui.workspaceSelect.value)
  if (workspace) void openWorkspace(workspace.id)
})
ui.detailActions.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]')
  if (button) void runAction(button.dataset.action, button)
})

async function boot() {
  try {
    const { data } = await api('/me')
    await showApp(data)
  } catch (error) {
    showSignIn(error.status === 401 ? '' : error.message)
  }
}

void boot()
