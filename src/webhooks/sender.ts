// One delivery attempt: the host resolved and checked (ssrf.ts), then a POST to the checked address itself
// (the Host header and the TLS server name stay the URL's), signed (signing.ts), with a deadline and no
// redirect followed (a 3xx is a failed attempt, as any answer but 2xx is).
import { RefusedTarget, resolveTarget } from './ssrf'
import { signedHeaders } from './signing'

export interface SendResult {
  ok: boolean
  status: number | null
  error: string | null
  latencyMs: number
}

/** The part of an answer's body read before it is dropped (nothing of it is kept). */
const MAX_BODY_READ = 64 * 1024

export async function sendDelivery(
  d: { url: string; secret: string; messageId: string; payload: string },
  o: { timeoutMs: number; allowPrivate: boolean; signal?: AbortSignal },
): Promise<SendResult> {
  const started = performance.now()
  const elapsed = () => Math.round(performance.now() - started)
  const signal = o.signal ? AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)]) : AbortSignal.timeout(o.timeoutMs)
  try {
    const url = new URL(d.url)
    const headers = signedHeaders(d.secret, d.messageId, d.payload)
    let target = d.url
    let tls: { serverName: string } | undefined
    if (!o.allowPrivate) {
      const { address, family } = await resolveTarget(url, false)
      const pinned = new URL(d.url)
      pinned.hostname = family === 6 ? `[${address}]` : address
      target = pinned.toString()
      headers.host = url.host
      if (url.protocol === 'https:') tls = { serverName: url.hostname.replace(/^\[|\]$/g, '') }
    }
    const response = await fetch(target, { method: 'POST', headers, body: d.payload, redirect: 'manual', signal, tls })
    await drain(response)
    const ok = response.status >= 200 && response.status < 300
    return {
      ok,
      status: response.status,
      error: ok ? null : `HTTP ${response.status}${response.status >= 300 && response.status < 400 ? ' (redirects are not followed)' : ''}`,
      latencyMs: elapsed(),
    }
  } catch (error) {
    const timedOut = (error as { name?: string }).name === 'TimeoutError' || (signal.aborted && !o.signal?.aborted)
    const message =
      error instanceof RefusedTarget
        ? error.message
        : timedOut
          ? `timed out after ${o.timeoutMs} ms`
          : o.signal?.aborted
            ? 'the instance stopped before an answer came'
            : `${(error as { code?: string }).code ?? 'error'}: ${(error as Error).message ?? String(error)}`
    return { ok: false, status: null, error: message.slice(0, 500), latencyMs: elapsed() }
  }
}

/** Reads (up to MAX_BODY_READ) and drops the answer's body, so the connection can be reused. */
async function drain(response: Response) {
  if (!response.body) return
  const reader = response.body.getReader()
  let read = 0
  try {
    while (read < MAX_BODY_READ) {
      const { done, value } = await reader.read()
      if (done) return
      read += value.byteLength
    }
    await reader.cancel()
  } catch {
    // The status is what counts; a body cut short changes nothing.
  }
}
