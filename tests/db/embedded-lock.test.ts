import { expect, it } from 'bun:test'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openDatabase } from '../../src/db/client'

it('refuses a second process on the same embedded database, and takes over a stale lock', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ps-lock-'))
  // A live process other than us (our parent) holds the lock: refused, with a message saying why.
  writeFileSync(join(dir, 'processes.lock'), String(process.ppid))
  await expect(openDatabase({ dataDir: dir, poolMax: 1 })).rejects.toThrow(/in use by process/)
  // A dead owner's lock is taken over; closing releases it.
  writeFileSync(join(dir, 'processes.lock'), '999999999')
  const db = await openDatabase({ dataDir: dir, poolMax: 1 })
  expect(await db.sql`select 1 as one`).toEqual([{ one: 1 }])
  await db.close()
  expect(existsSync(join(dir, 'processes.lock'))).toBe(false)
}, 60_000)
