// Bulk actions. "Select all" acts by filter on the server (POST /processes/bulk: a dry run first, whose count
// the confirm dialog shows, then the action itself); ticked rows go one by one through the single routes.
// Either way the selection is cleared afterwards, and the list and counts reload.
import { ApiError, post } from './api'
import { showError } from './banner'
import { confirmAction } from './dom'
import { loadList } from './list'
import { filterParams, type ListRoute, listRoute } from './router'
import { clearSelection, selection } from './selection'
import { session } from './state'
import { refreshCounts } from './tabs'
import type { BulkAction, BulkFilter, BulkResult } from './types'

const VERB = { cancel: 'Cancel', retry: 'Retry', discard: 'Discard' } as const
const WHAT = {
  cancel: 'Pending and running ones end cancelled; their workers are told at once.',
  retry: 'Failed ones go back to pending for a worker to claim.',
  discard: 'Results waiting for review are discarded: those end cancelled.',
} as const

const plural = (n: number) => `${n} process${n === 1 ? '' : 'es'}`

function describe(route: ListRoute): string {
  const parts = [...filterParams(route)].map(([k, v]) => `${k} ${v}`)
  return parts.length ? `matching ${parts.join(', ')}` : 'in this workspace'
}

export async function bulk(action: BulkAction) {
  const route = listRoute()
  if (!route) return
  try {
    if (selection.all) await byFilter(action, route)
    else await byIds(action, [...selection.ids])
  } catch (e) {
    showError(e, 'action')
  }
  clearSelection()
  await Promise.all([loadList(), refreshCounts()])
}

async function byFilter(action: BulkAction, route: ListRoute) {
  const filter: BulkFilter = { workspace_id: session.workspaceId, ...Object.fromEntries(filterParams(route)) }
  const preview = await post<BulkResult>('/processes/bulk', { action, filter, dry_run: true })
  if (preview.matched === 0) throw new Error(`${VERB[action]}: nothing ${describe(route)} can be changed that way.`)
  if (!(await confirmAction(`${VERB[action]} ${plural(preview.matched)} ${describe(route)}? ${WHAT[action]}`))) return
  const result = await post<BulkResult>('/processes/bulk', { action, filter, dry_run: false })
  const changed = result.changed ?? 0
  if (changed < result.matched)
    showError(new Error(`${VERB[action]}: ${changed} of ${result.matched} changed (the others changed status meanwhile).`), 'action')
}

async function byIds(action: BulkAction, ids: number[]) {
  if (ids.length === 0) return
  if (!(await confirmAction(`${VERB[action]} ${plural(ids.length)} (the ticked rows)? ${WHAT[action]}`))) return
  const one = (id: number) => (action === 'discard' ? post(`/processes/${id}/review`, { decision: 'discard' }) : post(`/processes/${id}/${action}`))
  const results = await Promise.allSettled(ids.map(one))
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed.length > 0) {
    const reason = failed[0]!.reason
    const why = reason instanceof ApiError && reason.status === 409 ? 'not in a status that allows it' : (reason as Error).message
    showError(new Error(`${failed.length} of ${ids.length} not changed: ${why}`), 'action')
  }
}
