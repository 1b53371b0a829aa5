// bench abuse: a well-behaved tenant's p99 beside the same tenant's p99 with no attack, in the same
// run, for each attack: a 413 flood on random 8 KB paths, reads of a process with the largest metadata allowed,
// 100,000 distinct pending types in another workspace, session minting, and a random-token flood; and the
// server's RSS after all of them against before. The hostile clients come through TRUSTED_PROXIES with an
// X-Forwarded-For of their own (a real deployment's proxy does the same), so the throttles see them apart.
// Each attack sends its share of BENCH_ABUSE_REQUESTS (100,000 in all) from a process of its own
// (bench/load/abuse-flood.ts), closed-loop at the concurrency below; the victim is measured until it is done.
import WebSocket from 'ws'
import { createWorkerToken } from '../src/auth/queries'
import { createBenchTenant, freshDatabase, Histogram, procStat, Report, sleep, spawnChild, startServer, BUN } from './lib'

const SECONDS = Number(process.env.BENCH_ABUSE_SECONDS ?? 6)
/** Hostile requests in all, shared evenly by the attacks that send requests (the 100,000). */
const HOSTILE_TOTAL = Number(process.env.BENCH_ABUSE_REQUESTS ?? 100_000)
/** Only the attacks whose name contains this (profiling one). */
const ONLY = process.env.BENCH_ABUSE_ONLY
type FloodAttack = '413' | 'huge' | 'sessions' | 'tokens'
const HOSTILE = { 'x-forwarded-for': '203.0.113.66' }
const VICTIM = { 'x-forwarded-for': '198.51.100.10' }

export async function run(): Promise<Report> {
  const { url: dbUrl, db } = await freshDatabase()
  const victim = await createBenchTenant(db)
  const hostile = await createBenchTenant(db)
  // The victim's worker is scoped to its workspace, as the CLI now makes them by default.
  const victimWorker = (await createWorkerToken(db.sql, 'victim', { workspaceIds: [victim.workspaceId] })).token
  // The server runs with its default limits: they are what is measured.
  // BENCH_SERVER_BUN_ARGS: flags for the server's bun (e.g. `--cpu-prof-md --cpu-prof-dir=/tmp/prof`).
  const flags = (process.env.BENCH_SERVER_BUN_ARGS ?? '').split(' ').filter(Boolean)
  const server = await startServer('server (abuse)', [BUN, ...flags, 'src/main.ts'], {
    DATABASE_URL: dbUrl,
    REDIS_URL: '',
    TRUSTED_PROXIES: '127.0.0.1',
    LOG_LEVEL: 'warn',
  })
  const report = new Report('abuse', { seconds_per_phase: SECONDS })
  const base = server.url
  const auth = (token: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json', ...extra })

  // The victim: create, claim with its scoped worker, complete; and a GET of its process. One at a time.
  const ws = new WebSocket(`${base.replace('http', 'ws')}/workers/ws`, { headers: { authorization: `Bearer ${victimWorker}`, ...VICTIM } })
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  let ref = 0
  const waiting = new Map<string, (f: any) => void>()
  ws.on('message', (data) => {
    const f = JSON.parse(String(data))
    waiting.get(f.ref)?.(f)
    waiting.delete(f.ref)
  })
  const frame = (f: object) =>
    new Promise<any>((resolve) => {
      const r = String(++ref)
      waiting.set(r, resolve)
      ws.send(JSON.stringify({ ...f, ref: r }))
    })
  await frame({ op: 'hello', worker_id: 'victim-worker' })
  /** The victim's round trips until `ms` have passed, or until `until()` says stop (an attack's requests are all sent). */
  const victimLoop = async (ms: number, until: () => boolean = () => false) => {
    const h = new Histogram()
    const deadline = performance.now() + ms
    while (performance.now() < deadline && !until()) {
      let t = performance.now()
      const created = (await (
        await fetch(`${base}/processes`, { method: 'POST', headers: auth(victim.token, VICTIM), body: '{"type":"victim_job"}' })
      ).json()) as any
      h.record(performance.now() - t)
      t = performance.now()
      const claimed = await frame({ op: 'claim', types: ['victim_job'] })
      h.record(performance.now() - t)
      if (claimed.process) await frame({ op: 'complete', process_id: claimed.process.id, attempt: claimed.process.attempts })
      t = performance.now()
      await (await fetch(`${base}/processes/${created.id}`, { headers: auth(victim.token, VICTIM) })).arrayBuffer()
      h.record(performance.now() - t)
    }
    return h
  }
  let hostileRequests = 0
  /** One attack's requests from a process of its own (bench/load/abuse-flood.ts); resolves when all are sent. */
  const flood = async (attack: FloodAttack, count: number, concurrency: number) => {
    const child = spawnChild(`abuse flood ${attack}`, [BUN, 'bench/load/abuse-flood.ts'], {
      BENCH_ABUSE: JSON.stringify({ attack, base, port: server.port, count, concurrency, hostileToken: hostile.token, hugeId: huge.id }),
    })
    await child.nextMessage((m) => m.ready === true)
    let finished = false
    const done = child
      .nextMessage((m) => typeof m.sent === 'number', 900_000)
      .then((m: { sent: number }) => {
        finished = true
        hostileRequests += m.sent
        return m.sent
      })
    return { finished: () => finished, done }
  }
  // The largest metadata a create is allowed: 10,000 values, under 64 KiB.
  const huge = (await (
    await fetch(`${base}/processes`, {
      method: 'POST',
      headers: auth(hostile.token, HOSTILE),
      body: JSON.stringify({ type: 'huge', metadata: { zeros: new Array(9990).fill(123456) } }),
    })
  ).json()) as any
  const attacks: Array<{ name: string; setup?: () => Promise<void>; flood?: FloodAttack; concurrency: number }> = [
    { name: '413 flood on random 8 KB paths', flood: '413', concurrency: 64 },
    { name: 'reads of a 64 KiB, 10,000-value metadata', flood: 'huge', concurrency: 16 },
    {
      name: '100,000 pending types in another workspace',
      // Past the API's quota (WORKSPACE_MAX_PENDING_TYPES): put there as an older server allowed, to load the claims.
      setup: async () => {
        await db.sql`insert into processes (workspace_id, type, message) select ${hostile.workspaceId}, 't' || n, 'Queued' from generate_series(1, 100000) n`
        await db.sql`analyze processes`
      },
      // The rows are the attack: every claim of the victim's worker would walk them (it no longer does).
      concurrency: 0,
    },
    { name: 'session minting', flood: 'sessions', concurrency: 64 },
    { name: 'random-token flood', flood: 'tokens', concurrency: 64 },
  ]
  await victimLoop(1000) // warm-up
  const rssBefore = procStat(server.proc.pid!).rssBytes
  const sending = attacks.filter((a) => a.flood).length
  for (const attack of ONLY ? attacks.filter((a) => a.name.includes(ONLY)) : attacks) {
    await attack.setup?.()
    const quiet = await victimLoop((SECONDS * 1000) / 2)
    const before = hostileRequests
    // A request flood runs until its share is sent (however long that takes); the rows-only attack for SECONDS.
    const hostileFlood = attack.flood ? await flood(attack.flood, Math.ceil(HOSTILE_TOTAL / sending), attack.concurrency) : null
    const loud = await victimLoop(hostileFlood ? 900_000 : SECONDS * 1000, () => hostileFlood?.finished() ?? false)
    await hostileFlood?.done
    const p99Quiet = quiet.quantile(0.99)
    const p99Loud = loud.quantile(0.99)
    report.add({
      figure: `victim p99 under ${attack.name} (${hostileRequests - before} hostile requests)`,
      value: p99Loud,
      unit: 'ms',
      ceiling: p99Quiet,
      ceilingLabel: 'no attack',
      ratio: p99Loud / p99Quiet,
      goal: '≤ 1.5×',
      pass: p99Loud / p99Quiet <= 1.5,
    })
  }
  await sleep(1000)
  const rssAfter = procStat(server.proc.pid!).rssBytes
  report.add({
    figure: `server RSS after ${hostileRequests} hostile requests`,
    value: rssAfter / 2 ** 20,
    unit: 'MiB',
    ceiling: rssBefore / 2 ** 20,
    ceilingLabel: 'before',
    ratio: rssAfter / rssBefore,
    goal: '≤ 1.1×',
    pass: rssAfter / rssBefore <= 1.1,
  })
  report.note('the victim: create, claim (a worker scoped to its workspace), complete and GET, one at a time; p99 over all three requests')
  ws.close()
  // A clean stop, so a --cpu-prof run (BENCH_SERVER_BUN_ARGS) writes its profile.
  await server.stop('SIGTERM')
  return report
}
