// bench webhooks: the delivery loop of one instance.
//
// Throughput: BACKLOG process.created deliveries (written by the outbox triggers as the processes are
// inserted, before the server starts) over ENDPOINTS webhooks of as many workspaces, sent to a local
// receiver that answers at once; the rate between the 10th and the 90th percentile of arrivals. Ceiling: a
// trivial sender (bench/ceilings/webhook-sender.ts) posting the same signed body to the same receiver with
// the concurrency the server has for these endpoints, no database.
//
// Isolation: FAST_WORKSPACES workspaces create processes at FAST_RATE each (POST /processes/batch every
// 100 ms), each with a webhook on an endpoint that answers at once; the delay from each event (its body's
// timestamp) to its arrival, first alone (the peer figure), then while another workspace creates SLOW_RATE
// processes a second for a webhook whose endpoint answers in 10 s.
import { loadavg } from 'node:os'
import { insertWebhook } from '../src/webhooks/queries'
import { newSecret } from '../src/webhooks/signing'
import {
  BENCH_DIR,
  BUN,
  type BenchTenant,
  Histogram,
  Report,
  type ServerChild,
  createBenchTenant,
  freshDatabase,
  procStat,
  sleep,
  spawnChild,
  startProcessesServer,
  startServer,
} from './lib'

const env = process.env
const BACKLOG = Number(env.BENCH_WEBHOOK_BACKLOG ?? 30_000)
const ENDPOINTS = Number(env.BENCH_WEBHOOK_ENDPOINTS ?? 8)
const FAST_WORKSPACES = Number(env.BENCH_WEBHOOK_FAST_WORKSPACES ?? 4)
const FAST_RATE = Number(env.BENCH_WEBHOOK_FAST_RATE ?? 100)
const SLOW_RATE = Number(env.BENCH_WEBHOOK_SLOW_RATE ?? 50)
const SLOW_MS = 10_000
const WARMUP_MS = Number(env.BENCH_WARMUP_MS ?? 2000)
const MEASURE_MS = Number(env.BENCH_MEASURE_MS ?? 10_000)
/** The server's defaults (src/config.ts): what the ceiling sender is given too. */
const WEBHOOK_CONCURRENCY = 256
const WEBHOOK_ENDPOINT_CONCURRENCY = 16
const GOAL_DELIVERIES_PER_S = 2000
const GOAL_P99_MS = 1000

type ReceiverReport = Record<string, { received: number; repeated: number; maxInFlight: number; delayMs: Parameters<typeof Histogram.fromJSON>[0] }>

const receiverReport = async (receiver: ServerChild) => (await (await fetch(`${receiver.url}/report`)).json()) as ReceiverReport
const resetReceiver = (receiver: ServerChild) => fetch(`${receiver.url}/reset`, { method: 'POST' }).then((r) => r.arrayBuffer())
const uptimeLoad = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')

/** Arrivals under names starting with `prefix`, summed. */
const arrivals = (r: ReceiverReport, prefix: string) => Object.entries(r).reduce((n, [name, s]) => n + (name.startsWith(prefix) ? s.received : 0), 0)

/**
 * Waits for `total` arrivals under `prefix`; returns the rate between the 10th and the 90th percentile of
 * them, and the share of a core `pid` (if given) used over that stretch.
 */
async function drainRate(receiver: ServerChild, prefix: string, total: number, pid?: number) {
  const deadline = Date.now() + 180_000
  let low: { at: number; n: number; cpu: number } | null = null
  let rate: { perSecond: number; cpuShare: number } | null = null
  while (Date.now() < deadline) {
    const n = arrivals(await receiverReport(receiver), prefix)
    const at = performance.now()
    const cpu = pid === undefined ? 0 : procStat(pid).cpuSeconds
    if (!low && n >= total * 0.1) low = { at, n, cpu }
    if (low && !rate && n >= total * 0.9) {
      const seconds = (at - low.at) / 1000
      rate = { perSecond: (n - low.n) / seconds, cpuShare: (cpu - low.cpu) / seconds }
    }
    if (rate && n >= total) return rate
    await sleep(50)
  }
  throw new Error(`only ${arrivals(await receiverReport(receiver), prefix)} of ${total} deliveries arrived within 180 s`)
}

async function throughput(report: Report, receiver: ServerChild) {
  const { url, db } = await freshDatabase()
  const tenants: BenchTenant[] = []
  for (let k = 0; k < ENDPOINTS; k++) {
    const tenant = await createBenchTenant(db)
    tenants.push(tenant)
    await insertWebhook(db.sql, {
      workspace_id: tenant.workspaceId,
      url: `${receiver.url}/fast/t${k}`,
      events: ['process.created'],
      types: null,
      tags: null,
      enabled: true,
      secret: newSecret(),
      created_by: tenant.userId,
    })
  }
  // The outbox triggers write one delivery per process as it is inserted (5,000 a statement).
  const perTenant = Math.ceil(BACKLOG / ENDPOINTS)
  for (const tenant of tenants) {
    for (let done = 0; done < perTenant; done += 5000) {
      await db.sql`
        insert into processes (workspace_id, type, metadata, message)
        select ${tenant.workspaceId}, 'bench_hook', jsonb_build_object('n', g), 'Queued' from generate_series(1, ${Math.min(5000, perTenant - done)}) g`
    }
  }
  const [{ n: backlog }] = (await db.sql`select count(*)::int as n from webhook_deliveries`) as unknown as [{ n: number }]
  const [{ payload, secret }] = (await db.sql`
    select d.payload, w.secret from webhook_deliveries d join webhooks w on w.id = d.webhook_id order by d.id limit 1`) as unknown as [
    { payload: string; secret: string },
  ]

  const server = await startProcessesServer('server (webhooks)', { DATABASE_URL: url, WEBHOOK_ALLOW_PRIVATE: 'on' })
  const real = await drainRate(receiver, 't', backlog, server.pid)
  await sleep(500) // the last outcomes recorded
  const left = await db.sql`select state, count(*)::int as n from webhook_deliveries where state <> 'succeeded' group by state`
  await server.stop()

  const concurrency = Math.min(WEBHOOK_CONCURRENCY, ENDPOINTS * WEBHOOK_ENDPOINT_CONCURRENCY)
  const sender = spawnChild('trivial webhook sender', [BUN, `${BENCH_DIR}ceilings/webhook-sender.ts`], {
    BENCH_SENDER: JSON.stringify({
      urls: Array.from({ length: ENDPOINTS }, (_, k) => `${receiver.url}/fast/c${k}`),
      count: backlog,
      concurrency,
      payload,
      secret,
    }),
  })
  const ceiling = await drainRate(receiver, 'c', backlog, sender.pid)
  const senderDone = await sender.nextMessage((m) => m.type === 'done', 60_000)
  await sender.stop()

  const repeated = arrivals(await receiverReport(receiver), 't') - backlog
  report.add({
    figure: `deliveries, one instance, ${ENDPOINTS} endpoints`,
    value: real.perSecond,
    unit: '/s',
    ceiling: ceiling.perSecond,
    ceilingLabel: `trivial sender, ${concurrency} in flight`,
    ratio: real.perSecond / ceiling.perSecond,
    goal: `≥ ${GOAL_DELIVERIES_PER_S.toLocaleString('en-US')}/s`,
    pass: real.perSecond >= GOAL_DELIVERIES_PER_S,
  })
  report.add({
    figure: 'CPU while delivering',
    value: real.cpuShare * 100,
    unit: '% of a core',
    ceiling: ceiling.cpuShare * 100,
    ceilingLabel: 'trivial sender',
  })
  report.add({
    figure: 'deliveries not succeeded / sent twice',
    value: left.reduce((n, r) => n + r.n, 0) + Math.max(0, repeated),
    unit: '',
    goal: '= 0',
    pass: left.length === 0 && repeated <= 0,
  })
  report.data.throughput = { backlog, real, ceiling, senderDone, left }
}

/** Creates `perTick` processes in each tenant's workspace every 100 ms, until stopped. */
function steadyLoad(server: ServerChild, tenants: BenchTenant[], perSecond: number) {
  const perTick = Math.max(1, Math.round(perSecond / 10))
  const body = JSON.stringify({ processes: Array.from({ length: perTick }, () => ({ type: 'bench_hook' })) })
  let errors = 0
  const timer = setInterval(() => {
    for (const tenant of tenants) {
      fetch(`${server.url}/processes/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body,
      })
        .then((r) => {
          if (r.status !== 201) errors++
          return r.arrayBuffer()
        })
        .catch(() => errors++)
    }
  }, 100)
  return {
    stop: () => clearInterval(timer),
    errors: () => errors,
  }
}

async function isolation(report: Report, receiver: ServerChild) {
  const { url, db } = await freshDatabase()
  const withWebhook = async (path: string) => {
    const tenant = await createBenchTenant(db)
    await insertWebhook(db.sql, {
      workspace_id: tenant.workspaceId,
      url: `${receiver.url}${path}`,
      events: ['process.created'],
      types: null,
      tags: null,
      enabled: true,
      secret: newSecret(),
      created_by: tenant.userId,
    })
    return tenant
  }
  const fast: BenchTenant[] = []
  for (let k = 0; k < FAST_WORKSPACES; k++) fast.push(await withWebhook(`/fast/f${k}`))
  const slowTenant = await withWebhook('/slow/s')
  const server = await startProcessesServer('server (webhook isolation)', { DATABASE_URL: url, WEBHOOK_ALLOW_PRIVATE: 'on' })
  const fastDelay = async () => {
    const r = await receiverReport(receiver)
    const h = new Histogram()
    for (const [name, s] of Object.entries(r)) if (name.startsWith('f')) h.merge(Histogram.fromJSON(s.delayMs))
    return { h, r }
  }

  const fastLoad = steadyLoad(server, fast, FAST_RATE)
  await sleep(WARMUP_MS)
  await resetReceiver(receiver)
  await sleep(MEASURE_MS)
  const alone = await fastDelay()

  const slowLoad = steadyLoad(server, [slowTenant], SLOW_RATE)
  // The slow endpoint's slots fill within a second; measured from then, over a 10-second answer and its retry.
  await sleep(WARMUP_MS)
  await resetReceiver(receiver)
  await sleep(MEASURE_MS)
  const withSlow = await fastDelay()
  fastLoad.stop()
  slowLoad.stop()
  const slowStats = withSlow.r.s ?? { received: 0, maxInFlight: 0, repeated: 0 }
  const [{ n: slowBacklog }] = (await db.sql`
    select count(*)::int as n from webhook_deliveries d join webhooks w on w.id = d.webhook_id
     where w.workspace_id = ${slowTenant.workspaceId} and d.state in ('pending', 'sending')`) as unknown as [{ n: number }]
  await server.stop()

  const p = (h: Histogram, q: number) => h.quantile(q)
  report.add({
    figure: `other workspaces' delivery p99, a 10 s endpoint beside (${FAST_WORKSPACES} × ${FAST_RATE}/s)`,
    value: p(withSlow.h, 0.99),
    unit: 'ms',
    ceiling: p(alone.h, 0.99),
    ceilingLabel: 'no slow neighbour',
    ratio: p(withSlow.h, 0.99) / p(alone.h, 0.99),
    goal: `≤ ${GOAL_P99_MS.toLocaleString('en-US')} ms`,
    pass: p(withSlow.h, 0.99) <= GOAL_P99_MS && withSlow.h.count > 0,
  })
  report.add({
    figure: "other workspaces' delivery p50, 10 s endpoint beside",
    value: p(withSlow.h, 0.5),
    unit: 'ms',
    ceiling: p(alone.h, 0.5),
    ceilingLabel: 'no slow neighbour',
  })
  report.add({ figure: "other workspaces' deliveries measured", value: withSlow.h.count, unit: '', ceiling: alone.h.count, ceilingLabel: 'no slow neighbour' })
  report.add({
    figure: 'slow endpoint: sends in flight at most',
    value: slowStats.maxInFlight,
    unit: '',
    goal: `≤ ${WEBHOOK_ENDPOINT_CONCURRENCY} (WEBHOOK_ENDPOINT_CONCURRENCY)`,
    pass: slowStats.maxInFlight <= WEBHOOK_ENDPOINT_CONCURRENCY,
  })
  report.add({ figure: 'slow endpoint: deliveries waiting at the end', value: slowBacklog, unit: '' })
  report.add({
    figure: 'creates refused during the load',
    value: fastLoad.errors() + slowLoad.errors(),
    unit: '',
    goal: '= 0',
    pass: fastLoad.errors() + slowLoad.errors() === 0,
  })
  report.data.isolation = { alone: alone.h.toJSON(), withSlow: withSlow.h.toJSON(), slow: slowStats, slowBacklog }
}

export async function run(): Promise<Report> {
  const report = new Report('webhooks', {
    backlog: BACKLOG,
    endpoints: ENDPOINTS,
    fast_workspaces: FAST_WORKSPACES,
    fast_rate_per_workspace: FAST_RATE,
    slow_rate: SLOW_RATE,
    slow_answer_ms: SLOW_MS,
    measure_ms: MEASURE_MS,
  })
  const loadAtStart = uptimeLoad()
  const receiver = await startServer('webhook receiver', [BUN, `${BENCH_DIR}load/webhook-receiver.ts`], { BENCH_SLOW_MS: String(SLOW_MS) })
  await throughput(report, receiver)
  await isolation(report, receiver)
  await receiver.stop()
  report.note(
    `load average (as uptime prints it) at the start ${loadAtStart}, at the end ${uptimeLoad()} (2 cores; server, receiver, sender and Postgres share them)`,
  )
  report.note('throughput: the rate between the 10th and the 90th percentile of arrivals; both runs post the same signed body to the same receiver')
  report.note("delivery delay: from the event's timestamp (the database's clock) to its arrival at the receiver, on one machine")
  return report
}
