// The server's REST API from the page: same-origin, the HttpOnly session cookie, JSON both ways, and the
// contract's error body turned into an ApiError. A 401 anywhere but /auth/ sends the page to sign-in.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** Set by main.ts: what a 401 does, and what any answered request does (it clears a stale error banner). */
export const apiHooks = {
  unauthenticated: () => {},
  answered: () => {},
}

async function request(path: string, init: RequestInit): Promise<{ response: Response; body: unknown }> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (init.body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) }, credentials: 'same-origin' })
  const text = await response.text()
  let body: unknown = null
  try {
    body = text ? JSON.parse(text) : null
  } catch {
    throw new ApiError(response.status, `http_${response.status}`, `The server answered ${response.status} with a body that is not JSON`)
  }
  if (!response.ok) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error
    if (response.status === 401 && !path.startsWith('/auth/')) apiHooks.unauthenticated()
    throw new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? `HTTP ${response.status}`)
  }
  apiHooks.answered()
  return { response, body }
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  return (await request(path, init)).body as T
}

/** A page of a cursor-paged list: its items and the `before` of the next page (the Link header), or null. */
export async function apiPage<T>(path: string): Promise<{ items: T[]; before: number | null }> {
  const { response, body } = await request(path, {})
  const next = /<[^>]*[?&]before=(\d+)[^>]*>;\s*rel="next"/.exec(response.headers.get('link') ?? '')
  return { items: body as T[], before: next ? Number(next[1]) : null }
}

export const post = <T>(path: string, body?: unknown) => api<T>(path, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) })
