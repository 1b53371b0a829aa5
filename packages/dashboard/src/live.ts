// The workspace stream (monitorWorkspace: one SSE connection for every process of the workspace): each
// change goes to the list and the counts, and redraws the queues or workers page; the badge shows the connection.
import { monitorWorkspace } from '@processes/client'
import { clearLoadError, showError } from './banner'
import { $ } from './dom'
import { applyUpdate, loadList } from './list'
import { refreshQueuesSoon } from './queues'
import { listRoute } from './router'
import { session } from './state'
import { refreshCounts } from './tabs'
import type { ConnectionState, MonitorHandle } from './types'
import { refreshWorkersSoon } from './workers'

let stream: MonitorHandle | null = null

export function startStream() {
  stream?.stop()
  const badge = $('connection')
  stream = monitorWorkspace('', {
    workspaceId: session.workspaceId,
    onUpdate: (process) => {
      applyUpdate(process)
      refreshQueuesSoon()
      refreshWorkersSoon()
    },
    // Changes may have been missed while it was away: the list's first page and the counts again.
    onReconnect: () => {
      if (listRoute()) void Promise.all([loadList(), refreshCounts()])
    },
    onConnectionState: (connection: ConnectionState) => {
      badge.dataset.state = connection
      badge.textContent = connection === 'open' ? 'live' : connection
      if (connection === 'open') clearLoadError()
    },
    onError: (error) => showError(error),
  })
}

export function stopStream() {
  stream?.stop()
  stream = null
}
