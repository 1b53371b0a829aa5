// What a bulk action applies to: the ticked rows, or, with "select all" ticked, everything the filter matches
// (on the server, every page included, not only the rows loaded here).
import { $ } from './dom'
import { listRoute } from './router'
import { tabCount } from './tabs'

export const selection = { ids: new Set<number>(), all: false }

export function clearSelection() {
  selection.ids.clear()
  selection.all = false
  $<HTMLInputElement>('select-all').checked = false
  for (const box of document.querySelectorAll<HTMLInputElement>('input.select')) box.checked = false
  updateBulk()
}

export function selectAll(on: boolean) {
  selection.all = on
  selection.ids.clear()
  for (const box of document.querySelectorAll<HTMLInputElement>('input.select')) {
    box.checked = on
    if (on) selection.ids.add(Number(box.closest('tr')!.dataset.id))
  }
  updateBulk()
}

/** The bulk buttons' labels: "(n)" ticked, or "all (m)" matching. */
export function updateBulk() {
  const route = listRoute()
  const total = route ? tabCount(route) : null
  const label = selection.all ? `all matching${total === null ? '' : ` (${total})`}` : `selected (${selection.ids.size})`
  const none = !selection.all && selection.ids.size === 0
  for (const [id, verb] of [
    ['bulk-retry', 'Retry'],
    ['bulk-cancel', 'Cancel'],
    ['bulk-discard', 'Discard'],
  ] as const) {
    const button = $<HTMLButtonElement>(id)
    button.disabled = none
    button.textContent = `${verb} ${label}`
  }
}
