// Counters and gauges rendered as Prometheus text. Gauges, and counters kept by their owners, are read at
// scrape time.
export class Metrics {
  /** Per method+route, per status: the count and total time. Nested maps: no key string built per request. */
  private readonly requests = new Map<string, Map<number, { labels: string; count: number; ms: number }>>()
  readonly counters = {
    redis_publishes: 0,
    progress_frames: 0,
    progress_writes: 0,
    progress_statements: 0,
    worker_frames: 0,
    sse_connects: 0,
    sweeps_failed_processes: 0,
  }
  private readonly gauges = new Map<string, () => number>()
  private readonly ownedCounters = new Map<string, { help: string; read: () => number }>()
  /** How late a 250 ms timer fired, last sample: the event loop's lag. */
  eventLoopLagMs = 0
  /** Commit-to-delivery time of the last change that arrived from another instance through Redis. */
  hubLagMs = 0
  private lagTimer: Timer | null = null

  startLagMonitor(intervalMs = 250) {
    let expected = performance.now() + intervalMs
    this.lagTimer ??= setInterval(() => {
      const now = performance.now()
      this.eventLoopLagMs = Math.max(0, now - expected)
      expected = now + intervalMs
    }, intervalMs)
    this.lagTimer.unref?.()
  }

  stopLagMonitor() {
    if (this.lagTimer) clearInterval(this.lagTimer)
    this.lagTimer = null
  }

  request(method: string, route: string, status: number, ms: number) {
    const key = method + ' ' + route
    let byStatus = this.requests.get(key)
    if (byStatus === undefined) this.requests.set(key, (byStatus = new Map()))
    let sample = byStatus.get(status)
    if (sample === undefined) {
      const labels = `method="${method}",route="${route.replaceAll('"', '')}",status="${status}"`
      byStatus.set(status, (sample = { labels, count: 0, ms: 0 }))
    }
    sample.count++
    sample.ms += ms
  }

  private samples() {
    return [...this.requests.values()].flatMap((byStatus) => [...byStatus.values()])
  }

  gauge(name: string, read: () => number) {
    this.gauges.set(name, read)
  }

  /** A counter its owner keeps (e.g. the hub's), rendered as `processes_<name>_total`. */
  counter(name: string, help: string, read: () => number) {
    this.ownedCounters.set(name, { help, read })
  }

  render(): string {
    const out: string[] = []
    out.push('# HELP processes_http_requests_total HTTP requests by route and status.')
    out.push('# TYPE processes_http_requests_total counter')
    const samples = this.samples()
    for (const { labels, count } of samples) out.push(`processes_http_requests_total{${labels}} ${count}`)
    out.push('# HELP processes_http_request_duration_ms_sum Total time spent answering, in ms.')
    out.push('# TYPE processes_http_request_duration_ms_sum counter')
    for (const { labels, ms } of samples) out.push(`processes_http_request_duration_ms_sum{${labels}} ${ms.toFixed(3)}`)
    for (const [name, value] of Object.entries(this.counters)) {
      out.push(`# TYPE processes_${name}_total counter`, `processes_${name}_total ${value}`)
    }
    for (const [name, { help, read }] of this.ownedCounters) {
      out.push(`# HELP processes_${name}_total ${help}`, `# TYPE processes_${name}_total counter`, `processes_${name}_total ${read()}`)
    }
    const { progress_frames, progress_writes } = this.counters
    out.push('# HELP processes_progress_coalescing_ratio Progress frames accepted per row written.')
    out.push('# TYPE processes_progress_coalescing_ratio gauge')
    out.push(`processes_progress_coalescing_ratio ${progress_writes === 0 ? 0 : (progress_frames / progress_writes).toFixed(3)}`)
    out.push('# HELP processes_event_loop_lag_ms How late the last 250 ms timer fired.')
    out.push('# TYPE processes_event_loop_lag_ms gauge', `processes_event_loop_lag_ms ${this.eventLoopLagMs.toFixed(3)}`)
    out.push('# HELP processes_hub_lag_ms Commit-to-delivery time of the last change received from another instance.')
    out.push('# TYPE processes_hub_lag_ms gauge', `processes_hub_lag_ms ${this.hubLagMs.toFixed(3)}`)
    for (const [name, read] of this.gauges) {
      out.push(`# TYPE processes_${name} gauge`, `processes_${name} ${read()}`)
    }
    return out.join('\n') + '\n'
  }
}
