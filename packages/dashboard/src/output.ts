// The detail view's two live panes. Events: the whole log once, then only what is new (`after` the last id)
// whenever the process's state says something happened — a status change, or a new message (a worker's
// `log` line moves both the message and the version), so log lines appear as they are written.
// Output: the live output as a log pane, text as it comes and other chunks as a line of JSON each.
import { ApiError, api } from './api'
import { showError } from './banner'
import { $, h } from './dom'
import type { ProcessEvent } from './types'

const EVENT_PAGE = 1000
const events = { id: 0, lastId: 0, loading: false, again: false, seen: '' }

export function resetEvents(id: number) {
  events.id = id
  events.lastId = 0
  events.seen = ''
  events.again = false
  $('event-log').replaceChildren()
  const pane = $('process-output')
  pane.textContent = ''
  $('output-card').hidden = true
}

/** Called with each state of the process: fetch the new events when its status or message moved. */
export function eventsFor(p: { id: number; status: string; message: string | null }) {
  const seen = `${p.status}\n${p.message ?? ''}`
  if (p.id !== events.id || seen === events.seen) return
  events.seen = seen
  void loadEvents()
}

export async function loadEvents() {
  if (events.loading) {
    events.again = true
    return
  }
  const id = events.id
  events.loading = true
  try {
    for (;;) {
      const page = await api<ProcessEvent[]>(`/processes/${id}/events?after=${events.lastId}&limit=${EVENT_PAGE}`)
      if (events.id !== id) return
      $('event-log').append(...page.map(eventItem))
      if (page.length > 0) events.lastId = page.at(-1)!.id
      if (page.length < EVENT_PAGE && !events.again) break
      events.again = false
    }
  } catch (e) {
    // Not there (or not this workspace's): the detail pane says so; no banner on top of it.
    if (!(e instanceof ApiError && e.status === 404)) showError(e)
  } finally {
    if (events.id === id) events.loading = false
  }
}

function eventItem(e: ProcessEvent): HTMLLIElement {
  return h(
    'li',
    { 'data-id': e.id },
    h('time', { datetime: e.created_at, title: new Date(e.created_at).toLocaleString(), text: new Date(e.created_at).toLocaleTimeString() }),
    h('span', { class: `badge ${e.status}`, text: e.status }),
    h('span', { class: 'event-message', text: e.message ?? '' }),
    e.stack ? stack(e.stack) : null,
  )
}

export function stack(text: string): HTMLElement {
  return h('details', { class: 'stack', 'data-testid': 'error-stack' }, h('summary', { text: 'stack' }), h('pre', { text }))
}

export function appendOutput(chunk: unknown) {
  const pane = $('process-output')
  const stick = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4
  pane.append(typeof chunk === 'string' ? chunk : `${JSON.stringify(chunk)}\n`)
  $('output-card').hidden = false
  if (stick) pane.scrollTop = pane.scrollHeight
}
