// One SQL handle for both backends: postgres.js against a server, or embedded PGlite.
// Queries everywhere are postgres.js tagged templates; the PGlite adapter below speaks
// the same subset (parameters, nested fragments, begin, unsafe), so the very same SQL runs on both.
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'postgres'

export type Row = Record<string, any>

export interface Sql {
  <T extends readonly unknown[] = Row[]>(strings: TemplateStringsArray, ...values: unknown[]): PromiseLike<T>
  /** Runs fn in one transaction; commits when it resolves, rolls back when it throws. */
  begin<T>(fn: (tx: Sql) => Promise<T>): Promise<T>
  /** Raw SQL text, possibly several statements, no parameters: migrations only. */
  unsafe(text: string): PromiseLike<unknown>
  end(): Promise<void>
}

export interface Database {
  sql: Sql
  kind: 'postgres' | 'pglite'
  close(): Promise<void>
}

export interface OpenOptions {
  url?: string
  dataDir: string
  poolMax: number
  /**
   * Postgres only: a query, or the wait for a transaction to begin, that takes longer fails with
   * QUERY_TIMEOUT (a 503 `unavailable`). The server sets it; the CLI and scripts run unbounded.
   */
  queryTimeoutMs?: number
  /**
   * Postgres only: the sessions' statement_timeout, so Postgres itself cancels a statement running longer (the
   * client-side deadline above only stops waiting for it). 0 or unset: none. PGlite has no timer to run it.
   */
  statementTimeoutMs?: number
}

/** The server's bound on one query: with one or two queries per request, an answer (503 at worst) comes within 5 s. */
export const SERVER_QUERY_TIMEOUT_MS = 3000

const queryTimeout = (ms: number) => Object.assign(new Error(`query timed out after ${ms} ms`), { code: 'QUERY_TIMEOUT' })

/**
 * `work`'s outcome, or a QUERY_TIMEOUT error (503 `unavailable` to clients) once `ms` have passed. The work
 * itself is not cancelled: `onExpired` is told, for a caller that must undo what finishes too late.
 */
export function withDeadline<T>(work: PromiseLike<T>, ms: number, onExpired?: () => void): Promise<T> {
  let timer: Timer | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onExpired?.()
      reject(queryTimeout(ms))
    }, ms)
  })
  return Promise.race([work, expired]).finally(() => clearTimeout(timer))
}

// int8 (ids, versions, counts) as JSON numbers: ids stay far below 2^53.
const INT8_OID = 20
// timestamptz as ISO-8601 UTC strings, the API's own format, on both backends alike.
const TIMESTAMPTZ_OID = 1184
const parseInt8 = (x: string) => Number(x)
/**
 * Sessions run with TimeZone=UTC, so Postgres writes `2026-11-28 13:41:28.197123+00`: that is sliced into
 * `2026-11-28T13:41:28.197Z` without a Date (five timestamps a row, on every read). Anything else goes through Date.
 */
export function parseTimestamp(x: string): string {
  if (x.length >= 22 && x.endsWith('+00') && x[10] === ' ' && (x.length === 22 || x[19] === '.')) {
    const fraction = x.length === 22 ? '000' : `${x.slice(20, -3)}00`.slice(0, 3)
    return `${x.slice(0, 10)}T${x.slice(11, 19)}.${fraction}Z`
  }
  return new Date(x.includes('T') ? x : x.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString()
}

export async function openDatabase({ url, dataDir, poolMax, queryTimeoutMs, statementTimeoutMs }: OpenOptions): Promise<Database> {
  if (url) return openPostgres(url, poolMax, queryTimeoutMs, statementTimeoutMs)
  return openPglite(dataDir)
}

/** Why a DATABASE_URL does not work, by error code: what a user reads at start instead of "ECONNREFUSED". */
const URL_PROBLEMS: Record<string, string> = {
  ECONNREFUSED: 'connection refused; is Postgres running at that host and port?',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host not found',
  CONNECT_TIMEOUT: 'no answer from that host and port',
  ETIMEDOUT: 'no answer from that host and port',
  '28P01': 'authentication failed; check the user and password',
  '28000': 'authentication failed; check the user',
  '3D000': 'that database does not exist; create it first (createdb) or name another',
}

/** The URL as it may be printed: without its password. */
function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparseable)'
  }
}

/**
 * A connection-level failure of DATABASE_URL rephrased to name the variable and what is wrong with it (the URL
 * is shown without its password); any other error is returned as it is.
 */
export function explainDatabaseError(error: unknown, url: string | undefined): unknown {
  const code = (error as { code?: string } | null)?.code
  const problem = url && code ? URL_PROBLEMS[code] : undefined
  if (!problem) return error
  const detail = error instanceof Error ? error.message : String(error)
  return new Error(`DATABASE_URL ${redact(url!)}: ${problem} (${detail})`, { cause: error })
}

function openPostgres(url: string, poolMax: number, queryTimeoutMs?: number, statementTimeoutMs?: number): Database {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new Error('DATABASE_URL is not a valid URL; expected postgres://user:password@host:5432/database')
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new Error(`DATABASE_URL must start with postgres:// or postgresql:// (got ${JSON.stringify(parsed.protocol.slice(0, -1))})`)
  }
  const sql = postgres(url, {
    max: poolMax,
    onnotice: () => {},
    // One attempt against a blackholed server gives up within 2 s (it takes milliseconds when the server is there).
    connect_timeout: 2,
    // Retry within a second once the server is back; postgres.js's default backoff grows to 20 s between attempts.
    backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1),
    // Leave idle connections to the server's defaults but recycle slowly-leaking ones.
    max_lifetime: 60 * 30,
    // UTC sessions: timestamps come back in the one format parseTimestamp slices.
    // statement_timeout as a startup parameter: every connection of the pool has it from its first query.
    // jit off: these are short statements, and Postgres's cost estimate turned JIT on for the 7-day stats of a
    // 200,000-process workspace: 1.4 s of compiling per call (LLVM optimisation and emission) for a query that
    // runs in 0.4 s, so any member could buy seconds of database CPU per request.
    connection: { TimeZone: 'UTC', jit: 'off', ...(statementTimeoutMs ? { statement_timeout: statementTimeoutMs } : {}) },
    types: {
      int8: { to: INT8_OID, from: [INT8_OID], serialize: (x: number) => String(x), parse: parseInt8 },
      timestamptz: {
        to: TIMESTAMPTZ_OID,
        from: [TIMESTAMPTZ_OID],
        serialize: (x: Date | string) => (x instanceof Date ? x.toISOString() : x),
        parse: parseTimestamp,
      },
    },
  })
  return {
    sql: guarded(sql, queryTimeoutMs),
    kind: 'postgres',
    close: () => sql.end({ timeout: 5 }),
  }
}

// Errors with which postgres.js says a connection is gone.
const CONNECTION_LOST = new Set(['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECTION_ENDED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT'])

/**
 * The postgres.js handle with two guards for a database that goes away.
 *
 * Deadline (when `timeoutMs` is set): postgres.js has no query timeout. Behind a blackholed server a query
 * queued for a connection waits one connect_timeout per attempt, attempt after attempt, and one sent on a
 * silently dead socket waits for TCP keepalive. Here each query gets `timeoutMs` and is then rejected with
 * QUERY_TIMEOUT (a 503). It is not cancelled: postgres.js 3.4 strands a connection whose first query was
 * cancelled. As connect_timeout (2 s) is below the deadline, a query still waiting for a connection has
 * failed by itself by then, so a refused request is not applied later. A transaction gets `timeoutMs` to
 * begin; one that could not begin in time does not run its body at all.
 *
 * Lost transactions: when a transaction's connection dies under it, postgres.js 3.4.9 writes the rollback
 * to the closed socket and crashes the process with an uncaught TypeError in nextWrite
 * (porsager/postgres#1208, measured here by cutting the connection mid-transaction). A body that failed
 * because its own connection is gone is therefore left pending: postgres.js has already rejected the
 * transaction with CONNECTION_CLOSED, and no rollback is written (the server rolls back by itself).
 */
function guarded(pg: postgres.Sql, timeoutMs: number | undefined): Sql {
  const timedOut = () => queryTimeout(timeoutMs!)
  const bounded = <T>(work: PromiseLike<T>): Promise<T> => withDeadline(work, timeoutMs!)
  const sql = ((strings: TemplateStringsArray, ...values: unknown[]) => {
    const query = pg(strings, ...(values as never[]))
    if (!timeoutMs) return query
    // The postgres.js query itself, so that it still nests as a fragment; only awaiting it is bounded.
    const run = query.then.bind(query) as () => Promise<never>
    // biome-ignore lint/suspicious/noThenProperty: the query must stay a thenable postgres.js query (see above)
    query.then = ((onFulfilled, onRejected) => bounded(run()).then(onFulfilled, onRejected)) as typeof query.then
    return query
  }) as unknown as Sql
  sql.begin = <T>(fn: (tx: Sql) => Promise<T>) => {
    let expired = false
    let lost = false
    let startTimer: Timer | undefined
    const transaction = pg.begin(async (tx) => {
      if (expired) throw timedOut()
      clearTimeout(startTimer)
      try {
        return await fn(tx as unknown as Sql)
      } catch (error) {
        if (CONNECTION_LOST.has((error as { code?: string })?.code as string)) {
          // Once pending callbacks have run, `lost` says whether it was this transaction's connection.
          await new Promise((resolve) => setTimeout(resolve, 0))
          if (lost) return new Promise<never>(() => {})
        }
        throw error
      }
    }) as unknown as Promise<T>
    transaction.catch(() => (lost = true))
    if (!timeoutMs) return transaction
    // Only the wait for the transaction to begin is bounded: a body that has begun (a migration waiting for
    // its lock, say) runs to its own end, and one that begins too late does not run at all.
    const late = new Promise<never>((_, reject) => {
      startTimer = setTimeout(() => {
        expired = true
        reject(timedOut())
      }, timeoutMs)
    })
    return Promise.race([transaction, late]).finally(() => clearTimeout(startTimer))
  }
  sql.unsafe = (text) => pg.unsafe(text)
  sql.end = () => pg.end()
  return sql
}

async function openPglite(dataDir: string): Promise<Database> {
  let PGlite: typeof import('@electric-sql/pglite').PGlite
  try {
    ;({ PGlite } = await import('@electric-sql/pglite'))
  } catch (error) {
    throw new Error(
      'DATABASE_URL is not set and the embedded database (PGlite) is not available in this build. ' +
        'Set DATABASE_URL=postgres://user:pass@host:5432/db to run the standalone executable or the container.',
      { cause: error },
    )
  }
  const inMemory = dataDir === 'memory://' || dataDir === ':memory:'
  const unlock = inMemory ? () => {} : lockDataDir(dataDir)
  let db: InstanceType<typeof PGlite>
  try {
    db = inMemory ? new PGlite() : new PGlite(dataDir)
    await db.waitReady
    if (!inMemory) ownerOnly(dataDir)
  } catch (error) {
    unlock()
    throw error
  }
  const parsers = { [INT8_OID]: parseInt8, [TIMESTAMPTZ_OID]: parseTimestamp }
  type Runner = { query: (text: string, params: unknown[], opts: object) => Promise<{ rows: unknown[] }> }

  const make = (runner: Runner, inTransaction: boolean): Sql => {
    const run = (text: string, params: unknown[]) => runner.query(text, params, { parsers }).then((r) => r.rows)
    const sql = ((strings: TemplateStringsArray, ...values: unknown[]) => new Fragment(strings, values, run)) as unknown as Sql
    sql.begin = async (fn) => {
      if (inTransaction) throw new Error('nested begin is not supported')
      try {
        return await db.transaction((tx) => fn(make(tx as unknown as Runner, true)))
      } catch (error) {
        // PGlite's own ROLLBACK can fail after an internal error (jsonb nested 20 000 deep: "bad buffer ID"),
        // leaving its one backend in an aborted transaction that refuses every later query. End it; with no
        // transaction open this is a no-op, and db.exec waits for PGlite's transaction lock, so it never cuts
        // into another caller's transaction.
        await db.exec('rollback').catch(() => {})
        throw error
      }
    }
    sql.unsafe = (text) => (inTransaction ? (runner as unknown as { exec: (t: string) => Promise<unknown> }).exec(text) : db.exec(text))
    sql.end = () => db.close()
    return sql
  }

  return {
    sql: make(db as unknown as Runner, false),
    kind: 'pglite',
    close: async () => {
      if (!db.closed) await db.close()
      unlock()
    },
  }
}

/** A lazily-run query: awaited, it runs; nested in another template, it is inlined with renumbered parameters. */
class Fragment implements PromiseLike<any> {
  constructor(
    private readonly strings: readonly string[],
    private readonly values: unknown[],
    private readonly run: (text: string, params: unknown[]) => Promise<unknown>,
  ) {}

  build(params: unknown[]): string {
    let text = this.strings[0]!
    for (let i = 0; i < this.values.length; i++) {
      const value = this.values[i]
      if (value instanceof Fragment) text += value.build(params)
      else {
        params.push(value === undefined ? null : value)
        text += `$${params.length}`
      }
      text += this.strings[i + 1]
    }
    return text
  }

  // biome-ignore lint/suspicious/noThenProperty: a fragment is awaited like a postgres.js query (PromiseLike)
  then<A = any, B = never>(
    onFulfilled?: ((value: any) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    const params: unknown[] = []
    const text = this.build(params)
    return this.run(text, params).then(onFulfilled, onRejected)
  }
}

/**
 * DATA_DIR is the database: its owner's only (PGlite wrote 968 of 1,093 files 0666). The folder 0700, so
 * nothing in it can be reached by anyone else whatever mode PGlite gives a new file, and what is there 0600.
 */
function ownerOnly(dir: string) {
  chmodSync(dir, 0o700)
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name)
    try {
      chmodSync(path, entry.isDirectory() ? 0o700 : 0o600)
    } catch {
      // Gone meanwhile, or a socket (admin.sock sets its own mode): nothing to restrict.
    }
  }
}

/** The code of the error saying another live process holds DATA_DIR. */
export const DATA_DIR_LOCKED = 'DATA_DIR_LOCKED'

/**
 * An embedded database belongs to one process: a second server, or the CLI while the server runs, would
 * corrupt it. A lock file holding the owner's pid refuses the second opener; a stale one is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const path = join(dataDir, 'processes.lock')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx', mode: 0o600 })
      return () => rmSync(path, { force: true })
    } catch (error) {
      if ((error as { code?: string }).code !== 'EEXIST') throw error
      const owner = Number(readFileSync(path, 'utf8'))
      if (owner && owner !== process.pid && isAlive(owner)) {
        const message =
          `the embedded database in ${dataDir} is in use by process ${owner}; stop it first ` +
          '(or use DATABASE_URL so that several processes can share one Postgres)'
        throw Object.assign(new Error(message), { code: DATA_DIR_LOCKED })
      }
      rmSync(path, { force: true })
    }
  }
  throw new Error(`could not lock ${path}`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM'
  }
}
