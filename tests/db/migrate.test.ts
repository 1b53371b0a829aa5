// Migrations (README: Layout): the embedded list is the sql/ folder, each applies once under an advisory lock even with
// racing migrators, a failing one leaves nothing behind, and the database itself keeps process_events append-only.
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { openDatabase, type Database } from '../../src/db/client'
import { migrate } from '../../src/db/migrate'
import { MIGRATIONS } from '../../src/db/migrations'
import { BUN, freshDatabaseUrl, hasPostgres, ROOT } from '../support/helpers'

const SQL_DIR = join(ROOT, 'sql')
const names = MIGRATIONS.map((m) => m.name)

/** An empty, unmigrated database: a new Postgres database, or a new in-memory PGlite. */
async function emptyDatabase(poolMax = 8): Promise<Database> {
  const db = await openDatabase({ url: hasPostgres ? await freshDatabaseUrl() : undefined, dataDir: 'memory://', poolMax })
  afterAll(() => db.close().catch(() => {}))
  return db
}

// Opened up front: an embedded database takes seconds to start, which belongs to no single test.
const db = await emptyDatabase()
const raceUrl = hasPostgres ? await freshDatabaseUrl() : null

async function appliedNames(db: Database) {
  const rows = await db.sql<{ name: string }[]>`select name from schema_migrations order by name`
  return rows.map((r) => r.name)
}

async function tableCount(db: Database, table: string) {
  const rows = await db.sql<{ n: number }[]>`
    select count(*)::int as n from information_schema.tables where table_schema = 'public' and table_name = ${table}`
  return rows[0]!.n
}

describe('the migration list', () => {
  it('embeds every sql/NNN_name.sql file, in order, with its exact text', () => {
    const files = readdirSync(SQL_DIR)
      .filter((f) => f.endsWith('.sql'))
      .sort()
    expect(files.length).toBeGreaterThan(0)
    expect(names).toEqual(files)
    for (const migration of MIGRATIONS) expect(migration.text).toBe(readFileSync(join(SQL_DIR, migration.name), 'utf8'))
  })

  it('numbers the files NNN_name.sql, consecutively from 001', () => {
    names.forEach((name, i) => {
      expect(name).toMatch(/^\d{3}_[a-z0-9_]+\.sql$/)
      expect(Number(name.slice(0, 3))).toBe(i + 1)
    })
  })

  it('starts each file with a purpose line', () => {
    for (const migration of MIGRATIONS) expect(migration.text).toMatch(/^-- \S/)
  })
})

describe('migrate', () => {
  // On Postgres these are 4 connections of the pool; on PGlite, 4 callers of its one backend.
  it('applies every migration once when 4 migrators race on an empty database, then nothing on a later run', async () => {
    const results = await Promise.all(Array.from({ length: 4 }, () => migrate(db.sql)))
    expect(results.filter((r) => r.length > 0)).toEqual([names])
    expect(results.filter((r) => r.length === 0)).toHaveLength(3)
    expect(await appliedNames(db)).toEqual(names)
    expect(await migrate(db.sql)).toEqual([])
    expect(await appliedNames(db)).toEqual(names)
    for (const table of ['workspaces', 'users', 'memberships', 'api_tokens', 'worker_tokens', 'processes', 'process_events', 'audit_log']) {
      expect(await tableCount(db, table)).toBe(1)
    }
  })

  it('applies only the migrations not yet recorded', async () => {
    await migrate(db.sql)
    const extra = { name: '999_test_extra.sql', text: '-- A test-only migration.\ncreate table test_extra (id int);' }
    expect(await migrate(db.sql, [...MIGRATIONS, extra])).toEqual([extra.name])
    expect(await migrate(db.sql, [...MIGRATIONS, extra])).toEqual([])
    expect(await tableCount(db, 'test_extra')).toBe(1)
  })

  it('rolls a failing migration back entirely, recording nothing', async () => {
    await migrate(db.sql)
    const recorded = await appliedNames(db)
    const broken = { name: '998_broken.sql', text: 'create table half_done (id int);\nselect no_such_function();' }
    await expect(migrate(db.sql, [...MIGRATIONS, broken])).rejects.toThrow()
    expect(await appliedNames(db)).toEqual(recorded)
    expect(await tableCount(db, 'half_done')).toBe(0)
  })

  it.skipIf(!hasPostgres)('applies once when 4 `cli migrate` processes race on one fresh Postgres database', async () => {
    const url = raceUrl!
    const procs = Array.from({ length: 4 }, () =>
      Bun.spawn([BUN, 'src/cli.ts', 'migrate'], { cwd: ROOT, env: { ...process.env, DATABASE_URL: url }, stdout: 'pipe', stderr: 'pipe' }),
    )
    const outcomes = await Promise.all(
      procs.map(async (p) => ({ code: await p.exited, stdout: await new Response(p.stdout).text(), stderr: await new Response(p.stderr).text() })),
    )
    for (const o of outcomes) expect({ code: o.code, stderr: o.stderr }).toEqual({ code: 0, stderr: '' })
    const applied = outcomes.map((o) => JSON.parse(o.stdout).applied as string[])
    expect(applied.filter((a) => a.length > 0)).toEqual([names])
    expect(applied.filter((a) => a.length === 0)).toHaveLength(3)

    const db = await openDatabase({ url, dataDir: '', poolMax: 1 })
    try {
      expect(await appliedNames(db)).toEqual(names)
      expect(await tableCount(db, 'processes')).toBe(1)
      const triggers = await db.sql<{ n: number }[]>`
        select count(*)::int as n from pg_trigger
         where tgname = 'process_events_append_only' and tgrelid = 'process_events'::regclass`
      expect(triggers[0]!.n).toBe(1)
    } finally {
      await db.close()
    }
  })
})

describe('process_events is append-only', () => {
  let processId = 0
  beforeAll(async () => {
    await migrate(db.sql)
    const [ws] = await db.sql<{ id: number }[]>`insert into workspaces (name) values ('append-only') returning id`
    const [p] = await db.sql<{ id: number }[]>`insert into processes (workspace_id, type) values (${ws!.id}, 'x') returning id`
    await db.sql`insert into process_events (process_id, status, message) values (${p!.id}, 'pending', 'Queued'), (${p!.id}, 'running', 'Started')`
    processId = p!.id
  })

  const events = async () => {
    return db.sql<{ id: number; status: string; message: string }[]>`
      select id, status, message from process_events where process_id = ${processId} order by id`
  }

  async function expectRefused(statement: (db: Database) => PromiseLike<unknown>) {
    const before = await events()
    let error: unknown = null
    try {
      await statement(db)
    } catch (e) {
      error = e
    }
    expect(error).not.toBeNull()
    expect((error as { code?: string }).code).toBe('55000')
    expect(String((error as Error).message)).toContain('append-only')
    expect(await events()).toEqual(before)
  }

  it('accepts new events', async () => {
    const before = (await events()).length
    await db.sql`insert into process_events (process_id, status, message) values (${processId}, 'running', 'more')`
    expect(await events()).toHaveLength(before + 1)
  })

  it('refuses UPDATE', async () => {
    await expectRefused((db) => db.sql`update process_events set message = 'rewritten'`)
  })

  it('refuses DELETE', async () => {
    await expectRefused((db) => db.sql`delete from process_events`)
  })

  it('refuses TRUNCATE', async () => {
    await expectRefused((db) => db.sql`truncate process_events`)
  })

  it('refuses an UPDATE inside a transaction and rolls the transaction back', async () => {
    const before = await events()
    await expect(
      db.sql.begin(async (tx) => {
        await tx`insert into process_events (process_id, status, message) values (${processId}, 'running', 'in tx')`
        await tx`update process_events set status = 'completed' where process_id = ${processId}`
      }),
    ).rejects.toThrow('append-only')
    expect(await events()).toEqual(before)
  })
})
