// The workers page (GET /workers): who is connected, what they claim, their leases; and on every view the
// warning about pending work of a type no connected worker claims.
import { api } from './api'
import { showError } from './banner'
import { $, h } from './dom'
import { ago } from './format'
import { parseRoute } from './router'
import { session, wsQuery } from './state'
import type { Workers } from './types'

let timer: ReturnType<typeof setTimeout> | null = null
/** A change on the workspace stream: the workers page again, at most once a second, while it is shown. */
export function refreshWorkersSoon() {
  if (timer || parseRoute().view !== 'workers') return
  timer = setTimeout(() => {
    timer = null
    if (parseRoute().view === 'workers') void refreshWorkers(true)
  }, 1000)
}

export async function refreshWorkers(render: boolean) {
  if (!session.workspaceId) return
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
