// A parent's children pane: the counts from its live state, and its children oldest first, a page at a time
// (GET /processes/{id}/children, `after` an id), each linking to its own detail.
import { api } from './api'
import { showError } from './banner'
import { $, h } from './dom'
import type { Process } from './types'

const PAGE = 50
const MAX_RELOAD = 1000

const tree = { id: 0, loaded: 0, total: -1, countsKey: '' }

export function resetTree(id: number) {
  tree.id = id
  tree.loaded = 0
  tree.total = -1
  tree.countsKey = ''
  $('children-card').hidden = true
  $('child-list').replaceChildren()
}

/** A state of the parent: its counts, and the loaded children again when the counts moved. */
export function showChildren(p: Process) {
  const c = p.children
  if (!c || p.id !== tree.id) return
  $('children-card').hidden = false
  $('children-total').textContent = String(c.total)
  $('child-counts').replaceChildren(
    ...(['pending', 'running', 'waiting_review', 'completed', 'failed', 'cancelled'] as const)
      .filter((k) => c[k] > 0)
      .map((k) => h('span', { class: `badge ${k}`, text: `${k} ${c[k]}` })),
  )
  const key = JSON.stringify(c)
  if (key === tree.countsKey) return
  tree.countsKey = key
  // The pages already shown, reloaded in one request, so "More children" keeps its place.
  void loadChildren(undefined, Math.min(MAX_RELOAD, Math.max(PAGE, tree.loaded)))
}

export async function loadChildren(after?: number, limit = PAGE) {
  const id = tree.id
  try {
    const page = await api<Process[]>(`/processes/${id}/children?limit=${limit}${after ? `&after=${after}` : ''}`)
    if (tree.id !== id) return
    const items = page.map((k) =>
      h(
        'li',
        { 'data-id': k.id },
        h('a', { href: `#/processes/${k.id}`, 'data-testid': 'child-link', text: `#${k.id}` }),
        h('span', { class: `badge ${k.status}`, text: k.status }),
        h('span', { text: `${k.type} · ${k.progress}%${k.message ? ` · ${k.message}` : ''}` }),
      ),
    )
    const list = $('child-list')
    if (after) list.append(...items)
    else list.replaceChildren(...items)
    tree.loaded = list.children.length
    const more = $<HTMLButtonElement>('child-more')
    more.hidden = page.length < limit
    more.onclick = () => void loadChildren(page.at(-1)?.id)
  } catch (e) {
    showError(e)
  }
}
