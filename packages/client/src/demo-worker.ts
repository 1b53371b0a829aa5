/**
 * A demo worker: `npm run worker:demo` (README: 60-second quick start, which lists its knobs).
 *
 * Environment:
 *   PROCESSES_URL  the server (default http://localhost:3000)
 *   WORKER_TOKEN   a worker token (`npm run cli -- create-worker-token --workspace ID`, or the one printed at first start)
 *   DEMO_TYPES     types to claim, comma-separated, or `*` for any (default csv_import,ai_location_import)
 *
 * `csv_import` simulates importing `metadata.rows` rows (default 200) in ~10 s,
 * failing at `metadata.fail_at_row` when given (in every attempt, or in the first
 * `metadata.fail_attempts` only); `ai_location_import` matches `metadata.locations`
 * locations (default 60) and asks for review; any other type runs ten generic steps.
 * Every one honours cancel. Prints one line per event.
 */
import type { Process } from './shapes.ts'
import { abortableSleep as sleep } from './util.ts'
import { connectWorker, type JobContext, type JobResult, type WorkerEvent } from './worker.ts'

const ROW_MS = 50 // 200 rows ≈ 10 s: long enough to watch, cancel or restart the server
const PROGRESS_EVERY_ROWS = 20

const url = process.env.PROCESSES_URL ?? 'http://localhost:3000'
const token = process.env.WORKER_TOKEN
if (!token) {
  console.error('WORKER_TOKEN is not set: create one with `npm run cli -- create-worker-token --workspace 1`')
  process.exit(1)
}
const demoTypes = process.env.DEMO_TYPES ?? 'csv_import,ai_location_import'
const types = demoTypes.trim() === '*' ? undefined : demoTypes.split(',').map((type) => type.trim())

const worker = connectWorker(url, token, {
  types,
  concurrency: 2,
  handler: runJob,
  onEvent: (event) => print(describe(event)),
  onError: (error) => print(`error: ${error.message}`),
})
print(`worker ${worker.workerId} → ${url}, claiming ${types ? types.join(', ') : 'any type'}`)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1) // a second Ctrl-C: do not wait
    stopping = true
    print('stopping: waiting up to 10 s for running jobs (Ctrl-C again to quit now)')
    void worker.close({ timeoutMs: 10_000 }).then(() => process.exit(0))
  })
}
// A refused token (unknown, expired, revoked) stops the worker: retrying would not help.
void worker.stopped.then(({ error }) => {
  if (error) process.exit(1)
})

function runJob(job: Process, ctx: JobContext): Promise<JobResult> {
  switch (job.type) {
    case 'csv_import':
      return importCsv(job, ctx)
    case 'ai_location_import':
      return importLocations(job, ctx)
    default:
      return runSteps(job, ctx)
  }
}

async function importCsv(job: Process, ctx: JobContext): Promise<JobResult> {
  const rows = positiveInt(job.metadata.rows, 200)
  // `fail_attempts: 1` with `max_attempts: 3`: the first attempt fails, the retry completes.
  const failAttempts = positiveInt(job.metadata.fail_attempts, Number.POSITIVE_INFINITY)
  const failAtRow = ctx.attempt <= failAttempts ? positiveInt(job.metadata.fail_at_row, 0) : 0
  void ctx.log(`Reading ${rows} rows`)
  let imported = 0
  let skipped = 0
  for (let row = 1; row <= rows; row++) {
    await sleep(ROW_MS, ctx.signal)
    if (ctx.signal.aborted) return {}
    if (row === failAtRow) throw new Error(`Row ${row}: unreadable postcode`)
    // Every 23rd row is "invalid", so rows_skipped is not always 0.
    if (row % 23 === 0) skipped++
    else imported++
    if (row % PROGRESS_EVERY_ROWS === 0 || row === rows) {
      report(job, ctx, (row / rows) * 100, `Imported ${row}/${rows} rows`)
    }
  }
  return { result_summary: { rows_imported: imported, rows_skipped: skipped } }
}

async function importLocations(job: Process, ctx: JobContext): Promise<JobResult> {
  const locations = positiveInt(job.metadata.locations, 60)
  let matched = 0
  for (let location = 1; location <= locations; location++) {
    await sleep(ROW_MS * 2, ctx.signal)
    if (ctx.signal.aborted) return {}
    if (location % 7 !== 0) matched++
    if (location % 10 === 0 || location === locations) {
      report(job, ctx, (location / locations) * 100, `Matched ${matched}/${locations} locations`)
    }
  }
  // A draft for a human: the process waits in waiting_review for Approve / Discard.
  return { review: true, result_summary: { locations_matched: matched, locations_unmatched: locations - matched } }
}

async function runSteps(job: Process, ctx: JobContext): Promise<JobResult> {
  const steps = 10
  for (let step = 1; step <= steps; step++) {
    await sleep(500, ctx.signal)
    if (ctx.signal.aborted) return {}
    report(job, ctx, (step / steps) * 100, `Step ${step}/${steps}`)
  }
  return { result_summary: { steps } }
}

/** Fire and forget: progress never rejects, and the next one supersedes a dropped one. */
function report(job: Process, ctx: JobContext, percent: number, message: string): void {
  print(`#${job.id} ${Math.round(percent)}% ${message}`)
  void ctx.progress(percent, message)
}

function describe(event: WorkerEvent): string {
  switch (event.type) {
    case 'connected':
      return `connected as ${event.workerId}`
    case 'disconnected':
      return `disconnected (${event.code}${event.reason ? ` ${event.reason}` : ''}), reconnecting in ${event.reconnectInMs} ms`
    case 'claimed':
      return `#${event.process.id} claimed ${event.process.type} (attempt ${event.process.attempts})`
    case 'completed':
      return `#${event.process.id} ${event.review ? 'waiting for review' : 'completed'}`
    case 'failed': {
      // With attempts left the server puts it back to pending (README: Queue): say so rather than "failed".
      const { id, attempts, max_attempts: max } = event.process
      return attempts < max ? `#${id} attempt ${attempts} failed: ${event.error}; will retry (${attempts + 1} of ${max})` : `#${id} failed: ${event.error}`
    }
    case 'cancelled':
      return `#${event.process.id} cancelled`
    case 'lost':
      return `#${event.process.id} lost (${event.code}): another attempt owns it now`
    case 'stopped':
      return event.error ? `stopped: ${event.error.message}` : 'stopped'
  }
}

function print(line: string): void {
  console.log(`${new Date().toISOString().slice(11, 23)} ${line}`)
}

function positiveInt(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : fallback
}
