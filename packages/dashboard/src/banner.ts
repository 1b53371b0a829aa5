// The error banner. An error from loading (a list, a stream, a page's figures) is stale once any request is
// answered again or the view changes; an error from an action the user took stays until they navigate or
// dismiss it, so it cannot flash away before it is read.
import { ApiError } from './api'
import { $ } from './dom'
import { session } from './state'

let shown: 'load' | 'action' | null = null

export function showError(error: unknown, kind: 'load' | 'action' = 'load') {
  const message =
    error instanceof ApiError && error.status === 403
      ? `Not allowed: ${error.message} (your role in this workspace is ${session.role}; viewers can only look)`
      : error instanceof Error
        ? error.message
        : String(error)
  $('error-text').textContent = message
  $('error-banner').hidden = false
  shown = kind === 'action' || shown === 'action' ? 'action' : 'load'
}

/** A request was answered, or the stream is live again: a loading error no longer holds. */
export function clearLoadError() {
  if (shown !== 'load') return
  $('error-banner').hidden = true
  shown = null
}

/** The view changed (or the user dismissed it): no error of the last view belongs here. */
export function clearError() {
  $('error-banner').hidden = true
  shown = null
}
