// Applies sql/NNN_name.sql in order, once, under an advisory lock (graphile-worker's migrate.ts is the model):
// any number of instances may start at once; one applies, the others wait and then find nothing to do.
import type { Sql } from './client'
import { MIGRATIONS, type Migration } from './migrations'

// Arbitrary but fixed: "processes" in ASCII, so it cannot collide with another app's lock by accident.
const MIGRATION_LOCK_ID = 0x70726f63

export async function migrate(sql: Sql, migrations: Migration[] = MIGRATIONS): Promise<string[]> {
  return sql.begin(async (tx) => {
    // A migration may build an index over a large table: the server's statement_timeout is not for it.
    await tx`select set_config('statement_timeout', '0', true)`
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_ID})`
    await tx`create table if not exists schema_migrations (
      name text primary key,
      applied_at timestamptz not null default now()
    )`
    const rows = await tx<{ name: string }[]>`select name from schema_migrations`
    const applied = new Set(rows.map((r) => r.name))
    const done: string[] = []
    for (const migration of migrations) {
      if (applied.has(migration.name)) continue
      // Recorded first: a racing migrator that somehow got past the lock fails on the primary key.
      await tx`insert into schema_migrations (name) values (${migration.name})`
      await tx.unsafe(migration.text)
      done.push(migration.name)
    }
    return done
  })
}
