// A page's script for the browser tests: useProcessMonitor rendered by React, its state kept in window.hookState.
import { createElement } from 'react'
import { createRoot } from 'react-dom/client'
// The sources, as the dashboard is built from them (dist/ is made only by npm pack).
import { type UseProcessMonitorOptions, useProcessMonitor } from '../../packages/client/src/react.ts'

interface HookWindow {
  hookState: { connection: string | null; error: { code: string; message: string } | null; done: boolean }
  renderHook(id: number, options: UseProcessMonitorOptions): void
}
const page = window as unknown as HookWindow

function Follow({ id, options }: { id: number; options: UseProcessMonitorOptions }) {
  const { connection, error, done } = useProcessMonitor(id, options)
  page.hookState = { connection, error: error && { code: error.code, message: error.message }, done }
  return null
}

page.renderHook = (id, options) => {
  const root = document.createElement('div')
  document.body.append(root)
  createRoot(root).render(createElement(Follow, { id, options }))
}
