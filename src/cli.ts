// The admin CLI (§10): `bun run cli <command>`, also the compiled executable's subcommands.
// Each command prints one JSON object on stdout and nothing else there; errors go to stderr with exit 1.
import { parseArgs } from 'node:util'
import { addMember, createApiToken, createUser, createWorkerToken, createWorkspace, revokeToken } from './auth/queries'
import { ROLES } from './auth/authenticator'
import { loadConfig } from './config'
import { TypePattern } from './processes/model'
import { openDatabase, type Sql } from './db/client'
import { migrate } from './db/migrate'

export const CLI_COMMANDS = [
  'migrate',
  'create-workspace',
  'create-user',
  'add-member',
  'create-token',
  'create-worker-token',
  'revoke-token',
] as const
type Command = (typeof CLI_COMMANDS)[number]

class UsageError extends Error {}

const USAGE = `usage: cli <command> [options]
  migrate
  create-workspace --name NAME
  create-user --email E --workspace ID [--role R]
  add-member --user ID --workspace ID [--role R]
  create-token --user ID [--name N] [--ttl-days D]
  create-worker-token [--name N] [--workspace ID]... [--type T]...
  revoke-token --id ID [--worker]
roles: owner, admin, member (default), viewer`

const OPTIONS = {
  name: { type: 'string' },
  email: { type: 'string' },
  // Repeatable for create-worker-token's scope; the other commands take one (the last given).
  workspace: { type: 'string', multiple: true },
  type: { type: 'string', multiple: true },
  role: { type: 'string' },
  user: { type: 'string' },
  'ttl-days': { type: 'string' },
  id: { type: 'string' },
  worker: { type: 'boolean' },
} as const

function required(values: Record<string, unknown>, key: string): string {
  const given = values[key]
  const value = Array.isArray(given) ? given[given.length - 1] : given
  if (typeof value !== 'string' || value.trim() === '') throw new UsageError(`--${key} is required`)
  return value
}

/** An id: plain digits (no sign, exponent, fraction or hex), 1 up to 15 digits, so it is exact as a number. */
function id(values: Record<string, unknown>, key: string): number {
  return parseId(required(values, key), key)
}

function parseId(raw: string, key: string): number {
  if (!/^\d{1,15}$/.test(raw) || Number(raw) < 1) throw new UsageError(`--${key} must be a positive integer id (got ${JSON.stringify(raw)})`)
  return Number(raw)
}

/** A hundred years: beyond that an expiry means nothing (and 1e9 days is not a Date at all). */
const MAX_TTL_DAYS = 36500

/** Days as a plain decimal (`30`, `0.5`), above 0 and at most MAX_TTL_DAYS; null when not given. */
function ttlDays(values: Record<string, unknown>): number | null {
  const raw = values['ttl-days'] as string | undefined
  if (raw === undefined) return null
  const days = Number(raw)
  if (!/^(\d+(\.\d+)?|\.\d+)$/.test(raw) || !(days > 0) || days > MAX_TTL_DAYS) {
    throw new UsageError(`--ttl-days must be a positive number of days, at most ${MAX_TTL_DAYS} (got ${JSON.stringify(raw)})`)
  }
  return days
}

/**
 * There are no short options, so `--user -1` means the value "-1" (parseArgs would call it ambiguous): it is
 * joined as `--user=-1` and gets the flag's own message. A string flag followed by nothing, or by another
 * `--flag`, has no value.
 */
function joinValues(args: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    const option = arg.startsWith('--') && !arg.includes('=') ? (OPTIONS as Record<string, { type: string }>)[arg.slice(2)] : undefined
    if (option?.type === 'string') {
      const value = args[i + 1]
      if (value === undefined || value.startsWith('--')) throw new UsageError(`${arg} needs a value`)
      if (value.startsWith('-')) {
        out.push(`${arg}=${value}`)
        i++
        continue
      }
    }
    out.push(arg)
  }
  return out
}

type Work = (sql: Sql) => Promise<object>

/** Checks a command's options and returns its work, so a usage error is reported before any database is opened. */
function prepare(command: Command, values: Record<string, unknown>): Work {
  const role = (values.role as string | undefined) ?? 'member'
  if ((command === 'create-user' || command === 'add-member') && !(ROLES as readonly string[]).includes(role)) {
    throw new UsageError(`--role must be one of ${ROLES.join(', ')} (got ${JSON.stringify(role)})`)
  }
  const name = (values.name as string | undefined) ?? null
  switch (command) {
    case 'migrate':
      return async (sql) => ({ applied: await migrate(sql) })
    case 'create-workspace': {
      const workspaceName = required(values, 'name')
      return (sql) => createWorkspace(sql, workspaceName)
    }
    case 'create-user': {
      const email = required(values, 'email')
      if (!/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError('--email must be an email address')
      const workspaceId = id(values, 'workspace')
      return (sql) => createUser(sql, email, workspaceId, role)
    }
    case 'add-member': {
      const userId = id(values, 'user')
      const workspaceId = id(values, 'workspace')
      return (sql) => addMember(sql, userId, workspaceId, role)
    }
    case 'create-token': {
      const userId = id(values, 'user')
      const ttl = ttlDays(values)
      return (sql) => createApiToken(sql, userId, name, ttl)
    }
    case 'create-worker-token': {
      const workspaceIds = ((values.workspace as string[] | undefined) ?? []).map((raw) => parseId(raw, 'workspace'))
      const types = (values.type as string[] | undefined) ?? []
      for (const type of types) if (!new RegExp(TypePattern).test(type)) throw new UsageError(`--type must match ${TypePattern} (got ${JSON.stringify(type)})`)
      return async (sql) => {
        const known = await sql<{ id: number }[]>`select id from workspaces where id = any(${workspaceIds}::bigint[])`
        const missing = workspaceIds.filter((w) => !known.some((k) => Number(k.id) === w))
        if (missing.length > 0) throw new UsageError(`no workspace with id ${missing.join(', ')}`)
        return createWorkerToken(sql, name, { workspaceIds, types })
      }
    }
    case 'revoke-token': {
      const tokenId = id(values, 'id')
      const kind = values.worker ? 'worker' : 'api'
      return async (sql) => {
        if (!(await revokeToken(sql, tokenId, kind))) throw new UsageError(`no ${kind === 'worker' ? 'worker' : 'API'} token with id ${tokenId}`)
        return { id: tokenId, revoked: true }
      }
    }
  }
}

/** Runs one command; returns the exit code. Output: one JSON line on stdout, or an error on stderr. */
export async function runCli(argv: string[], env: Record<string, string | undefined> = process.env): Promise<number> {
  const [command, ...rest] = argv
  if (!command || !(CLI_COMMANDS as readonly string[]).includes(command)) {
    console.error(command ? `unknown command ${JSON.stringify(command)}\n${USAGE}` : USAGE)
    return 1
  }
  let db: Awaited<ReturnType<typeof openDatabase>> | null = null
  try {
    const { values } = parseArgs({ args: joinValues(rest), options: OPTIONS, strict: true, allowPositionals: false })
    const work = prepare(command as Command, values)
    const config = loadConfig(env)
    db = await openDatabase({ url: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: 2 })
    if (command !== 'migrate') await migrate(db.sql)
    const result = await work(db.sql)
    process.stdout.write(JSON.stringify(result) + '\n')
    return 0
  } catch (error) {
    const code = (error as { code?: string }).code
    const message =
      code === '23503' ? 'referenced user or workspace does not exist' : code === '23505' ? 'already exists' : error instanceof Error ? error.message : String(error)
    console.error(`error: ${message}`)
    return 1
  } finally {
    await db?.close().catch(() => {})
  }
}

if (import.meta.main) process.exit(await runCli(process.argv.slice(2)))
