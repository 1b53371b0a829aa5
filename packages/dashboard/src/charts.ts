// The charts (GET /processes/stats): throughput per bucket, and wait and run time p50/p95, drawn here as
// inline SVG. The time axis has a tick per few buckets, with the date where the window spans days.
import { api } from './api'
import { showError } from './banner'
import { $, s } from './dom'
import { axisLabel, seconds } from './format'
import { wsQuery } from './state'
import type { Bucket, Stats } from './types'

const W = 640
const H = 170
const PAD = { left: 48, right: 12, top: 10, bottom: 30 }
const X_TICKS = 5

function frame(max: number, format: (v: number) => string, buckets: Bucket[], bucketSeconds: number): SVGElement {
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' })
  const y0 = H - PAD.bottom
  const plot = H - PAD.top - PAD.bottom
  svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y0, y2: y0, class: 'axis' }))
  svg.append(s('line', { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: y0, class: 'axis' }))
  for (const f of [0, 0.5, 1]) {
    const y = y0 - f * plot
    if (f > 0) svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: 'grid-line' }))
    svg.append(s('text', { x: PAD.left - 4, y: y + 4, class: 'label end', 'data-testid': 'y-label' }, format(max * f)))
  }
  if (buckets.length === 0) return svg
  const first = Date.parse(buckets[0]!.start)
  const last = Date.parse(buckets.at(-1)!.start) + bucketSeconds * 1000
  const withDay = new Date(first).toDateString() !== new Date(last - 1).toDateString() || last - first > 86_400_000
  const step = (W - PAD.left - PAD.right) / buckets.length
  const every = Math.max(1, Math.ceil(buckets.length / X_TICKS))
  for (let i = 0; i <= buckets.length; i += every) {
    const x = PAD.left + i * step
    const at = new Date(first + i * bucketSeconds * 1000).toISOString()
    svg.append(s('line', { x1: x, x2: x, y1: y0, y2: y0 + 4, class: 'axis' }))
    const anchor = i === 0 ? 'label' : i + every > buckets.length ? 'label end' : 'label middle'
    svg.append(s('text', { x, y: H - 10, class: anchor, 'data-testid': 'x-label' }, axisLabel(at, withDay)))
  }
  return svg
}

function barChart(stats: Stats): SVGElement {
  const buckets = stats.buckets
  const max = Math.max(1, ...buckets.map((b) => b.completed + b.failed + b.cancelled))
  const svg = frame(max, (v) => String(Math.round(v)), buckets, stats.bucket_seconds)
  const width = (W - PAD.left - PAD.right) / Math.max(1, buckets.length)
  const scale = (H - PAD.top - PAD.bottom) / max
  buckets.forEach((b, i) => {
    let y = H - PAD.bottom
    for (const [key, value] of [
      ['completed', b.completed],
      ['failed', b.failed],
      ['cancelled', b.cancelled],
    ] as const) {
      if (value === 0) continue
      const height = value * scale
      y -= height
      const rect = s('rect', { x: PAD.left + i * width + 1, y, width: Math.max(1, width - 2), height, class: `bar-${key}`, 'data-testid': 'bar' })
      rect.append(s('title', {}, `${new Date(b.start).toLocaleString()}: ${value} ${key}`))
      svg.append(rect)
    }
  })
  return svg
}

function lineChart(stats: Stats, p50: (b: Bucket) => number | null, p95: (b: Bucket) => number | null): SVGElement {
  const buckets = stats.buckets
  const values = buckets.flatMap((b) => [p50(b), p95(b)]).filter((v): v is number => v !== null)
  const max = Math.max(0.001, ...values)
  const svg = frame(max, seconds, buckets, stats.bucket_seconds)
  const step = (W - PAD.left - PAD.right) / Math.max(1, buckets.length)
  const scale = (H - PAD.top - PAD.bottom) / max
  for (const [cls, pick] of [
    ['p95', p95],
    ['p50', p50],
  ] as const) {
    const points = buckets.flatMap((b, i) => {
      const v = pick(b)
      return v === null ? [] : [[PAD.left + (i + 0.5) * step, H - PAD.bottom - v * scale, b.start, v] as const]
    })
    if (points.length > 1) svg.append(s('polyline', { points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '), class: `line-${cls}` }))
    for (const [x, y, start, v] of points) {
      const dot = s('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5, class: `dot-${cls}`, 'data-testid': 'point' })
      dot.append(s('title', {}, `${new Date(start).toLocaleString()}: ${cls} ${seconds(v)}`))
      svg.append(dot)
    }
  }
  if (values.length === 0) svg.append(s('text', { x: W / 2, y: H / 2, class: 'label middle' }, 'no data in this window'))
  return svg
}

export async function renderCharts() {
  const window = $<HTMLSelectElement>('chart-window').value
  try {
    const stats = await api<Stats>(`/processes/stats?${wsQuery()}&window=${window}`)
    $('chart-throughput').replaceChildren(barChart(stats))
    $('chart-wait').replaceChildren(
      lineChart(
        stats,
        (b) => b.wait_p50_s,
        (b) => b.wait_p95_s,
      ),
    )
    $('chart-run').replaceChildren(
      lineChart(
        stats,
        (b) => b.run_p50_s,
        (b) => b.run_p95_s,
      ),
    )
  } catch (e) {
    showError(e)
  }
}
