// The hot path's figures for bench queue, each beside BullMQ's in the same run: single creates with 50 in
// flight (POST /processes vs queue.add), create → done observed (an SSE stream's `event: done` vs QueueEvents'
// `completed`), awaited progress on one process (acks/s, and Postgres commits per 100 frames, vs
// job.updateProgress), and the CPU a job costs in every process that takes part.
import { readdirSync, readFileSync } from 'node:fs'
import { BASE_REDIS_URL, BENCH_DIR, type BenchTenant, cleanRedisPrefix, freshDatabase, postgresCpuSeconds, procStat, redisPrefix, scrapeMetrics } from '../lib'

const CLOCK_TICKS_PER_S = 100

/** CPU seconds of every redis-server on this machine (BullMQ's half of the work, and our hub's when it has Redis). */
export function redisCpuSeconds(): number {
  let total = 0
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (!stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).startsWith('redis-server')) continue
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      total += (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S
    } catch {} // gone meanwhile
  }
  return total
}

/** CPU seconds so far: the server under test (if any), Postgres, Redis, and this benchmark process (its workers and clients). */
export interface Cpu {
  server: number
  postgres: number
  redis: number
  client: number
}

export function cpuNow(serverPid?: number): Cpu {
  const self = process.cpuUsage()
  return {
    server: serverPid ? procStat(serverPid).cpuSeconds : 0,
    postgres: postgresCpuSeconds(),
    redis: redisCpuSeconds(),
    client: (self.user + self.system) / 1e6,
  }
}

export function cpuSince(before: Cpu, after: Cpu): Cpu {
  return {
    server: after.server - before.server,
    postgres: after.postgres - before.postgres,
    redis: after.redis - before.redis,
    client: after.client - before.client,
  }
}

export const cpuTotal = (c: Cpu) => c.server + c.postgres + c.redis + c.client

/** One of reference.mjs's parts (bullmq-add, bullmq-done, bullmq-acks): its JSON, and the CPU of its node process. */
export async function referencePart(mode: string, n: number, inFlight = 1): Promise<Record<string, number> & { cpuSeconds: number }> {
  const { url } = await freshDatabase(1)
  const prefix = redisPrefix()
  cleanRedisPrefix(BASE_REDIS_URL, prefix)
  const proc = Bun.spawn(['node', `${BENCH_DIR}queue/reference.mjs`, mode, String(n), '0', String(inFlight)], {
    env: { ...process.env, DATABASE_URL: url, REDIS_URL: BASE_REDIS_URL, PREFIX: prefix.replace(/:$/, '') },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()])
  await proc.exited
  const usage = proc.resourceUsage()
  try {
    return { ...JSON.parse(out.trim().split('\n').pop() ?? ''), cpuSeconds: usage ? Number(usage.cpuTime.total) / 1e6 : NaN }
  } catch {
    throw new Error(`${mode} failed (exit ${proc.exitCode}):\n${out.slice(-2000)}\n${err.slice(-2000)}`)
  }
}

/** POST /processes one at a time per lane, `inFlight` lanes at once: creates per second. */
export async function singleCreates(baseUrl: string, tenant: BenchTenant, n: number, inFlight: number): Promise<number> {
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const body = JSON.stringify({ type: 'bench_single', metadata: { source: 'bench' } })
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        next++
        const response = await fetch(`${baseUrl}/processes`, { method: 'POST', headers, body })
        if (response.status !== 201) throw new Error(`create: ${response.status} ${await response.text()}`)
        await response.arrayBuffer()
      }
    }),
  )
  return n / ((performance.now() - started) / 1000)
}

/**
 * Create → done observed, `inFlight` lanes: each creates a process, opens its SSE stream and waits for
 * `event: done` (a worker with concurrency 50 runs meanwhile). Milliseconds from the create's request to done.
 */
export async function createToDone(baseUrl: string, tenant: BenchTenant, type: string, n: number, inFlight: number): Promise<number[]> {
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const body = JSON.stringify({ type })
  const latencies: number[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      const decoder = new TextDecoder()
      while (next < n) {
        next++
        const t0 = performance.now()
        const created = (await (await fetch(`${baseUrl}/processes`, { method: 'POST', headers, body })).json()) as { id: number }
        const stream = await fetch(`${baseUrl}/processes/${created.id}/stream`, { headers })
        const reader = stream.body!.getReader()
        let text = ''
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          text += decoder.decode(value, { stream: true })
          if (text.includes('event: done')) break
        }
        latencies.push(performance.now() - t0)
        await reader.cancel().catch(() => {})
      }
    }),
  )
  return latencies
}

/**
 * One process, one worker awaiting each progress ack, `n` times: acks per second, and the statements the
 * server wrote progress with meanwhile (its processes_progress_statements_total: each is one commit) per 100
 * frames. (pg_stat_database's commit counter is flushed by idle backends only after 10 s: too coarse here.)
 */
export async function awaitedAcks(baseUrl: string, tenant: BenchTenant, n: number): Promise<{ rate: number; commitsPer100: number }> {
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  await fetch(`${baseUrl}/processes`, { method: 'POST', headers, body: JSON.stringify({ type: 'bench_acks' }) })
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/workers/ws`, { headers: { authorization: `Bearer ${tenant.workerToken}` } } as never)
  await new Promise((resolve, reject) => {
    ws.onopen = resolve
    ws.onerror = reject
  })
  let answer: ((frame: any) => void) | null = null
  ws.onmessage = (event) => answer?.(JSON.parse(String(event.data)))
  const ask = (frame: object) =>
    new Promise<any>((resolve) => {
      answer = resolve
      ws.send(JSON.stringify(frame))
    })
  const { process: run } = await ask({ op: 'claim', types: ['bench_acks'] })
  for (let i = 0; i < 500; i++) await ask({ op: 'progress', process_id: run.id, attempt: run.attempts, progress: i % 101 }) // warm
  const before = (await scrapeMetrics(baseUrl)).processes_progress_statements_total ?? 0
  const started = performance.now()
  for (let i = 0; i < n; i++) {
    const reply = await ask({ op: 'progress', process_id: run.id, attempt: run.attempts, progress: i % 101 })
    if (reply.op !== 'ack') throw new Error(`progress: ${JSON.stringify(reply)}`)
  }
  const seconds = (performance.now() - started) / 1000
  const after = (await scrapeMetrics(baseUrl)).processes_progress_statements_total ?? 0
  await ask({ op: 'complete', process_id: run.id, attempt: run.attempts })
  ws.close()
  return { rate: n / seconds, commitsPer100: ((after - before) / n) * 100 }
}

export function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * q) - 1))] ?? NaN
}
