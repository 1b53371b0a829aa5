// The reference queues of `npm run bench -- queue`, run under Node (as their users run them):
//   node reference.mjs <pg-boss|graphile-worker|bullmq> <jobs> <progress 0|1> <concurrency>
//   node reference.mjs <bullmq-add|bullmq-done> <jobs> - <in flight>   ·   node reference.mjs bullmq-acks <updates>
// Env: DATABASE_URL (a fresh database of its own), REDIS_URL, PREFIX (BullMQ's key prefix, removed after).
// Enqueues the jobs first (not timed), then times one worker with the given concurrency from its start to the
// last job done, and prints {"jobs_per_s": …} as its last line.
const [lib, jobsArg, progressArg, concurrencyArg] = process.argv.slice(2)
const jobs = Number(jobsArg)
const progress = progressArg === '1'
const concurrency = Number(concurrencyArg)
const databaseUrl = process.env.DATABASE_URL
let done = 0
let finish
const allDone = new Promise((resolve) => (finish = resolve))
const tick = () => {
  if (++done === jobs) finish()
}

async function pgBoss() {
  const { default: PgBoss } = await import('pg-boss')
  const boss = new PgBoss({ connectionString: databaseUrl, max: 10 })
  boss.on('error', () => {})
  await boss.start()
  const name = 'bench'
  await boss.createQueue(name)
  for (let i = 0; i < jobs; i += 1000) {
    await boss.insert(Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ name, data: { n: i + k } })))
  }
  const started = performance.now()
  // pg-boss fetches in batches; `batchSize` = the concurrency asked of the others.
  await boss.work(name, { batchSize: concurrency, pollingIntervalSeconds: 0.5 }, async (batch) => {
    for (const _ of batch) tick()
  })
  await allDone
  const seconds = (performance.now() - started) / 1000
  await boss.stop({ graceful: false, wait: false }).catch(() => {})
  return seconds
}

async function graphileWorker() {
  const { run, makeWorkerUtils, Logger } = await import('graphile-worker')
  // Silent: its default logs a line per job to stdout, which would be timed too.
  const logger = new Logger(() => () => {})
  const utils = await makeWorkerUtils({ connectionString: databaseUrl, logger })
  await utils.migrate()
  for (let i = 0; i < jobs; i += 1000) {
    await utils.addJobs(Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ identifier: 'job', payload: { n: i + k } })))
  }
  await utils.release()
  const started = performance.now()
  const runner = await run({ connectionString: databaseUrl, concurrency, noHandleSignals: true, taskList: { job: async () => tick() }, logger })
  await allDone
  const seconds = (performance.now() - started) / 1000
  await runner.stop()
  return seconds
}

async function bullmq() {
  const { Queue, Worker } = await import('bullmq')
  const url = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
  const connection = { host: url.hostname, port: Number(url.port || 6379) }
  const prefix = process.env.PREFIX ?? 'bench-bullmq'
  const queue = new Queue('bench', { connection, prefix })
  for (let i = 0; i < jobs; i += 1000) {
    await queue.addBulk(Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ name: 'job', data: { n: i + k } })))
  }
  const started = performance.now()
  const worker = new Worker(
    'bench',
    async (job) => {
      if (progress) for (let p = 1; p <= 5; p++) await job.updateProgress(p * 20)
    },
    { connection, prefix, concurrency, removeOnComplete: { count: 0 } },
  )
  worker.on('completed', tick)
  await allDone
  const seconds = (performance.now() - started) / 1000
  await worker.close()
  await queue.obliterate({ force: true }).catch(() => {})
  await queue.close()
  return seconds
}

/** Promise.withResolvers, which Node 20 lacks. */
const deferred = () => {
  let resolve
  const promise = new Promise((r) => (resolve = r))
  return { promise, resolve }
}

const quantile = (xs, q) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * q) - 1))]
}

async function bullmqParts() {
  const { Queue, Worker, QueueEvents } = await import('bullmq')
  const url = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
  const connection = { host: url.hostname, port: Number(url.port || 6379) }
  const prefix = process.env.PREFIX ?? 'bench-bullmq'
  return { Queue, Worker, QueueEvents, connection, prefix }
}

/** `bullmq-add <jobs> <in flight>`: one queue.add at a time per lane, the lanes at once (adds/s). */
async function bullmqAdd() {
  const { Queue, connection, prefix } = await bullmqParts()
  const queue = new Queue('adds', { connection, prefix })
  await queue.waitUntilReady()
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs) {
        next++
        await queue.add('job', { n: next })
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  await queue.obliterate({ force: true }).catch(() => {})
  await queue.close()
  return { seconds, rate: jobs / seconds }
}

/**
 * `bullmq-done <jobs> <in flight>`: a worker (concurrency 50) runs; each lane adds a job and waits for
 * QueueEvents' `completed` of it: add → completion observed, p50 and p99.
 */
async function bullmqDone() {
  const { Queue, Worker, QueueEvents, connection, prefix } = await bullmqParts()
  const queue = new Queue('done', { connection, prefix })
  const events = new QueueEvents('done', { connection, prefix })
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()])
  const waiting = new Map()
  events.on('completed', ({ jobId }) => waiting.get(jobId)?.())
  const worker = new Worker('done', async () => {}, { connection, prefix, concurrency: 50, removeOnComplete: { count: 0 } })
  await worker.waitUntilReady()
  const latencies = []
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs) {
        next++
        const t0 = performance.now()
        const { promise, resolve } = deferred()
        const job = await queue.add('job', {})
        waiting.set(job.id, resolve)
        await promise
        waiting.delete(job.id)
        latencies.push(performance.now() - t0)
      }
    }),
  )
  await worker.close()
  await events.close()
  await queue.obliterate({ force: true }).catch(() => {})
  await queue.close()
  return { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99) }
}

/** `bullmq-acks <updates>`: one job whose handler awaits job.updateProgress that many times (updates/s). */
async function bullmqAcks() {
  const { Queue, Worker, connection, prefix } = await bullmqParts()
  const queue = new Queue('acks', { connection, prefix })
  let result
  const { promise, resolve } = deferred()
  const worker = new Worker(
    'acks',
    async (job) => {
      const started = performance.now()
      for (let i = 0; i < jobs; i++) await job.updateProgress(i % 101)
      const seconds = (performance.now() - started) / 1000
      result = { seconds, rate: jobs / seconds }
      resolve()
    },
    { connection, prefix, concurrency: 1 },
  )
  await queue.add('job', {})
  await promise
  await worker.close()
  await queue.obliterate({ force: true }).catch(() => {})
  await queue.close()
  return result
}

const parts = { 'bullmq-add': bullmqAdd, 'bullmq-done': bullmqDone, 'bullmq-acks': bullmqAcks }
if (lib in parts) {
  console.log(JSON.stringify({ lib, ...(await parts[lib]()) }))
  process.exit(0)
}
const runners = { 'pg-boss': pgBoss, 'graphile-worker': graphileWorker, bullmq }
const seconds = await runners[lib]()
console.log(JSON.stringify({ lib, jobs, progress, seconds, jobs_per_s: jobs / seconds }))
process.exit(0)
