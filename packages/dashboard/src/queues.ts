// The queues page (GET /queues): per type pending (due of them), running, the age of the oldest due one,
// finished in the last minute, its rate limit, paused or not (pause/resume for admins), and the schedules
// with their next runs. Live: the workspace stream's changes redraw it (at most once a second).
import { api, post } from './api'
import { showError } from './banner'
import { $, h } from './dom'
import { seconds, span } from './format'
import { parseRoute } from './router'
import { canAdmin, wsQuery } from './state'
import type { Queue, Schedule } from './types'

let timer: ReturnType<typeof setTimeout> | null = null
export function refreshQueuesSoon() {
  if (timer || parseRoute().view !== 'queues') return
  timer = setTimeout(() => {
    timer = null
    if (parseRoute().view === 'queues') void renderQueues()
  }, 1000)
}

export async function renderQueues() {
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
  $('queue-rows').replaceChildren(...queues.map(queueRow))
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

function queueRow(q: Queue): HTMLTableRowElement {
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
    h('td', {}, h('a', { class: 'mono', href: `#/processes?type=${encodeURIComponent(q.type)}`, text: q.type })),
    h('td', { class: 'num', title: `${q.due} due now`, text: q.due === q.pending ? String(q.pending) : `${q.pending} (${q.due} due)` }),
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
}

async function setPaused(type: string, action: 'pause' | 'resume') {
  try {
    await post(`/queues/${encodeURIComponent(type)}/${action}?${wsQuery()}`)
  } catch (e) {
    showError(e, 'action')
  }
  await renderQueues()
}
