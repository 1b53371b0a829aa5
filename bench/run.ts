// `npm run bench -- [name|all]`: the benchmark suite. Each benchmark makes its own Postgres database and Redis
// prefix, starts the real server (and reference servers) as child processes, drives them from separate
// load-generator processes, prints a table (figure, ceiling, ratio, goal, pass/fail) and writes
// bench-results/<name>-<timestamp>.json. Postgres and Redis come from DATABASE_URL / REDIS_URL
// (default: 127.0.0.1:5432, user postgres; 127.0.0.1:6379).
import { cleanupAll, type Report } from './lib'

interface Benchmark {
  describe: string
  seconds: number
  run: () => Promise<Report>
}

const BENCHMARKS: Record<string, Benchmark> = {
  rest: {
    describe:
      'GET /processes/{id} (200 and 304) and GET /processes?limit=50 over 100,000 processes with auth and audit, vs Bun hello-world and a bare Bun + postgres.js select (wrk)',
    seconds: 85,
    run: async () => (await import('./rest')).run(),
  },
  fanout: {
    describe:
      'N = 5,000 and 15,000 SSE streams on one instance, a worker broadcast every 500 ms: latency p50/p99, RSS per stream, CPU, vs a trivial Bun SSE server',
    seconds: 95,
    run: async () => (await import('./fanout')).run(),
  },
  churn: {
    describe: '15,000 streams on 25-second windows (600 reconnects/s) for 60 s: failed connects, RSS at start/middle/end',
    seconds: 95,
    run: async () => (await import('./churn')).run(),
  },
  ingest: {
    describe:
      'worker progress frames per second one instance accepts with coalescing on, and the Postgres row writes that costs, vs a trivial Bun WebSocket ack server',
    seconds: 30,
    run: async () => (await import('./ingest')).run(),
  },
  cluster: {
    describe: 'fan-out with the worker on instance A and the streams on instance B through Redis: added latency, Redis PUBLISH per change',
    seconds: 125,
    run: async () => (await import('./cluster')).run(),
  },
  progress: {
    describe:
      'live progress on one instance: 1,000 running processes, 10,000 streams, workers sending as fast as acks allow: accepted frames/s, send → receive p99, Postgres writes vs running ÷ interval, memory per stream, vs a bare WebSocket ack server and a bare SSE loop',
    seconds: 90,
    run: async () => (await import('./progress')).run(),
  },
  output: {
    describe:
      'live output on one instance: 1,000 running processes, one stream each, workers sending output chunks as fast as acks allow: chunks/s accepted and delivered, send → receive p99, Postgres output statements per 10 ms',
    seconds: 40,
    run: async () => (await import('./output')).run(),
  },
  queue: {
    describe:
      'jobs/s with and without progress vs pg-boss, graphile-worker and BullMQ (interleaved rounds), bulk enqueue, claim cost at 0 vs 1M finished rows, noisy-neighbour pickup p99',
    seconds: 240,
    run: async () => (await import('./queue')).run(),
  },
  soak: {
    describe:
      'N = 1,000,000 jobs (BENCH_SOAK_JOBS) through one server with retention at ~26 s: table bytes and claim round trip, last tenth vs first, rows pruned, partitions dropped',
    seconds: 1800,
    run: async () => (await import('./soak')).run(),
  },
  webhooks: {
    describe: "deliveries/s from one instance to a local receiver vs a trivial sender; other workspaces' delivery p99 beside an endpoint that answers in 10 s",
    seconds: 75,
    run: async () => (await import('./webhooks')).run(),
  },
  tree: {
    describe:
      'process trees: 10,000 children in one create, 10,000 children at concurrency 50 vs 10,000 independent processes, parent stream update rate, last child → parent SSE done p99',
    seconds: 40,
    run: async () => (await import('./tree')).run(),
  },
  abuse: {
    describe:
      "a well-behaved tenant's p99 (create, claim, GET) with no attack and under each attack (413 path flood, huge-metadata reads, 100,000 pending types, session minting, random tokens); server RSS after",
    seconds: 60,
    run: async () => (await import('./abuse')).run(),
  },
  console: {
    describe:
      'bulk cancel of 100,000 by filter vs one raw UPDATE and vs single cancels; the count preview; search (q) and view=dead list pages vs a plain page',
    seconds: 60,
    run: async () => (await import('./console')).run(),
  },
  realtime: {
    describe: '10,000 streams with 25-second reconnect churn (RSS, failures), latency at 1,000 watched processes (one stream each), ingest',
    seconds: 140,
    run: async () => (await import('./realtime')).run(),
  },
}

function usage() {
  console.log('usage: npm run bench -- <name> [<name>…] | all\n')
  const width = Math.max(...Object.keys(BENCHMARKS).map((k) => k.length))
  for (const [name, b] of Object.entries(BENCHMARKS)) console.log(`  ${name.padEnd(width)}  ~${b.seconds}s  ${b.describe}`)
  const total = Object.values(BENCHMARKS).reduce((s, b) => s + b.seconds, 0)
  console.log(`  ${'all'.padEnd(width)}  ~${Math.round(total / 60)}min  every benchmark above, in this order`)
  console.log('\nEnvironment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (default redis://127.0.0.1:6379).')
  console.log('Needs wrk for `rest` (apt-get install -y wrk). Results: bench-results/<name>-<timestamp>.json')
}

const args = process.argv.slice(2)
if (args.length === 0 || args.includes('-h') || args.includes('--help')) {
  usage()
  process.exit(args.length === 0 ? 0 : 0)
}
const names = args.includes('all') ? Object.keys(BENCHMARKS) : args
const unknown = names.filter((n) => !(n in BENCHMARKS))
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.map((n) => JSON.stringify(n)).join(', ')}\n`)
  usage()
  process.exit(1)
}

const summary: Array<{ name: string; status: string; file?: string; seconds: number }> = []
for (const name of names) {
  const started = Date.now()
  console.log(`\n>> bench ${name}: ${BENCHMARKS[name]!.describe}`)
  try {
    const report = await BENCHMARKS[name]!.run()
    report.print()
    const file = report.write()
    console.log(`  → ${file}`)
    summary.push({ name, status: report.passed ? 'PASS' : 'FAIL', file, seconds: (Date.now() - started) / 1000 })
  } catch (error) {
    console.error(`bench ${name} could not run: ${error instanceof Error ? error.message : String(error)}`)
    summary.push({ name, status: 'ERROR', seconds: (Date.now() - started) / 1000 })
  } finally {
    await cleanupAll()
  }
}

if (names.length > 1) {
  console.log('\n== summary ==')
  for (const s of summary) console.log(`  ${s.name.padEnd(9)} ${s.status.padEnd(5)} ${s.seconds.toFixed(0).padStart(4)} s  ${s.file ?? ''}`)
}
process.exit(summary.every((s) => s.status === 'PASS') ? 0 : 1)
