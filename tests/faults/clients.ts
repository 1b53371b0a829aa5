// Every HTTP status the fault scenarios' clients see (a 5xx anywhere fails a scenario): a JSON API client here;
// their EventSources are tests/support/sse-client.ts openStream, told `traffic.record` as onResponse.

export interface Seen {
  url: string
  status: number
  at: number
}

/** Every response any client of a scenario received. */
export class Traffic {
  readonly seen: Seen[] = []

  readonly record = (url: string, status: number) => {
    this.seen.push({ url, status, at: Date.now() })
  }

  get serverErrors(): Seen[] {
    return this.seen.filter((s) => s.status >= 500)
  }

  async json(url: string, init: RequestInit & { token?: string } = {}): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = { ...(init.headers as Record<string, string>) }
    if (init.token) headers.authorization = `Bearer ${init.token}`
    if (init.body) headers['content-type'] ??= 'application/json'
    const response = await fetch(url, { ...init, headers, signal: init.signal ?? AbortSignal.timeout(15_000) })
    this.record(url, response.status)
    const text = await response.text()
    return { status: response.status, body: text ? JSON.parse(text) : null }
  }
}
