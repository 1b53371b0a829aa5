// bench tree: process trees on one instance.
// - a parent with 10,000 children created in one POST /processes: the request's wall time;
// - 10,000 children of one parent processed by one worker socket at concurrency 50 (each job: one progress
//   frame, then complete-and-claim-next) against 10,000 independent processes the same way, in the same run
//   (flat, tree, flat, tree, flat: the trees' mean against the flats'), so the counters kept by the database
//   (sql/013_trees.sql, sql/016_tree_claims.sql) show what they cost the queue;
// - while the 10,000 children report progress, the updates per second on the parent's SSE stream (the
//   coalescing of src/processes/tree-refresh.ts) and its progress never going back;
// - last child's completion → the parent's SSE `done`: 100 parents of 10 children, each parent followed by its
//   own stream; measured from when the last child's complete frame was sent (an upper bound of its commit).
import { Histogram, now } from './histogram'
import { Report, createBenchTenant, freshDatabase, sleep, startProcessesServer } from './lib'

const CHILDREN = Number(process.env.BENCH_TREE_CHILDREN ?? 10_000)
const CONCURRENCY = 50
const SMALL_TREES = 100
const SMALL_CHILDREN = 10

type Frame = Record<string, any>

class BenchWorker {
  private nextRef = 1
  private readonly waiting = new Map<string, (frame: Frame) => void>()
  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (e) => {
      const frame = JSON.parse(String(e.data)) as Frame
      const resolve = this.waiting.get(String(frame.ref))
      if (resolve) {
        this.waiting.delete(String(frame.ref))
        resolve(frame)
      }
    })
  }
  static async connect(base: string, token: string): Promise<BenchWorker> {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/workers/ws`, { headers: { authorization: `Bearer ${token}` } } as any)
    await new Promise((resolve, reject) => {
      ws.addEventListener('open', resolve, { once: true })
      ws.addEventListener('error', reject, { once: true })
    })
    const w = new BenchWorker(ws)
    await w.request({ op: 'hello', worker_id: `bench-tree-${Date.now()}` })
    return w
  }
  request(frame: Frame): Promise<Frame> {
    const ref = `r${this.nextRef++}`
    return new Promise((resolve) => {
      this.waiting.set(ref, resolve)
      this.ws.send(JSON.stringify({ ...frame, ref }))
    })
  }
  close() {
    this.ws.close()
  }
}

/** Runs `total` jobs of `types` at CONCURRENCY; returns jobs/s. `onComplete` hears each complete as it is sent. */
async function runJobs(w: BenchWorker, types: string[], total: number, onSend?: (p: Frame, at: number) => void): Promise<number> {
  let done = 0
  const started = now()
  const slot = async () => {
    let p: Frame | null = null
    while (done < total) {
      if (!p) {
        p = (await w.request({ op: 'claim', types, wait_ms: 500 })).process ?? null
        continue
      }
      await w.request({ op: 'progress', process_id: p.id, progress: 50, attempt: p.attempts })
      onSend?.(p, now())
      const ack = await w.request({ op: 'complete', process_id: p.id, attempt: p.attempts, claim: { types, max: 1 } })
      if (ack.op !== 'ack') throw new Error(`complete refused: ${JSON.stringify(ack)}`)
      done++
      p = ack.processes?.[0] ?? null
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, slot))
  return total / ((now() - started) / 1000)
}

interface StreamLog {
  updates: Array<{ at: number; progress: number; version: number }>
  doneAt: number | null
  done: Frame | null
  closed: Promise<void>
  abort: AbortController
}

/** The parent's SSE stream, read in this process: every update's arrival time and progress, and `done`. */
async function follow(base: string, token: string, id: number): Promise<StreamLog> {
  const abort = new AbortController()
  const res = await fetch(`${base}/processes/${id}/stream`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal })
  const log: StreamLog = { updates: [], doneAt: null, done: null, closed: Promise.resolve(), abort }
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  log.closed = (async () => {
    let buffer = ''
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        buffer += decoder.decode(value, { stream: true })
        let end = buffer.indexOf('\n\n')
        while (end !== -1) {
          const event = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          end = buffer.indexOf('\n\n')
          const data = event.split('\n').find((l) => l.startsWith('data: '))
          if (!data) continue
          const state = JSON.parse(data.slice(6))
          const at = now()
          if (event.includes('event: done')) {
            log.doneAt = at
            log.done = state
          } else log.updates.push({ at, progress: state.progress, version: state.version })
        }
      }
    } catch {
      // aborted
    }
  })()
  return log
}

/** The process a claim frame took; a refusal or an empty claim ends the run with what the server said. */
function claimed1(reply: Frame): Frame {
  if (!reply.process) throw new Error(`claim took nothing: ${JSON.stringify(reply)}`)
  return reply.process
}

async function post(base: string, token: string, path: string, body: unknown) {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
  return res.json() as Promise<any>
}

export async function run(): Promise<Report> {
  const report = new Report('tree', { children: CHILDREN, concurrency: CONCURRENCY, small_trees: `${SMALL_TREES}×${SMALL_CHILDREN}` })
  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const server = await startProcessesServer('server', { DATABASE_URL: url, PROGRESS_PERSIST_MS: '250', SSE_MAX_MS: '600000' })
  const w = await BenchWorker.connect(server.url, tenant.workerToken)

  // 1. One create with 10,000 children, three times (the first also warms the server); the last two trees are
  // processed below, the first is cancelled.
  const creates: number[] = []
  const trees: any[] = []
  for (let i = 0; i < 3; i++) {
    const children = Array.from({ length: CHILDREN }, (_, n) => ({ type: `tree_child_${i}`, metadata: { chunk: n } }))
    const t0 = now()
    const made = await post(server.url, tenant.token, '/processes', { type: `tree_parent_${i}`, children })
    creates.push(now() - t0)
    if (i === 0) await post(server.url, tenant.token, `/processes/${made.id}/cancel`, {})
    else trees.push(made)
  }
  const worstCreate = Math.max(...creates)
  report.data.create_ms = creates
  report.add({
    figure: `create: 1 parent + ${CHILDREN.toLocaleString('en-US')} children, one call (worst of 3; all: ${creates.map((c) => c.toFixed(0)).join(', ')})`,
    value: worstCreate,
    unit: 'ms',
    goal: '≤ 1000 ms',
    pass: worstCreate <= 1000,
  })

  // 2. Interleaved rounds, flat, tree, flat, tree, flat: the same worker, the same jobs; the busy machine's drift
  // falls on both sides.
  const flat = async (label: string) => {
    for (let k = 0; k < CHILDREN / 1000; k++)
      await post(server.url, tenant.token, '/processes/batch', { processes: Array.from({ length: 1000 }, () => ({ type: label })) })
    return runJobs(w, [label], CHILDREN)
  }
  const flatRates: number[] = [await flat('flat_0')]
  const treeRates: number[] = []
  const treeStreams: StreamLog[] = []
  const doneLatency: number[] = []
  for (const [k, tree] of trees.entries()) {
    // The parent's handler returns at once: it waits for its children, its stream followed meanwhile. The claims
    // wait, as a worker's do: a claim skips a row another transaction holds (the refresher writes parents).
    const claimed = claimed1(await w.request({ op: 'claim', types: [`tree_parent_${k + 1}`], wait_ms: 5000 }))
    await w.request({ op: 'complete', process_id: claimed.id, attempt: claimed.attempts })
    const stream = await follow(server.url, tenant.token, tree.id)
    let lastSendAt = 0
    treeRates.push(await runJobs(w, [`tree_child_${k + 1}`], CHILDREN, (_p, at) => (lastSendAt = at)))
    const doneDeadline = Date.now() + 10_000
    while (!stream.doneAt && Date.now() < doneDeadline) await sleep(10)
    doneLatency.push(stream.doneAt ? stream.doneAt - lastSendAt : Number.NaN)
    stream.abort.abort()
    treeStreams.push(stream)
    flatRates.push(await flat(`flat_${k + 1}`))
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  const flatRate = mean(flatRates)
  const treeRate = mean(treeRates)
  report.data.flat_rates = flatRates
  report.data.tree_rates = treeRates
  report.add({ figure: `independent processes, concurrency 50 (mean of ${flatRates.map((r) => r.toFixed(0)).join(', ')})`, value: flatRate, unit: 'jobs/s' })
  report.add({
    figure: `tree children, concurrency 50 (mean of ${treeRates.map((r) => r.toFixed(0)).join(', ')})`,
    value: treeRate,
    unit: 'jobs/s',
    ceiling: flatRate,
    ceilingLabel: 'independent',
    ratio: treeRate / flatRate,
    goal: '≥ 0.9×',
    pass: treeRate / flatRate >= 0.9,
  })

  // Parent stream: updates per second while children reported, the worst 1-second window of either tree.
  let worstWindow = 0
  let backwards = 0
  let updates = 0
  for (const stream of treeStreams) {
    const ats = stream.updates.map((u) => u.at)
    for (let i = 0; i < ats.length; i++) {
      let j = i
      while (j < ats.length && ats[j]! < ats[i]! + 1000) j++
      worstWindow = Math.max(worstWindow, j - i)
    }
    backwards += stream.updates.filter((u, i) => i > 0 && u.progress < stream.updates[i - 1]!.progress).length
    updates += stream.updates.length
  }
  report.add({ figure: 'parent stream updates, busiest 1-second window', value: worstWindow, unit: 'updates/s', goal: '≤ 10 /s', pass: worstWindow <= 10 })
  report.add({
    figure: 'parent stream updates in all (both trees), progress steps going back',
    value: updates,
    unit: `(${backwards} back)`,
    pass: backwards === 0,
  })
  report.add({
    figure: `big trees: last child sent → parent done (${doneLatency.map((d) => d.toFixed(0)).join(', ')} ms)`,
    value: Math.max(...doneLatency),
    unit: 'ms',
    pass: treeStreams.every((s) => s.done?.status === 'completed' && s.done?.children?.completed === CHILDREN),
  })

  // 3. Last child → parent done, over many small trees.
  const parents: any[] = []
  for (let i = 0; i < SMALL_TREES; i++)
    parents.push(
      await post(server.url, tenant.token, '/processes', {
        type: 'small_parent',
        children: Array.from({ length: SMALL_CHILDREN }, () => ({ type: 'small_child' })),
      }),
    )
  for (let i = 0; i < SMALL_TREES; i++) {
    const p = claimed1(await w.request({ op: 'claim', types: ['small_parent'], wait_ms: 5000 }))
    await w.request({ op: 'complete', process_id: p.id, attempt: p.attempts })
  }
  const streams = new Map<number, StreamLog>()
  for (const p of parents) streams.set(p.id, await follow(server.url, tenant.token, p.id))
  await sleep(300)
  const lastSent = new Map<number, number>()
  await runJobs(w, ['small_child'], SMALL_TREES * SMALL_CHILDREN, (p, at) => lastSent.set(p.parent_id, at))
  const deadline = Date.now() + 10_000
  while ([...streams.values()].some((s) => !s.doneAt) && Date.now() < deadline) await sleep(10)
  const latency = new Histogram()
  for (const [id, s] of streams) if (s.doneAt) latency.record(s.doneAt - lastSent.get(id)!)
  const missing = [...streams.values()].filter((s) => !s.doneAt).length
  const p99 = latency.quantile(0.99)
  report.add({ figure: `last child → parent SSE done, p50 (${SMALL_TREES} trees)`, value: latency.quantile(0.5), unit: 'ms' })
  report.add({ figure: 'last child → parent SSE done, p99', value: p99, unit: 'ms', goal: '≤ 100 ms', pass: p99 <= 100 && missing === 0 })
  for (const s of streams.values()) s.abort.abort()
  w.close()

  const uptime = Bun.spawnSync(['uptime']).stdout.toString().trim()
  report.note(`uptime at the end: ${uptime}`)
  report.data.uptime = uptime
  return report
}
