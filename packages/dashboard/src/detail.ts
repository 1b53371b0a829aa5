// One process, live (monitorProcess: its SSE stream): its fields, the actions its status allows, its events
// and live output, its children; the error and stack of a failed attempt; run-now for a delayed one.
import { monitorProcess } from '@processes/client'
import { post } from './api'
import { clearLoadError, showError } from './banner'
import { $, confirmAction, h, progressBar } from './dom'
import { ago, duration, isDelayed, relative, when } from './format'
import { appendOutput, eventsFor, loadEvents, resetEvents, stack } from './output'
import { parseRoute } from './router'
import { canChange } from './state'
import { resetTree, showChildren } from './tree'
import type { MonitorHandle, Process } from './types'

type Action = 'cancel' | 'retry' | 'approve' | 'discard' | 'run-now'

let handle: MonitorHandle | null = null

const current = (id: number) => {
  const route = parseRoute()
  return route.view === 'detail' && route.id === id
}

export function stopDetail() {
  handle?.stop()
  handle = null
}

export function followDetail(id: number) {
  stopDetail()
  resetEvents(id)
  resetTree(id)
  $('process-detail').replaceChildren(h('p', { class: 'muted', text: `Loading #${id}…` }))
  void loadEvents()
  const show = (p: Process) => {
    if (!current(id)) return
    clearLoadError()
    renderDetail(p)
    eventsFor(p)
    showChildren(p)
  }
  handle = monitorProcess('', id, {
    onOutput: ({ chunk }) => {
      if (current(id)) appendOutput(chunk)
    },
    onUpdate: show,
    onDone: show,
    onError: (error) => {
      if (!current(id)) return
      if (error.status === 404)
        $('process-detail').replaceChildren(
          h('p', { class: 'muted', 'data-testid': 'not-found', text: `Process #${id} is not in this workspace, or does not exist.` }),
        )
      else showError(error)
    },
  })
}

const CONFIRM: Partial<Record<Action, (p: Process) => string>> = {
  cancel: (p) => `Cancel #${p.id} (${p.type})? Its worker is told to stop at once.`,
  discard: (p) => `Discard the result of #${p.id}? It ends cancelled.`,
}

async function act(p: Process, action: Action) {
  const ask = CONFIRM[action]
  if (ask && !(await confirmAction(ask(p)))) return
  try {
    const review = action === 'approve' || action === 'discard'
    const changed = await post<Process>(review ? `/processes/${p.id}/review` : `/processes/${p.id}/${action}`, review ? { decision: action } : undefined)
    if (!current(p.id)) return
    renderDetail(changed)
    eventsFor(changed)
    // Retried: pending again, so its stream (ended at `done`) is followed anew.
    if (changed.status === 'pending' && p.status !== 'pending') followDetail(p.id)
  } catch (e) {
    showError(e, 'action')
  }
}

const field = (name: string, value: Node | string, testid?: string) => [h('dt', { text: name }), h('dd', { 'data-testid': testid }, value)]

export function renderDetail(p: Process) {
  const delayed = isDelayed(p)
  const buttons: HTMLButtonElement[] = []
  const button = (label: string, action: Action, cls = '') => {
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
  if (delayed) button('Run now', 'run-now')
  if (p.status === 'pending' || p.status === 'running') button('Cancel', 'cancel', 'danger')
  if (p.status === 'failed') button('Retry', 'retry')
  if (p.status === 'waiting_review') {
    button('Approve', 'approve')
    button('Discard', 'discard', 'danger')
  }
  const json = (value: unknown) => h('pre', { text: JSON.stringify(value, null, 2) })
  const attemptsLeft = p.status === 'failed' && p.attempts >= p.max_attempts ? ' (none left)' : ''
  $('process-detail').replaceChildren(
    h(
      'div',
      { class: 'detail-head' },
      h('h2', { text: `#${p.id} ${p.type}` }),
      delayed
        ? h('span', { class: 'badge scheduled', 'data-testid': 'status', 'data-delayed': '', text: 'scheduled' })
        : h('span', { class: `badge ${p.status}`, 'data-testid': 'status', text: p.status }),
      h('div', { class: 'actions' }, ...buttons),
    ),
    h(
      'div',
      { class: 'progress-line' },
      progressBar(p.progress, p.status, true),
      h('span', { class: 'pct', text: `${p.progress}%` }),
      h('span', { class: 'muted', text: p.message ?? '' }),
    ),
    h(
      'dl',
      { class: 'fields' },
      ...field('Status', delayed ? `pending, scheduled: runs ${relative(p.run_at)}` : p.status),
      ...field('Run at', `${when(p.run_at)}${p.status === 'pending' ? ` (${relative(p.run_at)})` : ''}`, 'run-at'),
      ...field('Priority', String(p.priority), 'priority'),
      ...field('Attempts', `${p.attempts} of ${p.max_attempts}${attemptsLeft}`, 'attempts'),
      ...field('Created', `${when(p.created_at)} (${ago(p.created_at)} ago)`),
      ...field('Started', when(p.started_at)),
      ...field('Finished', when(p.finished_at)),
      ...field('Duration', duration(p)),
      ...field('Worker', p.worker_id ?? '—'),
      ...field('Version', String(p.version)),
      ...(p.tags.length ? field('Tags', p.tags.join(', ')) : []),
      ...(p.parent_id !== null ? field('Parent', h('a', { href: `#/processes/${p.parent_id}`, 'data-testid': 'parent-link', text: `#${p.parent_id}` })) : []),
      ...(p.error
        ? field('Error', h('div', {}, h('span', { class: 'error-text', 'data-testid': 'error', text: p.error }), p.error_stack ? stack(p.error_stack) : null))
        : []),
    ),
    h(
      'div',
      { class: 'columns' },
      h('div', {}, h('h3', { text: 'Metadata' }), json(p.metadata)),
      h('div', {}, h('h3', { text: 'Result' }), json(p.result_summary)),
    ),
  )
}
