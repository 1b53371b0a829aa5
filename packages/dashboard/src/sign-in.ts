// Sign-in: a pasted API token is exchanged for the HttpOnly ps_session cookie (POST /auth/session); the page
// never holds the token. Sign-out ends the session (and its streams).
import { ApiError, api } from './api'
import { $ } from './dom'

const VIEWS = ['processes-view', 'detail-view', 'workers-view', 'charts-view', 'queues-view']

export function showSignIn(stop: () => void) {
  for (const id of VIEWS) $(id).hidden = true
  $('nav').hidden = true
  $('session').hidden = true
  $('no-worker-warning').hidden = true
  $('sign-in-view').hidden = false
  stop()
  $('token-input').focus()
}

export function hideSignIn() {
  $('sign-in-view').hidden = true
  $('nav').hidden = false
  $('session').hidden = false
}

export async function signIn(event: SubmitEvent, signedIn: () => Promise<void>) {
  event.preventDefault()
  const input = $<HTMLInputElement>('token-input')
  const error = $('sign-in-error')
  error.hidden = true
  try {
    await api('/auth/session', { method: 'POST', body: JSON.stringify({ token: input.value.trim() }) })
    input.value = ''
    await signedIn()
  } catch (e) {
    error.textContent =
      e instanceof ApiError && e.status === 401
        ? 'That token was not accepted (unknown, expired or revoked).'
        : e instanceof ApiError && e.status === 404
          ? 'This server has no sign-in endpoint (POST /auth/session).'
          : `Sign-in failed: ${(e as Error).message}`
    error.hidden = false
  }
}

export async function signOut() {
  await api('/auth/session', { method: 'DELETE' }).catch(() => {})
}
