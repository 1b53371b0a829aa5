// The SQL handle (README: Layout): the same queries on postgres.js and PGlite, int8 as numbers, timestamps as ISO strings,
// and a failed transaction never leaves the one embedded backend stuck.
import { describe, expect, it } from 'bun:test'
import { testDatabase } from '../support/helpers'

const { db } = await testDatabase()
const { sql } = db

describe('the SQL handle', () => {
  it('returns int8 as a number and timestamptz as an ISO-8601 UTC string', async () => {
    const [row] = await sql<{ big: unknown; at: unknown }[]>`select 9007199254740991::int8 as big, timestamptz '2026-01-02 03:04:05.678+02' as at`
    expect(row!.big).toBe(Number.MAX_SAFE_INTEGER)
    expect(row!.at).toBe('2026-01-02T01:04:05.678Z')
  })

  it('commits a transaction that resolves and rolls back one that throws', async () => {
    await sql`create table handle_test (n int)`
    await sql.begin(async (tx) => {
      await tx`insert into handle_test values (1)`
    })
    await expect(
      sql.begin(async (tx) => {
        await tx`insert into handle_test values (2)`
        throw new Error('changed my mind')
      }),
    ).rejects.toThrow('changed my mind')
    expect(await sql`select n from handle_test`).toEqual([{ n: 1 }])
  })

  it('keeps answering after a transaction fails inside the database engine itself', async () => {
    // 20 000 levels of jsonb once broke PGlite's own ROLLBACK and left every later query "transaction is aborted".
    // Whether 20 000 is deep enough to fail depends on the stack the engine has left (late in a long test run
    // it once parsed); 400 000 fails the same way, every time.
    const deep = '['.repeat(400_000) + ']'.repeat(400_000)
    await expect(sql.begin(async (tx) => tx`select ${deep}::text::jsonb is not null as ok`)).rejects.toThrow()
    expect(await sql`select 1 as one`).toEqual([{ one: 1 }])
    expect(await sql.begin(async (tx) => tx`select 2 as two`)).toEqual([{ two: 2 }])
  })
})

it('slices UTC timestamps into the same ISO strings a Date would give', async () => {
  const { parseTimestamp } = await import('../../src/db/client')
  const viaDate = (x: string) => new Date(x.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString()
  for (const text of [
    '2026-11-28 13:41:28.197123+00',
    '2026-11-28 13:41:28+00',
    '2026-11-28 13:41:28.1+00',
    '2026-11-28 13:41:28.999999+00',
    '2026-11-28 15:41:28.5+02',
    '0999-01-01 00:00:00+00',
  ]) {
    expect(parseTimestamp(text)).toBe(viaDate(text))
  }
})
