// Small DOM helpers: no framework, no inline style (the CSP allows none); widths go through the CSSOM.

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T

type Props = Record<string, string | number | boolean | undefined>

/** An element with attributes (`text` is its text, `class` its class) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: (Node | string | null)[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue
    if (key === 'text') el.textContent = String(value)
    else if (key === 'class') el.className = String(value)
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  for (const child of children) if (child !== null) el.append(child)
  return el
}

const SVG = 'http://www.w3.org/2000/svg'
export function s(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag)
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value))
  if (text !== undefined) el.textContent = text
  return el
}

/** A progress bar: the width through the CSSOM, so the CSP needs no 'unsafe-inline' for styles. */
export function progressBar(progress: number, status: string, wide = false): HTMLElement {
  const fill = h('div', { class: `fill ${status}` })
  fill.style.width = `${progress}%`
  return h(
    'div',
    {
      class: `bar${wide ? ' wide' : ''}`,
      role: 'progressbar',
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': progress,
      'data-testid': 'progress-bar',
    },
    fill,
  )
}

/** The confirm dialog: resolves true on "Confirm". */
export function confirmAction(text: string): Promise<boolean> {
  const dialog = $<HTMLDialogElement>('confirm-dialog')
  $('confirm-text').textContent = text
  dialog.returnValue = ''
  dialog.showModal()
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true }))
}
