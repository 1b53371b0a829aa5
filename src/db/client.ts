// One SQL handle for both backends: postgres.js against a server, or embedded PGlite.
// Queries everywhere are postgres.js tagged templates; the PGlite adapter below speaks
// the same subset (parameters, nested fragments, begin, unsafe), so the very same SQL runs on both.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
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
}

// int8 (ids, versions, counts) as JSON numbers: ids stay far below 2^53.
const INT8_OID = 20
// timestamptz as ISO-8601 UTC strings, the API's own format, on both backends alike.
const TIMESTAMPTZ_OID = 1184
const parseInt8 = (x: string) => Number(x)
const parseTimestamp = (x: string) => new Date(x.includes('T') ? x : x.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString()

export async function openDatabase({ url, dataDir, poolMax }: OpenOptions): Promise<Database> {
  if (url) return openPostgres(url, poolMax)
  return openPglite(dataDir)
}

function openPostgres(url: string, poolMax: number): Database {
  const sql = postgres(url, {
    max: poolMax,
    onnotice: () => {},
    connect_timeout: 5,
    // Leave idle connections to the server's defaults but recycle slowly-leaking ones.
    max_lifetime: 60 * 30,
    types: {
      int8: { to: INT8_OID, from: [INT8_OID], serialize: (x: number) => String(x), parse: parseInt8 },
      timestamptz: { to: TIMESTAMPTZ_OID, from: [TIMESTAMPTZ_OID], serialize: (x: Date | string) => (x instanceof Date ? x.toISOString() : x), parse: parseTimestamp },
    },
  })
  return {
    sql: sql as unknown as Sql,
    kind: 'postgres',
    close: () => sql.end({ timeout: 5 }),
  }
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
  } catch (error) {
    unlock()
    throw error
  }
  const parsers = { [INT8_OID]: parseInt8, [TIMESTAMPTZ_OID]: parseTimestamp }
  type Runner = { query: (text: string, params: unknown[], opts: object) => Promise<{ rows: unknown[] }> }

  const make = (runner: Runner, inTransaction: boolean): Sql => {
    const run = (text: string, params: unknown[]) => runner.query(text, params, { parsers }).then((r) => r.rows)
    const sql = ((strings: TemplateStringsArray, ...values: unknown[]) => new Fragment(strings, values, run)) as unknown as Sql
    sql.begin = (fn) => {
      if (inTransaction) throw new Error('nested begin is not supported')
      return db.transaction((tx) => fn(make(tx as unknown as Runner, true)))
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

  then<A = any, B = never>(onFulfilled?: ((value: any) => A | PromiseLike<A>) | null, onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    const params: unknown[] = []
    const text = this.build(params)
    return this.run(text, params).then(onFulfilled, onRejected)
  }
}

/**
 * An embedded database belongs to one process: a second server, or the CLI while the server runs, would
 * corrupt it. A lock file holding the owner's pid refuses the second opener; a stale one is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true })
  const path = join(dataDir, 'processes.lock')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' })
      return () => rmSync(path, { force: true })
    } catch (error) {
      if ((error as { code?: string }).code !== 'EEXIST') throw error
      const owner = Number(readFileSync(path, 'utf8'))
      if (owner && owner !== process.pid && isAlive(owner)) {
        throw new Error(
          `the embedded database in ${dataDir} is in use by process ${owner}; stop it first ` +
            '(or use DATABASE_URL so that several processes can share one Postgres)',
        )
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
