// The soak's load generator (bench soak), a process of its own so the server's CPU is measured alone:
// - a creator: POST /processes/batch, 1,000 a request, while fewer than `backlog` are created and not done;
// - workers: the worker SDK (connectWorker: batch claim, claim-next), `progressFrames` awaited progress
//   updates per job, then complete;
// - a probe: its own raw worker socket, every `probeEveryMs` a `claim {max:1, wait_ms:0}` timed from send to `claimed`
//   (the claim round trip on the busy queue), then `complete` of what it got;
// - a reader: GET /processes/{id} of a recent process every `readEveryMs` (audit rows, as a dashboard makes).
// Config: JSON in BENCH_SOAK. Output: a JSON line a second `{t, created, done, probe_ms: [...], errors}`,
// then `{final: true, …}`.
import { connectWorker } from '../../packages/client/src/worker'

interface Config {
  url: string
  token: string
  workerToken: string
  jobs: number
  backlog: number
  concurrency: number
  workers: number
  progressFrames: number
  readEveryMs: number
  probeEveryMs: number
}

const c = JSON.parse(process.env.BENCH_SOAK!) as Config
const emit = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`)
const auth = { authorization: `Bearer ${c.token}`, 'content-type': 'application/json' }
const TYPE = 'soak'

let created = 0
let done = 0
let errors = 0
const errorSamples: string[] = []
let probeMs: number[] = []
let lastId = 0
const started = performance.now()
const noteError = (what: string) => {
  errors++
  if (errorSamples.length < 10) errorSamples.push(what)
}

async function creator() {
  while (created < c.jobs) {
    if (created - done > c.backlog - 1000) {
      await Bun.sleep(20)
      continue
    }
    const n = Math.min(1000, c.jobs - created)
    const processes = Array.from({ length: n }, (_, k) => ({ type: TYPE, metadata: { n: created + k } }))
    const response = await fetch(`${c.url}/processes/batch`, { method: 'POST', headers: auth, body: JSON.stringify({ processes }) })
    if (response.status !== 201) {
      noteError(`batch ${response.status} ${(await response.text()).slice(0, 200)}`)
      await Bun.sleep(500)
      continue
    }
    const body = (await response.json()) as { processes: { id: number }[] }
    lastId = body.processes.at(-1)?.id ?? lastId
    created += n
  }
}

async function reader() {
  while (done < c.jobs) {
    await Bun.sleep(c.readEveryMs)
    if (lastId === 0) continue
    const response = await fetch(`${c.url}/processes/${lastId}`, { headers: auth }).catch(() => null)
    if (!response?.ok) noteError(`read ${response?.status}`)
    else await response.arrayBuffer()
  }
}

/** The probe: raw frames on a socket of its own. */
function probe(): Promise<void> {
  const ws = new WebSocket(`${c.url.replace(/^http/, 'ws')}/workers/ws?token=${encodeURIComponent(c.workerToken)}`)
  let ref = 0
  const waiting = new Map<string, (frame: any) => void>()
  ws.addEventListener('message', (event) => {
    const frame = JSON.parse(String(event.data))
    const resolve = frame.ref === undefined ? undefined : waiting.get(String(frame.ref))
    if (resolve) {
      waiting.delete(String(frame.ref))
      resolve(frame)
    }
  })
  const request = (frame: object) =>
    new Promise<any>((resolve) => {
      const r = String(++ref)
      waiting.set(r, resolve)
      ws.send(JSON.stringify({ ...frame, ref: r }))
    })
  return new Promise((resolve) => {
    ws.addEventListener('open', async () => {
      await request({ op: 'hello', worker_id: 'soak-probe' })
      while (done < c.jobs) {
        const t0 = performance.now()
        const reply = await request({ op: 'claim', types: [TYPE], wait_ms: 0, max: 1 })
        if (reply.op === 'claimed') {
          probeMs.push(performance.now() - t0)
          if (reply.process) {
            const ack = await request({ op: 'complete', process_id: reply.process.id, attempt: reply.process.attempts })
            if (ack.op === 'ack') done++
            else noteError(`probe complete ${ack.code}`)
          }
        } else noteError(`probe claim ${reply.code}`)
        await Bun.sleep(Math.max(0, c.probeEveryMs - (performance.now() - t0)))
      }
      ws.close()
      resolve()
    })
  })
}

const workers = Array.from({ length: c.workers }, (_, i) =>
  connectWorker(c.url, c.workerToken, {
    workerId: `soak-${i}`,
    types: [TYPE],
    concurrency: c.concurrency,
    claimWaitMs: 1000,
    async handler(_process, ctx) {
      for (let p = 1; p <= c.progressFrames; p++) await ctx.progress(Math.round((p * 100) / (c.progressFrames + 1)))
    },
    onEvent(event) {
      if (event.type === 'completed') done++
      else if (event.type === 'failed' || event.type === 'lost') noteError(`worker ${event.type}`)
    },
    onError: (error) => noteError(`worker ${error.message}`),
  }),
)

const ticker = setInterval(() => {
  emit({ t: (performance.now() - started) / 1000, created, done, probe_ms: probeMs, errors })
  probeMs = []
}, 1000)

await Promise.all([creator(), reader(), probe()])
while (done < c.jobs) await Bun.sleep(100)
clearInterval(ticker)
await Promise.all(workers.map((w) => w.close({ timeoutMs: 5000 })))
emit({ final: true, t: (performance.now() - started) / 1000, created, done, probe_ms: probeMs, errors, error_samples: errorSamples })
process.exit(0)
