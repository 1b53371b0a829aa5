// Shared test plumbing: a fresh database per test file (a new Postgres database when DATABASE_URL is set,
// an in-memory PGlite otherwise), a Redis prefix per file, tenants with tokens, servers in-process or as
// real child processes on free ports.
import { afterAll, expect } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { freePort } from './net'
import { sleep, waitFor, within } from './wait'
import { createHandler, type Handler } from '../../src/app'
import { createApiToken, createUser, createWorkerToken, createWorkspace } from '../../src/auth/queries'
import { loadConfig, type Config } from '../../src/config'
import { openDatabase, type Database, type Sql } from '../../src/db/client'
import { migrate } from '../../src/db/migrate'
import { Logger } from '../../src/ops/log'
import { buildServices, startServer, type Running } from '../../src/server'
import type { Services } from '../../src/wiring'

export const ROOT = new URL('../..', import.meta.url).pathname
export const BUN = process.execPath
export const hasPostgres = Boolean(process.env.DATABASE_URL)
export const hasRedis = Boolean(process.env.REDIS_URL)
export const quietLogger = () => new Logger('silent')

const suffix = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
export const redisPrefix = () => `test:${suffix()}:`

/** A fresh, empty database URL of its own (Postgres only); dropped when the file's tests end. */
export async function freshDatabaseUrl(): Promise<string> {
  const base = process.env.DATABASE_URL
  if (!base) throw new Error('freshDatabaseUrl needs DATABASE_URL')
  const name = `ps_test_${suffix()}`
  const admin = await openDatabase({ url: base, dataDir: '', poolMax: 1 })
  await admin.sql.unsafe(`create database ${name}`)
  await admin.close()
  afterAll(async () => {
    const admin = await openDatabase({ url: base, dataDir: '', poolMax: 1 })
    await admin.sql.unsafe(`drop database if exists ${name} with (force)`).then(undefined, () => {})
    await admin.close()
  })
  const url = new URL(base)
  url.pathname = `/${name}`
  return url.toString()
}

/** A fresh migrated Postgres database with a tenant and a worker token: where a multi-process test starts. */
export async function seededDatabase() {
  const url = await freshDatabaseUrl()
  const db = await openDatabase({ url, dataDir: '', poolMax: 2 })
  afterAll(() => db.close().catch(() => {}))
  await migrate(db.sql)
  return { url, db, tenant: await createTenant(db.sql), wtoken: await workerToken(db.sql) }
}

/** A migrated database for this test file: Postgres when DATABASE_URL is set, else in-memory PGlite. */
export async function testDatabase(): Promise<{ db: Database; url: string | undefined }> {
  const url = hasPostgres ? await freshDatabaseUrl() : undefined
  const db = await openDatabase({ url, dataDir: 'memory://', poolMax: 10 })
  await migrate(db.sql)
  afterAll(() => db.close().catch(() => {}))
  return { db, url }
}

/** Config for an in-process server: Redis (with a prefix of its own) whenever REDIS_URL is set. */
export function testConfig(env: Record<string, string | undefined> = {}): Config {
  return loadConfig({
    LOG_LEVEL: 'silent',
    PORT: '0',
    METRICS_PORT: '0',
    REFUSAL_DELAY_MS: '0',
    DATA_DIR: 'memory://',
    REDIS_URL: process.env.REDIS_URL,
    REDIS_PREFIX: redisPrefix(),
    ...env,
  })
}

export interface Tenant {
  workspaceId: number
  userId: number
  token: string
  tokenId: number
}

export async function createTenant(sql: Sql, name = `ws-${suffix()}`): Promise<Tenant> {
  const workspace = await createWorkspace(sql, name)
  const user = await createUser(sql, `${suffix()}@example.com`, workspace.id, 'owner')
  const { id, token } = await createApiToken(sql, user.id, 'test', null)
  return { workspaceId: workspace.id, userId: user.id, token, tokenId: id }
}

export async function workerToken(sql: Sql): Promise<string> {
  return (await createWorkerToken(sql, 'test worker')).token
}

/** In-process app for route tests: `app.handle`-style requests through the full handler, no socket. */
export async function inProcessApp(env: Record<string, string> = {}): Promise<{ s: Services; handle: Handler; db: Database; request: Requester }> {
  const { db } = await testDatabase()
  const { services, sweeper } = await buildServices(testConfig(env), { db, log: quietLogger() })
  void sweeper
  services.audit.start()
  afterAll(() => services.audit.stop())
  const handle = createHandler(services)
  return { s: services, handle, db, request: requester(handle) }
}

export type Requester = (
  method: string,
  path: string,
  o?: { token?: string | null; body?: unknown; headers?: Record<string, string> },
) => Promise<{ status: number; body: any; headers: Headers }>

export function requester(handle: Handler): Requester {
  return async (method, path, o = {}) => {
    const headers: Record<string, string> = { ...o.headers }
    if (o.token) headers.authorization = `Bearer ${o.token}`
    let body: string | undefined
    if (o.body !== undefined) {
      body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body)
      headers['content-type'] ??= 'application/json'
    }
    const response = await handle(new Request(`http://test.local${path}`, { method, headers, body }))
    const text = await response.text()
    let parsed: unknown = text
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {}
    return { status: response.status, body: parsed, headers: response.headers }
  }
}

/** REST calls with fetch against a listening server, as one tenant: what worker tests check their frames by. */
export function restAs(base: string, token: string) {
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
  return {
    auth,
    async create(type: string) {
      const response = await fetch(`${base}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type }) })
      expect(response.status).toBe(201)
      return (await response.json()) as any
    },
    get: async (id: number) => (await (await fetch(`${base}/processes/${id}`, { headers: auth })).json()) as any,
    events: async (id: number) => (await (await fetch(`${base}/processes/${id}/events`, { headers: auth })).json()) as any[],
  }
}

/** A real listening server in this process. */
export async function listeningServer(env: Record<string, string | undefined> = {}, db?: Database): Promise<Running> {
  const running = await startServer(testConfig(env), { db, log: quietLogger() })
  afterAll(() => running.stop())
  return running
}

export interface Child {
  url: string
  port: number
  /** GET /metrics on the child's metrics port (METRICS_PORT, a free one unless the test names it). */
  metricsUrl: string
  proc: ReturnType<typeof Bun.spawn>
  output: () => string
  kill(signal?: NodeJS.Signals | number): Promise<number>
}

/** A real server process (`bun src/main.ts`) on a free port; killed when the file's tests end. */
export async function spawnServer(env: Record<string, string | undefined>, o: { cmd?: string[]; port?: number } = {}): Promise<Child> {
  const port = o.port ?? (await freePort())
  const metricsPort = env.METRICS_PORT ?? String(await freePort())
  const proc = Bun.spawn(o.cmd ?? [BUN, 'src/main.ts'], {
    cwd: ROOT,
    // Refusals at once (REFUSAL_DELAY_MS=0) unless a test asks: tests refuse on purpose, often.
    env: { ...process.env, LOG_LEVEL: 'warn', METRICS_PORT: metricsPort, REFUSAL_DELAY_MS: '0', ...env, PORT: String(port) } as Record<string, string>,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const output = collectOutput(proc)
  const child: Child = {
    url: `http://127.0.0.1:${port}`,
    port,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    proc,
    output,
    async kill(signal = 'SIGTERM') {
      if (proc.exitCode === null && !proc.killed) proc.kill(signal)
      return proc.exited
    },
  }
  afterAll(() => child.kill('SIGKILL'))
  // A deadline to end a failing run, not a speed expectation: an embedded first start runs PGlite's initdb.
  await waitFor(
    async () => (await fetch(`${child.url}/health`).catch(() => null))?.ok === true,
    50_000,
    () => `server on ${port} did not start:\n${output()}`,
  )
  return child
}

/** Everything a child writes to stdout and stderr so far, interleaved as it arrives. */
/**
 * Kills a process and everything under it (Linux /proc): `npm run x` is npm → sh → the program, and killing npm
 * alone leaves the program running on, reparented.
 */
export function killTree(pid: number, signal: NodeJS.Signals = 'SIGKILL') {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so read after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)])
    } catch {
      // gone meanwhile
    }
  }
  const all: number[] = []
  const walk = (p: number) => {
    all.push(p)
    for (const c of children.get(p) ?? []) walk(c)
  }
  walk(pid)
  for (const p of all.reverse()) {
    try {
      process.kill(p, signal)
    } catch {
      // already gone
    }
  }
}

export function collectOutput(proc: { stdout: unknown; stderr: unknown }): () => string {
  let output = ''
  const decoder = new TextDecoder()
  for (const stream of [proc.stdout, proc.stderr] as ReadableStream<Uint8Array>[]) {
    void (async () => {
      for await (const chunk of stream) output += decoder.decode(chunk)
    })()
  }
  return () => output
}

export interface Run {
  code: number
  stdout: string
  stderr: string
}

/**
 * This process's environment without its database, Redis, port and npm variables (a test names its own), plus
 * `env`. The metrics port is any free one (METRICS_PORT=0) unless `env` names it: tests running at once on one
 * machine must not race for the default 9464. Refusals are sent at once (REFUSAL_DELAY_MS=0) unless asked.
 */
export function ownEnv(env: Record<string, string | undefined> = {}): Record<string, string> {
  const out: Record<string, string> = { METRICS_PORT: '0', REFUSAL_DELAY_MS: '0' }
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || ['DATABASE_URL', 'DATA_DIR', 'REDIS_URL', 'PORT', 'METRICS_PORT'].includes(key) || key.startsWith('npm_')) continue
    out[key] = value
  }
  for (const [key, value] of Object.entries(env)) if (value !== undefined) out[key] = value
  return out
}

/** Runs a command in the repository to its end, in ownEnv(env) (killed after 60 s, which fails the test by its exit code). */
export async function runToEnd(cmd: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const proc = Bun.spawn(cmd, { cwd: ROOT, env: ownEnv(env), stdout: 'pipe', stderr: 'pipe' })
  const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000)
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  clearTimeout(timer)
  return { code, stdout, stderr }
}

export interface OwnRedis {
  url: string
  port: number
  stop(): Promise<void>
  start(): Promise<void>
}

/** A redis-server of this test's own on a free port, stopped by PID: the shared one is never touched. */
export async function ownRedis(): Promise<OwnRedis> {
  const port = await freePort()
  let proc: ReturnType<typeof Bun.spawn> | null = null
  const self: OwnRedis = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async start() {
      proc = Bun.spawn(['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
        stdout: 'ignore',
        stderr: 'ignore',
      })
      await waitFor(
        async () => {
          const probe = Bun.spawnSync(['redis-cli', '-p', String(port), 'ping'])
          return probe.stdout.toString().trim() === 'PONG'
        },
        10_000,
        `redis-server on ${port}`,
      )
    },
    async stop() {
      if (!proc) return
      proc.kill('SIGKILL')
      await proc.exited
      proc = null
    },
  }
  await self.start()
  afterAll(() => self.stop())
  return self
}

export { freePort, sleep, waitFor, within }
