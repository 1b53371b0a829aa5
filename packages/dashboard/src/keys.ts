// Keyboard navigation: j / ↓ and k / ↑ move the cursor in the list, Enter (or o) opens the process under it,
// Esc goes back to the list (or leaves the search box, or closes a dialog), / focuses the search, ? the help.
import { $ } from './dom'
import { parseRoute } from './router'

export const KEYS: [string, string][] = [
  ['j  ↓', 'next process in the list'],
  ['k  ↑', 'previous process'],
  ['Enter  o', 'open the process under the cursor'],
  ['Esc', 'back to the list (from a process), out of the search box'],
  ['/', 'search'],
  ['g then p / w / q / c', 'go to Processes, Workers, Queues, Charts'],
  ['?', 'this help'],
]

let lastListHash = '#/processes'
let pendingG = false

export function rememberList() {
  if (parseRoute().view === 'processes') lastListHash = location.hash || '#/processes'
}

function rows(): HTMLElement[] {
  return [...document.querySelectorAll<HTMLElement>('#process-rows tr[data-testid="process-row"]')]
}

function moveCursor(by: number) {
  const all = rows()
  if (all.length === 0) return
  const at = all.findIndex((r) => r.classList.contains('cursor'))
  const next = all[at === -1 ? (by > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, at + by))]!
  for (const r of all) r.classList.toggle('cursor', r === next)
  next.setAttribute('aria-current', 'true')
  for (const r of all) if (r !== next) r.removeAttribute('aria-current')
  next.scrollIntoView({ block: 'nearest' })
}

const GO: Record<string, string> = { p: '#/processes', w: '#/workers', q: '#/queues', c: '#/charts' }

export function onKey(event: KeyboardEvent) {
  if (event.ctrlKey || event.metaKey || event.altKey) return
  const target = event.target as HTMLElement
  const typing = target.matches('input, textarea, select') || target.isContentEditable
  if (typing) {
    if (event.key === 'Escape') target.blur()
    return
  }
  if (document.querySelector('dialog[open]')) return
  const view = parseRoute().view
  if (pendingG) {
    pendingG = false
    if (GO[event.key]) {
      location.hash = GO[event.key]!
      return event.preventDefault()
    }
  }
  switch (event.key) {
    case 'g':
      pendingG = true
      return
    case '/':
      // From another view: the list first (its hashchange shows it), then the box.
      if (view !== 'processes') {
        window.addEventListener('hashchange', () => $('search-q').focus(), { once: true })
        location.hash = lastListHash
      } else $('search-q').focus()
      return event.preventDefault()
    case '?':
      $<HTMLDialogElement>('help-dialog').showModal()
      return event.preventDefault()
    case 'Escape':
      if (view === 'detail') location.hash = lastListHash
      return
  }
  if (view !== 'processes') return
  if (event.key === 'j' || event.key === 'ArrowDown') {
    moveCursor(1)
    event.preventDefault()
  } else if (event.key === 'k' || event.key === 'ArrowUp') {
    moveCursor(-1)
    event.preventDefault()
  } else if (event.key === 'Enter' || event.key === 'o') {
    // Enter on a focused link or button is theirs.
    if (event.key === 'Enter' && target.closest('a, button, summary')) return
    const row = rows().find((r) => r.classList.contains('cursor'))
    if (row) location.hash = `#/processes/${row.dataset.id}`
  }
}
