// bench cluster: the fan-out benchmark across two instances. The worker's WebSocket is on instance A, the
// streams on instance B, one Postgres, one Redis (a redis-server of this benchmark's own, so its
// INFO commandstats count only this run). The same run first measures the single-instance figure (worker and
// streams both on one instance, same Redis) as the reference.
//
// Checks: the added p50 latency B − single ≤ 2 ms, and that Redis carries one publish per change — PUBLISH
// calls in the window ÷ committed changes is a constant (2: the process channel and the workspace channel,
// pipelined), never one per subscriber (there are STREAMS / WATCHED streams per process). Also B holds one
// Redis subscription per watched process, not per stream.
import { Report, ownRedis, redisCommandCalls, scrapeMetrics } from './lib'
import { type StreamsResult, realSetup, runStreams, startStreamServer, summarize } from './scenario'

const env = process.env
const STREAMS = Number(env.BENCH_CLUSTER_STREAMS ?? 5000)
const WATCHED = Number(env.BENCH_CLUSTER_WATCHED ?? 100)
const BROADCAST_MS = 500
const WARMUP_MS = Number(env.BENCH_WARMUP_MS ?? 2000)
const MEASURE_MS = Number(env.BENCH_CLUSTER_MEASURE_MS ?? 6000)
/** Single and cluster runs are paired per round, in alternating order; the added latency is the median pair. */
const ROUNDS = Number(env.BENCH_CLUSTER_ROUNDS ?? 5)
const MAX_ADDED_P50_MS = 2

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

export async function run(): Promise<Report> {
  const report = new Report('cluster', { streams: STREAMS, watched_processes: WATCHED, broadcast_ms: BROADCAST_MS, measure_ms: MEASURE_MS, rounds: ROUNDS })
  const setup = await realSetup(WATCHED)
  const redis = await ownRedis()
  const common = {
    token: setup.tenant.token,
    workerToken: setup.tenant.workerToken,
    workerId: setup.workerId,
    ids: setup.ids,
    streams: STREAMS,
    rampPerSec: 3000,
    reconnect: false,
    broadcastMs: BROADCAST_MS,
    warmupMs: WARMUP_MS,
    measureMs: MEASURE_MS,
  }
  const serverEnv = { REDIS_URL: redis.url, REDIS_PREFIX: 'bench:', SSE_MAX_MS: '3600000' }
  // The single-instance reference (Redis on, as in the cluster), and the two instances: worker → A, streams → B.
  const [single, a, b] = await Promise.all([
    startStreamServer('single instance', setup, serverEnv),
    startStreamServer('instance A (worker)', setup, serverEnv),
    startStreamServer('instance B (streams)', setup, serverEnv),
  ])

  const ones: StreamsResult[] = []
  const twos: StreamsResult[] = []
  let changes = 0
  let publishes = 0
  let publishCalls = 0
  let bAfter: Record<string, number> = {}
  const runSingle = (round: number) => runStreams({ label: `single instance, round ${round}`, streamServer: single, ...common })
  const runCluster = (round: number) => {
    let aBefore: Record<string, number> = {}
    return runStreams({
      label: `A → Redis → B, round ${round}`,
      streamServer: b,
      workerServer: a,
      alsoWatch: [a],
      ...common,
      onWindowStart: async () => {
        redis.cli('config', 'resetstat')
        aBefore = await scrapeMetrics(a.url)
      },
      onWindowEnd: async () => {
        publishes += redisCommandCalls(redis.cli('info', 'commandstats'), 'publish')
        const aAfter = await scrapeMetrics(a.url)
        bAfter = await scrapeMetrics(b.url)
        changes += (aAfter.processes_progress_writes_total ?? 0) - (aBefore.processes_progress_writes_total ?? 0)
        publishCalls += (aAfter.processes_redis_publishes_total ?? 0) - (aBefore.processes_redis_publishes_total ?? 0)
      },
    })
  }
  for (let round = 1; round <= ROUNDS; round++) {
    // The order alternates (single first, then cluster first), so a drift of the machine over a round does not
    // always land on the same side.
    if (round % 2 === 1) {
      ones.push(await runSingle(round))
      twos.push(await runCluster(round))
    } else {
      twos.push(await runCluster(round))
      ones.push(await runSingle(round))
    }
  }
  await Promise.all([single.stop(), a.stop(), b.stop()])

  const q = (runs: StreamsResult[], p: number) => median(runs.map((r) => r.latency.quantile(p)))
  const [one50, one99, two50, two99] = [q(ones, 0.5), q(ones, 0.99), q(twos, 0.5), q(twos, 0.99)]
  // Paired: each round's cluster figure minus the same round's single figure (run back to back, so under the
  // same conditions), then the median over the rounds. One busy spell moves one pair, not the result.
  const paired = (p: number) => median(twos.map((r, i) => r.latency.quantile(p) - ones[i]!.latency.quantile(p)))
  const added50 = paired(0.5)
  const added99 = paired(0.99)
  const perChange = publishes / changes
  const streamsPerProcess = STREAMS / WATCHED
  const delivery = Math.min(...twos.map((r) => r.deliveryRatio ?? 0))
  const failures = twos.reduce((n, r) => n + r.counters.failures!, 0)

  report.add({ figure: 'single instance latency p50', value: one50, unit: 'ms' })
  report.add({ figure: 'single instance latency p99', value: one99, unit: 'ms' })
  report.add({ figure: 'A → Redis → B latency p50', value: two50, unit: 'ms', ceiling: one50, ceilingLabel: 'single', ratio: two50 / one50 })
  report.add({ figure: 'A → Redis → B latency p99', value: two99, unit: 'ms', ceiling: one99, ceilingLabel: 'single', ratio: two99 / one99 })
  report.add({ figure: 'added p50 latency (B − single, median of rounds)', value: added50, unit: 'ms', goal: `≤ ${MAX_ADDED_P50_MS} ms`, pass: added50 <= MAX_ADDED_P50_MS })
  report.add({ figure: 'added p99 latency (B − single, median of rounds)', value: added99, unit: 'ms' })
  report.add({ figure: 'changes committed on A (windows)', value: changes, unit: '' })
  report.add({ figure: 'Redis PUBLISH calls per change', value: perChange, unit: '', goal: `constant (2 channels), ≪ ${streamsPerProcess} streams/process`, pass: changes > 0 && perChange <= 2.01 })
  report.add({ figure: 'server publish calls per change (metric)', value: publishCalls / changes, unit: '', goal: '= 1', pass: Math.abs(publishCalls - changes) <= ROUNDS })
  const subscriptions = bAfter.processes_hub_subscriptions ?? NaN
  report.add({ figure: 'Redis subscriptions held by B', value: subscriptions, unit: '', goal: `≤ ${WATCHED} processes + work + workspace channels, not ${STREAMS} streams`, pass: subscriptions <= WATCHED + 3 })
  report.add({ figure: 'events delivered / expected on B (worst round)', value: delivery, unit: '', goal: '≈ 1 (no loss)', pass: delivery >= 0.97 && failures === 0 })
  // Round 1 only: later rounds start from a heap the earlier ones grew.
  report.add({ figure: 'instance B RSS per stream (round 1)', value: twos[0]!.rssPerStreamBytes / 1024, unit: 'KiB' })
  report.note(`latency figures: the median over ${ROUNDS} rounds (each a single and a cluster run of ${MEASURE_MS / 1000} s, back to back, in alternating order) of each run's p50 / p99; "added" is the median of the rounds' differences; per round: ${ones.map((r, i) => `${r.latency.quantile(0.5).toFixed(1)} / ${twos[i]!.latency.quantile(0.5).toFixed(1)} ms`).join(', ')} (single / cluster p50)`)
  report.note(`PUBLISH counted by the benchmark's own redis-server (INFO commandstats, reset at each window start); each change goes to process:<id> and workspace:<id>, auto-pipelined`)
  report.note(`${STREAMS} streams on B watch ${WATCHED} processes (${streamsPerProcess} streams per process); a per-subscriber design would have made ${streamsPerProcess}× more publishes`)
  report.data.single = ones.map(summarize)
  report.data.cluster = twos.map(summarize)
  report.data.redis = { publish_calls: publishes, changes, server_publish_calls: publishCalls, b_metrics: bAfter }
  return report
}
