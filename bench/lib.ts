// Shared plumbing for the benchmarks: a fresh Postgres database and Redis prefix per run, child processes
// (servers, load generators) with their RSS and CPU read from /proc, wrk, latency histograms, the results table
// and the JSON file in bench-results/. Everything listens and connects on 127.0.0.1 only.
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { createApiToken, createUser, createWorkerToken, createWorkspace } from '../src/auth/queries'
import { openDatabase, type Database } from '../src/db/client'
import { migrate } from '../src/db/migrate'
import { freePort } from '../tests/support/net'
import { sleep, waitFor, within } from '../tests/support/wait'

export const ROOT = new URL('..', import.meta.url).pathname
export const BENCH_DIR = new URL('.', import.meta.url).pathname
export const BUN = process.execPath
export const BASE_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const BASE_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
/** Linux reports CPU time in clock ticks; 100 per second on every mainstream kernel config. */
const CLOCK_TICKS_PER_S = 100

const suffix = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
export { sleep }
export { Histogram, now } from './histogram'

// ---------------------------------------------------------------------------------------------
// Cleanup: every resource a benchmark makes is registered here and released in reverse order,
// also on Ctrl-C, so an interrupted run leaves no database, server or client behind.

const cleanups: Array<() => unknown> = []
export function defer(fn: () => unknown) {
  cleanups.push(fn)
}
let cleaning: Promise<void> | null = null
/** Releases everything deferred, newest first; a second caller (Ctrl-C during a cleanup) waits for the same run. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length > 0) {
      const fn = cleanups.pop()!
      try {
        await fn()
      } catch (error) {
        console.error(`cleanup failed: ${String(error)}`)
      }
    }
  })().finally(() => {
    cleaning = null
  })
  return cleaning
}
let interrupted = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130)
    interrupted = true
    console.error(`\n${signal}: cleaning up…`)
    void cleanupAll().then(() => process.exit(130))
  })
}

// ---------------------------------------------------------------------------------------------
// Database, tenant, Redis.

export interface BenchDatabase {
  name: string
  url: string
  db: Database
}

/** CREATE DATABASE bench_<random>, migrated; dropped (with force) when the benchmark ends. */
export async function freshDatabase(poolMax = 4): Promise<BenchDatabase> {
  const name = `bench_${suffix()}`
  const admin = await openDatabase({ url: BASE_DATABASE_URL, dataDir: '', poolMax: 1 })
  await admin.sql.unsafe(`create database ${name}`)
  await admin.close()
  defer(async () => {
    const admin = await openDatabase({ url: BASE_DATABASE_URL, dataDir: '', poolMax: 1 })
    await admin.sql.unsafe(`drop database if exists ${name} with (force)`)
    await admin.close()
  })
  const url = new URL(BASE_DATABASE_URL)
  url.pathname = `/${name}`
  const db = await openDatabase({ url: url.toString(), dataDir: '', poolMax })
  defer(() => db.close())
  await migrate(db.sql)
  return { name, url: url.toString(), db }
}

export interface BenchTenant {
  workspaceId: number
  userId: number
  token: string
  workerToken: string
}

export async function createBenchTenant(db: Database): Promise<BenchTenant> {
  const workspace = await createWorkspace(db.sql, `bench-${suffix()}`)
  const user = await createUser(db.sql, `bench-${suffix()}@example.com`, workspace.id, 'owner')
  const { token } = await createApiToken(db.sql, user.id, 'bench', null)
  const worker = await createWorkerToken(db.sql, 'bench worker')
  return { workspaceId: workspace.id, userId: user.id, token, workerToken: worker.token }
}

/** `count` processes already running, leased to `workerId` (attempt 1): what a worker that claimed them holds. */
export async function insertRunning(db: Database, workspaceId: number, count: number, workerId: (i: number) => string): Promise<number[]> {
  const workers = Array.from({ length: count }, (_, i) => workerId(i))
  const rows = await db.sql<{ id: number }[]>`
    insert into processes (workspace_id, type, status, progress, message, metadata, attempts, worker_id, started_at, heartbeat_at)
    select ${workspaceId}, 'bench_job', 'running', 0, 'Started', jsonb_build_object('n', g), 1, w, now(), now()
      from unnest(${workers}::text[]) with ordinality as x(w, g)
    returning id`
  return rows.map((r) => r.id).sort((a, b) => a - b)
}

export const redisPrefix = () => `bench:${suffix()}:`

/** Removes whatever keys a run left under its prefix (the server only publishes, so normally none). */
export function cleanRedisPrefix(redisUrl: string, prefix: string) {
  defer(() => {
    const u = new URL(redisUrl)
    const keys = Bun.spawnSync(['redis-cli', '-h', u.hostname, '-p', u.port || '6379', '--scan', '--pattern', `${prefix}*`])
      .stdout.toString()
      .split('\n')
      .filter(Boolean)
    if (keys.length > 0) Bun.spawnSync(['redis-cli', '-h', u.hostname, '-p', u.port || '6379', 'del', ...keys])
  })
}

/** A redis-server of the benchmark's own on a free port (for clean INFO commandstats); stopped by its PID. */
export async function ownRedis(): Promise<{ url: string; port: number; cli: (...args: string[]) => string }> {
  if (!Bun.which('redis-server')) throw new Error('redis-server is not installed (apt-get install -y redis-server)')
  const port = await freePort()
  const proc = Bun.spawn(['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxclients', '1000'], {
    stdout: 'ignore',
    stderr: 'ignore',
  })
  defer(async () => {
    proc.kill('SIGKILL')
    await proc.exited
  })
  const cli = (...args: string[]) => Bun.spawnSync(['redis-cli', '-p', String(port), ...args]).stdout.toString()
  await waitFor(() => cli('ping').trim() === 'PONG', 10_000, `redis-server on ${port}`)
  return { url: `redis://127.0.0.1:${port}`, port, cli }
}

/** Calls of one command from `INFO commandstats` (0 when it was never called). */
export function redisCommandCalls(info: string, command: string): number {
  const match = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)
  return match ? Number(match[1]) : 0
}

// ---------------------------------------------------------------------------------------------
// Child processes.

export interface Child {
  label: string
  pid: number
  proc: ReturnType<typeof Bun.spawn>
  output(): string
  /** Sends one line on the child's stdin (the load generators' commands). */
  send(line: string): void
  /** Resolves with the next stdout line that parses as JSON and satisfies `match`. */
  nextMessage<T = any>(match: (m: any) => boolean, timeoutMs?: number): Promise<T>
  readonly messages: any[]
  stop(signal?: NodeJS.Signals): Promise<void>
}

/**
 * Starts a child process with the soft open-file limit raised to the hard one (a stream is a socket).
 * A load generator (`messages`, the default) talks in JSON lines on stdout, read here line by line.
 * A server under test writes to a log file instead, as a container's log driver would have it: at
 * LOG_LEVEL=info it prints a line per request, and draining that pipe here would take CPU from the very
 * server being measured, on the same cores. Its output is read from the file only when asked.
 */
export function spawnChild(label: string, cmd: string[], env: Record<string, string | undefined> = {}, o: { messages?: boolean } = {}): Child {
  const keepMessages = o.messages ?? true
  const logFile = keepMessages ? null : join(scratchDir(), `${label.replace(/[^\w-]+/g, '_')}-${suffix()}.log`)
  let output = ''
  const messages: any[] = []
  const waiters: Array<() => void> = []
  const logFd = logFile ? openSync(logFile, 'a') : null
  const proc = Bun.spawn(['/bin/sh', '-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'sh', ...cmd], {
    cwd: ROOT,
    env: { ...process.env, ...env } as Record<string, string>,
    stdin: 'pipe',
    stdout: logFd ?? 'pipe',
    stderr: logFd ?? 'pipe',
  })
  if (logFd !== null) closeSync(logFd)
  const decoder = new TextDecoder()
  const append = (text: string) => {
    output += text
    if (output.length > 200_000) output = output.slice(-100_000)
  }
  if (!logFile) {
    void (async () => {
      let pending = ''
      for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
        const text = decoder.decode(chunk, { stream: true })
        append(text)
        pending += text
        let nl: number
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl)
          pending = pending.slice(nl + 1)
          if (line.startsWith('{')) {
            try {
              messages.push(JSON.parse(line))
            } catch {}
          }
        }
        for (const w of waiters.splice(0)) w()
      }
      for (const w of waiters.splice(0)) w()
    })()
    void (async () => {
      for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) append(decoder.decode(chunk))
    })()
  }
  const tail = () => {
    if (!logFile) return output
    try {
      const text = readFileSync(logFile, 'utf8')
      return text.length > 100_000 ? text.slice(-100_000) : text
    } catch {
      return ''
    }
  }
  let consumed = 0
  const child: Child = {
    label,
    pid: proc.pid,
    proc,
    messages,
    output: tail,
    send(line) {
      if (proc.exitCode !== null) return
      const stdin = proc.stdin as import('bun').FileSink
      stdin.write(`${line}\n`)
      stdin.flush()
    },
    async nextMessage(match, timeoutMs = 60_000) {
      let found: any
      const answered = () => {
        for (let i = consumed; i < messages.length; i++) {
          if (match(messages[i])) {
            consumed = i + 1
            found = messages[i]
            return true
          }
        }
        if (proc.exitCode !== null) throw new Error(`${label} exited (${proc.exitCode}) before answering:\n${tail().slice(-3000)}`)
        return false
      }
      await waitFor(answered, timeoutMs, () => `${label} to answer within ${timeoutMs} ms:\n${tail().slice(-3000)}`, {
        pollMs: 500,
        wake: (resume) => waiters.push(resume),
      })
      return found
    },
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && !proc.killed) proc.kill(signal)
      const exited = await within(
        proc.exited.then(() => true),
        12_000,
        false,
      )
      if (!exited) {
        proc.kill('SIGKILL')
        await proc.exited
      }
    },
  }
  defer(() => child.stop('SIGKILL'))
  return child
}

export interface ServerChild extends Child {
  url: string
  port: number
  /** GET /metrics on the server's metrics port (a free one, as METRICS_PORT). */
  metricsUrl: string
}

/** Starts a server script on a free port (PORT in its env) and waits for GET /health. */
export async function startServer(label: string, cmd: string[], env: Record<string, string | undefined> = {}): Promise<ServerChild> {
  const port = await freePort()
  const metricsPort = await freePort()
  const child = spawnChild(label, cmd, { LOG_LEVEL: 'warn', ...env, PORT: String(port), METRICS_PORT: String(metricsPort) }, { messages: false })
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    async () => (await fetch(`${url}/health`).catch(() => null))?.ok === true,
    30_000,
    () => `${label} to start:\n${child.output()}`,
  )
  return Object.assign(child, { url, port, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics` })
}

/**
 * The real server: `bun src/main.ts` against a Postgres database and (optionally) Redis.
 * BENCH_SERVER_MAIN points at another entry (a worktree of another branch) to compare two versions;
 * BENCH_SERVER_BUN_ARGS adds flags for bun, e.g. `--cpu-prof-md --cpu-prof-dir=/tmp/prof` (written at exit).
 */
/**
 * The limits (README "Limits") protect a deployment from one caller; a benchmark is that one caller on
 * purpose (bench rest drives ~20k req/s with one token, fanout holds 15,000 streams of one token, ingest
 * thousands of waiting claims), so the child servers it starts run with them off unless the benchmark says.
 */
export const BENCH_LIMITS_OFF = {
  RATE_LIMIT_PER_TOKEN_PER_S: '0',
  RATE_LIMIT_PER_WORKSPACE_PER_S: '0',
  MAX_STREAMS_PER_TOKEN: '0',
  MAX_WAITING_CLAIMS_PER_SOCKET: '0',
  MAX_SOCKETS_PER_WORKER_TOKEN: '0',
  MAX_FRAMES_IN_FLIGHT_PER_SOCKET: '10000000',
  // Quotas still checked, with room for any backlog a benchmark builds (its cost stays in the figures).
  WORKSPACE_MAX_PENDING: '100000000',
  WORKSPACE_MAX_PENDING_TYPES: '10000000',
}

export function startProcessesServer(label: string, env: Record<string, string | undefined>) {
  const flags = (process.env.BENCH_SERVER_BUN_ARGS ?? '').split(' ').filter(Boolean)
  return startServer(label, [BUN, ...flags, process.env.BENCH_SERVER_MAIN ?? 'src/main.ts'], { ...BENCH_LIMITS_OFF, ...env })
}

export interface ProcStat {
  rssBytes: number
  cpuSeconds: number
  threads: number
}

/** A process's command name and user+system CPU seconds, from /proc/<pid>/stat. */
function statOf(pid: number | string): { command: string; cpuSeconds: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may contain spaces) start at index 2: state is field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { command: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S }
}

/** RSS (VmRSS) and user+system CPU time of a live process, from /proc. */
export function procStat(pid: number): ProcStat {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0)
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0)
  return { rssBytes: rssKb * 1024, cpuSeconds: statOf(pid).cpuSeconds, threads }
}

/**
 * CPU seconds used so far by every Postgres process on this machine (the postmaster, its backends and
 * background workers): the database's share of a benchmark that runs on the same cores.
 */
export function postgresCpuSeconds(): number {
  let total = 0
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const { command, cpuSeconds } = statOf(entry)
      if (command.startsWith('postgres')) total += cpuSeconds
    } catch {} // gone meanwhile
  }
  return total
}

/** Reads the server's Prometheus text (`metricsUrl`: its metrics port's /metrics) into name → value (labels dropped, samples summed). */
export async function scrapeMetrics(metricsUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(metricsUrl)).text()
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line)
    if (!match) continue
    out[match[1]!] = (out[match[1]!] ?? 0) + Number(match[3])
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// wrk.

export const WRK_MISSING = [
  'wrk is not installed. The HTTP benchmarks use it as the load generator (autocannon saturates before Bun does).',
  '  Debian/Ubuntu:  sudo apt-get install -y wrk',
  '  macOS:          brew install wrk',
  '  other:          https://github.com/wg/wrk (make; put wrk on PATH)',
].join('\n')

export function hasWrk(): boolean {
  return Bun.which('wrk') !== null
}

export interface WrkResult {
  requestsPerSec: number
  requests: number
  latencyMs: { p50: number; p75: number; p90: number; p99: number; avg: number; max: number }
  non2xx3xx: number
  socketErrors: string | null
  raw: string
  /** CPU time (user + system) the server process spent during the measured run, when its pid was given. */
  serverCpuSeconds?: number
  /** CPU seconds of every Postgres process during the measured run (when asked for). */
  postgresCpuSeconds?: number
}

function toMs(value: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(value.trim())
  if (!match) return NaN
  const n = Number(match[1])
  return match[2] === 'us' ? n / 1000 : match[2] === 'ms' ? n : match[2] === 's' ? n * 1000 : n * 60_000
}

export function parseWrk(raw: string): WrkResult {
  const pct = (p: string) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(raw)?.[1] ?? '')
  const lat = /^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)/m.exec(raw)
  return {
    requestsPerSec: Number(/Requests\/sec:\s+([\d.]+)/.exec(raw)?.[1] ?? NaN),
    requests: Number(/(\d+) requests in/.exec(raw)?.[1] ?? NaN),
    latencyMs: { p50: pct('50'), p75: pct('75'), p90: pct('90'), p99: pct('99'), avg: lat ? toMs(lat[1]!) : NaN, max: lat ? toMs(lat[3]!) : NaN },
    non2xx3xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(raw)?.[1] ?? 0),
    socketErrors: /Socket errors:\s+(.*)/.exec(raw)?.[1] ?? null,
    raw,
  }
}

let scratch: string | null = null
/** A temporary directory for generated wrk scripts; removed at the end. */
export function scratchDir(): string {
  if (!scratch) {
    scratch = mkdtempSync(join(tmpdir(), 'processes-bench-'))
    const dir = scratch
    defer(() => {
      rmSync(dir, { recursive: true, force: true })
      scratch = null
    })
  }
  return scratch
}

/**
 * Runs wrk against a URL; `lua` is a script body (headers, a request() that picks ids). wrk runs in its own
 * process; a short warm-up run first (JIT, pool, caches), whose figures are discarded.
 */
export async function runWrk(o: {
  url: string
  lua?: string
  threads: number
  connections: number
  durationS: number
  warmupS: number
  serverPid?: number
  postgres?: boolean
}): Promise<WrkResult> {
  const args = [`-t${o.threads}`, `-c${o.connections}`, '--latency']
  if (o.lua) {
    const file = join(scratchDir(), `wrk-${suffix()}.lua`)
    writeFileSync(file, o.lua)
    args.push('-s', file)
  }
  const run = async (seconds: number) => {
    const proc = Bun.spawn(['wrk', ...args, `-d${seconds}s`, '--timeout', '5s', o.url], { stdout: 'pipe', stderr: 'pipe' })
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()])
    if ((await proc.exited) !== 0) throw new Error(`wrk failed: ${err || out}`)
    return parseWrk(out)
  }
  if (o.warmupS > 0) await run(o.warmupS)
  const before = o.serverPid === undefined ? null : procStat(o.serverPid)
  const postgresBefore = o.postgres ? postgresCpuSeconds() : 0
  const result = await run(o.durationS)
  if (before) result.serverCpuSeconds = procStat(o.serverPid!).cpuSeconds - before.cpuSeconds
  if (o.postgres) result.postgresCpuSeconds = postgresCpuSeconds() - postgresBefore
  return result
}

/** wrk Lua: bearer auth, extra headers, and a random id from [lo, hi] substituted for {id} in the path. */
export function wrkLua(o: { path: string; token?: string; headers?: Record<string, string>; idRange?: [number, number] }): string {
  const lines = ['math.randomseed(12345)']
  if (o.token) lines.push(`wrk.headers["Authorization"] = "Bearer ${o.token}"`)
  for (const [k, v] of Object.entries(o.headers ?? {})) lines.push(`wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`)
  if (o.idRange) {
    const [before, after] = o.path.split('{id}')
    lines.push(
      `request = function() return wrk.format("GET", ${JSON.stringify(before)} .. math.random(${o.idRange[0]}, ${o.idRange[1]}) .. ${JSON.stringify(after ?? '')}) end`,
    )
  } else lines.push(`request = function() return wrk.format("GET", ${JSON.stringify(o.path)}) end`)
  return `${lines.join('\n')}\n`
}

// ---------------------------------------------------------------------------------------------
// Results: the table and the JSON file.

export interface Row {
  figure: string
  value: number
  unit: string
  ceiling?: number
  ceilingLabel?: string
  /** value / ceiling, or another ratio the goal is stated in. */
  ratio?: number
  goal?: string
  pass?: boolean
}

export class Report {
  readonly rows: Row[] = []
  readonly data: Record<string, unknown> = {}
  readonly notes: string[] = []
  readonly startedAt = new Date()
  readonly loadAtStart = loadavg()

  constructor(
    readonly name: string,
    readonly params: Record<string, unknown> = {},
  ) {
    // Ceilings are measured in the same run for this reason, but a busy machine still widens the spread.
    if (this.loadAtStart[0]! > cpus().length * 0.5) {
      this.note(
        `the machine was busy when this started (load average ${this.loadAtStart.map((l) => l.toFixed(2)).join(' ')} on ${cpus().length} cores): figures are noisier than usual`,
      )
    }
  }

  add(row: Row) {
    this.rows.push(row)
    return row
  }

  note(text: string) {
    this.notes.push(text)
  }

  get passed(): boolean {
    return this.rows.every((r) => r.pass !== false)
  }

  print() {
    const fmt = (n: number | undefined, unit = '') => (n === undefined || Number.isNaN(n) ? '' : `${formatNumber(n)}${unit ? ` ${unit}` : ''}`)
    const table = [
      ['figure', 'value', 'ceiling', 'ratio', 'goal', 'result'],
      ...this.rows.map((r) => [
        r.figure,
        fmt(r.value, r.unit),
        r.ceiling === undefined ? '' : `${fmt(r.ceiling, r.unit)}${r.ceilingLabel ? ` (${r.ceilingLabel})` : ''}`,
        r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`,
        r.goal ?? '',
        r.pass === undefined ? '' : r.pass ? 'PASS' : 'FAIL',
      ]),
    ]
    const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)))
    const line = (row: string[]) =>
      row
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd()
    console.log(
      `\n== bench ${this.name} ==  ${Object.entries(this.params)
        .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : v}`)
        .join('  ')}`,
    )
    console.log(line(table[0]!))
    console.log(widths.map((w) => '-'.repeat(w)).join('  '))
    for (const row of table.slice(1)) console.log(line(row))
    for (const note of this.notes) console.log(`  · ${note}`)
  }

  write(): string {
    const dir = join(ROOT, 'bench-results')
    mkdirSync(dir, { recursive: true })
    const stamp = this.startedAt.toISOString().replace(/[:.]/g, '-')
    const file = join(dir, `${this.name}-${stamp}.json`)
    writeFileSync(
      file,
      `${JSON.stringify(
        {
          name: this.name,
          started_at: this.startedAt.toISOString(),
          finished_at: new Date().toISOString(),
          passed: this.passed,
          machine: { ...machine(), load_average_at_start: this.loadAtStart },
          params: this.params,
          rows: this.rows,
          notes: this.notes,
          data: this.data,
        },
        null,
        2,
      )}\n`,
    )
    return file
  }
}

export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  const abs = Math.abs(n)
  if (abs >= 1000) return Math.round(n).toLocaleString('en-US')
  if (abs >= 100) return n.toFixed(0)
  if (abs >= 10) return n.toFixed(1)
  return n.toFixed(2)
}

export function machine() {
  return {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model,
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    bun: Bun.version,
    load_average: loadavg(),
    open_files_hard_limit: Number(Bun.spawnSync(['/bin/sh', '-c', 'ulimit -Hn']).stdout.toString().trim()) || null,
  }
}

export const KiB = 1024
export const MiB = 1024 * 1024
export const mb = (bytes: number) => bytes / MiB

export { freePort, waitFor }
