// Times and durations as the console shows them: compact in tables, whole in the detail view.

/** "4s", "12m", "3h 5m", "2d 1h": compact, for a dense table. */
export function span(ms: number): string {
  const sec = Math.max(0, Math.round(ms / 1000))
  if (sec < 60) return `${sec}s`
  if (sec < 3600) return `${Math.floor(sec / 60)}m${sec % 60 ? ` ${sec % 60}s` : ''}`
  if (sec < 86_400) return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`
  return `${Math.floor(sec / 86_400)}d ${Math.floor((sec % 86_400) / 3600)}h`
}

export const ago = (iso: string | null | undefined) => (iso ? span(Date.now() - Date.parse(iso)) : '—')

export function duration(p: { started_at?: string | null; finished_at?: string | null }): string {
  if (!p.started_at) return '—'
  const end = p.finished_at ? Date.parse(p.finished_at) : Date.now()
  return span(end - Date.parse(p.started_at))
}

/** Seconds as "120ms", "4.2s", "35s", "3m 20s". */
export const seconds = (v: number) => (v < 1 ? `${Math.round(v * 1000)}ms` : v < 120 ? `${v.toFixed(v < 10 ? 1 : 0)}s` : span(v * 1000))

/** A moment in full, in the browser's locale and zone. */
export const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : '—')

/** A pending process whose run_at is still ahead: scheduled (delayed or backing off before a retry). */
export const isDelayed = (p: { status: string; run_at?: string }) => p.status === 'pending' && !!p.run_at && Date.parse(p.run_at) > Date.now()

/** "in 4m" / "4m ago". */
export function relative(iso: string): string {
  const ms = Date.parse(iso) - Date.now()
  return ms > 0 ? `in ${span(ms)}` : `${span(-ms)} ago`
}

/** An axis label: the time, with the day in front where the axis spans more than one day. */
export function axisLabel(iso: string, withDay: boolean): string {
  const d = new Date(iso)
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  return withDay ? `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}` : time
}
