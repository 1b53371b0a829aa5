// The admin CLI (README: Admin CLI): `npm run cli -- <command>`, also the compiled executable's subcommands.
// Each command prints one JSON object on stdout and nothing else there; errors go to stderr with exit 1.
import { parseArgs } from 'node:util'
import {
  addMember,
  removeMember,
  createApiToken,
  createUser,
  createWorkerToken,
  createWorkspace,
  listSessions,
  revokeSessions,
  revokeToken,
} from './auth/queries'
import { ROLES } from './auth/authenticator'
import { loadConfig, redisPrefix } from './config'
import { listApiTokens, listUsers, listWorkerTokens, listWorkspaces } from './auth/listing'
import { exitCodeOf, WatchError, watchProcess } from './cli-watch'
import { TYPE_MEANING, TypePattern } from './processes/model'
import { AdminChannelError, sendToAdminChannel } from './admin-channel'
import { DATA_DIR_LOCKED, explainDatabaseError, openDatabase, type Sql } from './db/client'
import { migrate } from './db/migrate'
import type { ProcessHub } from './processes/hub-rules'
import { countPending, pauseQueue, resumeQueue } from './queues/queries'
import { listSchedules } from './schedules/queries'
import { NEXT_RUNS_ONE, toSchedule } from './schedules/view'

export const CLI_COMMANDS = [
  'migrate',
  'create-workspace',
  'create-user',
  'add-member',
  'remove-member',
  'create-token',
  'create-worker-token',
  'revoke-token',
  'list-sessions',
  'revoke-sessions',
  'list-workspaces',
  'list-users',
  'list-tokens',
  'list-worker-tokens',
  'watch',
  'list-schedules',
  'pause-type',
  'resume-type',
] as const
type Command = (typeof CLI_COMMANDS)[number]

class UsageError extends Error {}
/** No command, or not one of ours: the usage goes to stderr as it is, without `error: `. */
class UnknownCommand extends UsageError {}

const USAGE = `usage: cli <command> [options]
  migrate
  create-workspace --name NAME
  create-user --email E --workspace ID [--role R]
  add-member --user ID --workspace ID [--role R]
  remove-member --user ID --workspace ID [--revoke-tokens]
                                      their streams of it end within AUTH_CACHE_MS; their API tokens are
                                      revoked too with --revoke-tokens, or when no workspace is left
  create-token --user ID [--name N] [--ttl-days D]
  create-worker-token [--name N] (--workspace ID... | --all-workspaces) [--type T]...
  revoke-token --id ID [--worker]
  list-sessions --user ID
  revoke-sessions --user ID | --id SESSION_ID
  list-workspaces
  list-users [--workspace ID]
  list-tokens [--user ID]
  list-worker-tokens
  watch ID [--token T] [--url U]      a progress bar until the process is done (PROCESSES_TOKEN, PROCESSES_URL);
                                      exit 0 completed or waiting_review, 1 failed or cancelled
  list-schedules --workspace ID
  pause-type --type T [--workspace ID]
  resume-type --type T [--workspace ID]
roles: owner, admin, member (default), viewer
with npm: npm run cli -- <command> [options]`

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
  'revoke-tokens': { type: 'boolean' },
  'all-workspaces': { type: 'boolean' },
  token: { type: 'string' },
  url: { type: 'string' },
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

const UNIQUE_VIOLATION = '23505'

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
      return async (sql) => {
        const [existing] = await sql<{ id: number }[]>`select id from users where email = ${email}`
        if (existing)
          throw new UsageError(`a user with email ${email} already exists (id ${existing.id}); add-member --user ${existing.id} puts it in another workspace`)
        return createUser(sql, email, workspaceId, role).catch((error: unknown) => {
          // Created in between by another command: the same answer.
          if ((error as { code?: string }).code === UNIQUE_VIOLATION) throw new UsageError(`a user with email ${email} already exists`)
          throw error
        })
      }
    }
    case 'add-member': {
      const userId = id(values, 'user')
      const workspaceId = id(values, 'workspace')
      return (sql) => addMember(sql, userId, workspaceId, role)
    }
    case 'remove-member': {
      const userId = id(values, 'user')
      const workspaceId = id(values, 'workspace')
      const revokeTokens = values['revoke-tokens'] === true
      return async (sql) => {
        const removed = await removeMember(sql, userId, workspaceId, { revokeTokens })
        if (!removed) throw new UsageError(`user ${userId} is not a member of workspace ${workspaceId}`)
        return removed
      }
    }
    case 'create-token': {
      const userId = id(values, 'user')
      const ttl = ttlDays(values)
      return (sql) => createApiToken(sql, userId, name, ttl)
    }
    case 'create-worker-token': {
      const workspaceIds = ((values.workspace as string[] | undefined) ?? []).map((raw) => parseId(raw, 'workspace'))
      // Scoped by default: a token for every workspace lets any member feed it any job; say so on purpose.
      const all = values['all-workspaces'] === true
      if (all === workspaceIds.length > 0)
        throw new UsageError(
          all
            ? 'give --workspace ID… or --all-workspaces, not both'
            : 'create-worker-token needs --workspace ID (repeatable) for the workspaces it serves, or --all-workspaces for a token that serves every workspace',
        )
      const types = (values.type as string[] | undefined) ?? []
      for (const type of types) if (!new RegExp(TypePattern).test(type)) throw new UsageError(`--type must be ${TYPE_MEANING} (got ${JSON.stringify(type)})`)
      return async (sql) => {
        const known = await sql<{ id: number }[]>`select id from workspaces where id = any(${workspaceIds}::bigint[])`
        const missing = workspaceIds.filter((w) => !known.some((k) => Number(k.id) === w))
        if (missing.length > 0) throw new UsageError(`no workspace with id ${missing.join(', ')}`)
        return createWorkerToken(sql, name, { workspaceIds, types })
      }
    }
    case 'list-sessions': {
      const userId = id(values, 'user')
      return async (sql) => ({ user_id: userId, sessions: await listSessions(sql, userId) })
    }
    case 'revoke-sessions': {
      // One session (--id) or every open one of a user (--user): a browser signed in with a stolen token.
      if ((values.id === undefined) === (values.user === undefined))
        throw new UsageError('give --user ID (all of its sessions) or --id SESSION_ID, one of them')
      const target = values.id !== undefined ? { id: id(values, 'id') } : { userId: id(values, 'user') }
      return async (sql) => ({ revoked: await revokeSessions(sql, target) })
    }
    case 'list-workspaces':
      return async (sql) => ({ workspaces: await listWorkspaces(sql) })
    case 'list-users': {
      const workspaceId = values.workspace === undefined ? null : id(values, 'workspace')
      return async (sql) => ({ users: await listUsers(sql, workspaceId) })
    }
    case 'list-tokens': {
      const userId = values.user === undefined ? null : id(values, 'user')
      return async (sql) => ({ tokens: await listApiTokens(sql, userId) })
    }
    case 'list-worker-tokens':
      return async (sql) => ({ worker_tokens: await listWorkerTokens(sql) })
    case 'watch':
      // Not a database command: runCli runs it over HTTP, and the admin channel refuses it here.
      throw new UsageError('watch follows a process over HTTP: run it as `npm run cli -- watch ID`')
    case 'list-schedules': {
      const workspaceId = id(values, 'workspace')
      return async (sql) => ({
        workspace_id: workspaceId,
        schedules: (await listSchedules(sql, workspaceId, 1000)).map((row) => {
          const { id, type, cron, timezone, enabled, overlap, catch_up, last_tick_at, next_runs } = toSchedule(row, NEXT_RUNS_ONE)
          return { id, type, cron, timezone, enabled, overlap, catch_up, last_tick_at, next_runs }
        }),
      })
    }
    case 'pause-type':
    case 'resume-type': {
      // Without --workspace: in every workspace (an operator's act; a workspace's admins pause their own over REST).
      const type = required(values, 'type')
      if (!new RegExp(TypePattern).test(type)) throw new UsageError(`--type must be ${TYPE_MEANING} (got ${JSON.stringify(type)})`)
      const workspaceId = values.workspace === undefined ? null : id(values, 'workspace')
      if (command === 'pause-type') {
        return (sql) => sql.begin(async (tx) => ({ ...(await pauseQueue(tx, type, workspaceId, null)), paused: true }))
      }
      return async (sql) => {
        const resumed = await resumeQueue(sql, type, workspaceId)
        return { type, workspace_id: workspaceId, paused: false, was_paused: resumed, pending: await countPending(sql, type, workspaceId) }
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

/** A command's work from its argv (command first): usage errors are thrown before anything is opened. */
function parseCommand(argv: string[], env: Record<string, string | undefined>): { command: Command; work: Work; argv: string[] } {
  const [command, ...rest] = argv
  if (!command || !(CLI_COMMANDS as readonly string[]).includes(command))
    throw new UnknownCommand(command ? `unknown command ${JSON.stringify(command)}\n${USAGE}` : USAGE)
  const args = joinValues(recoverNpmFlags(command, rest, env))
  const { values } = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false })
  return { command: command as Command, work: prepare(command as Command, values), argv: [command, ...args] }
}

/**
 * `npm run cli create-token --user 1`, without the `--`: npm reads `--user` as its own config and passes the
 * script only `create-token 1`. What it took is in the script's environment as `npm_config_<name>`: `true` for
 * a flag it does not know (the value stays behind as a bare argument: `1`), the value itself for one it parses
 * as a string (`--name foo`, `--user=5`). The CLI's own flags missing from argv are rebuilt from those; a bare
 * value is given back only when exactly one flag lost one, and anything ambiguous is refused with the `--` form.
 */
function recoverNpmFlags(command: string, args: string[], env: Record<string, string | undefined>): string[] {
  if (env.npm_lifecycle_event !== 'cli') return args
  const present = new Set<string>()
  const bare: number[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (!arg.startsWith('--')) bare.push(i)
    else {
      const [flag, value] = [arg.slice(2).split('=')[0]!, arg.includes('=')]
      present.add(flag)
      if (!value && (OPTIONS as Record<string, { type: string }>)[flag]?.type === 'string') i++
    }
  }
  const recovered: string[] = []
  const lostValue: string[] = []
  for (const [flag, option] of Object.entries(OPTIONS)) {
    const value = env[`npm_config_${flag.replaceAll('-', '_')}`]
    if (value === undefined || present.has(flag)) continue
    if (option.type === 'boolean') recovered.push(`--${flag}`)
    else if (value === 'true') lostValue.push(flag)
    else recovered.push(`--${flag}=${value}`)
  }
  if (recovered.length === 0 && lostValue.length === 0) return args
  if (lostValue.length > 1 || (lostValue.length === 1 && bare.length !== 1)) {
    throw new UsageError(
      `npm took ${lostValue.map((f) => `--${f}`).join(', ')} as its own option${lostValue.length > 1 ? 's' : ''}; put -- before the command: npm run cli -- ${command} …`,
    )
  }
  if (lostValue.length === 1) return [...args.filter((_, i) => i !== bare[0]), ...recovered, `--${lostValue[0]}=${args[bare[0]!]}`]
  return [...args, ...recovered]
}

/**
 * Runs one parsed command on a database handle: the CLI's own, or the running server's (admin channel, which
 * passes its hub: a resumed type wakes the claims waiting on it).
 */
export async function runCommand(sql: Sql, argv: string[], hub?: ProcessHub): Promise<object> {
  const { command, work } = parseCommand(argv, {})
  if (command !== 'migrate') await migrate(sql)
  const result = await work(sql)
  if (command === 'resume-type' && hub) announceResume(result, (type, n) => hub.work.announce(type, n))
  return result
}

/** After resume-type: claims waiting for the type (on every instance) look again, as after new work. */
function announceResume(result: object, announce: (type: string, count: number) => void) {
  const { type, pending } = result as { type: string; pending: number }
  announce(type, Math.max(1, pending))
}

/** The standalone CLI has no hub: it says it on Redis's work channel (`<origin> <type> <count>`), as instances do. */
async function publishResume(config: ReturnType<typeof loadConfig>, result: object) {
  if (!config.REDIS_URL) return
  const { default: Redis } = await import('ioredis')
  const redis = new Redis(config.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000, enableOfflineQueue: false })
  redis.on('error', () => {})
  try {
    await redis.connect()
    await new Promise<void>((resolve) =>
      announceResume(result, (type, n) => {
        redis
          .publish(`${redisPrefix(config)}work`, `cli ${type} ${n}`)
          .catch(() => {})
          .finally(resolve)
      }),
    )
  } catch {
    // Waiting claims then see the type at their next claim (within their wait_ms, at most 30 s).
  } finally {
    redis.disconnect()
  }
}

/** What went wrong, in the CLI's words. */
export function describeError(error: unknown): string {
  const code = (error as { code?: string }).code
  return code === '23503'
    ? 'referenced user or workspace does not exist'
    : code === '23505'
      ? 'already exists'
      : error instanceof Error
        ? error.message
        : String(error)
}

/** `watch ID`: over HTTP with an API token, never the database; the final process on stdout, the exit code by its status. */
async function runWatch(args: string[], env: Record<string, string | undefined>): Promise<number> {
  const { values, positionals } = parseArgs({ args: joinValues(recoverNpmFlags('watch', args, env)), options: OPTIONS, strict: true, allowPositionals: true })
  if (positionals.length > 1) throw new UsageError(`watch takes one process id (got ${positionals.join(' ')})`)
  const raw = positionals[0] ?? values.id
  if (raw === undefined) throw new UsageError('watch needs a process id: watch ID')
  const processId = parseId(raw, 'id')
  const token = values.token ?? env.PROCESSES_TOKEN
  if (!token) throw new UsageError('watch needs an API token: --token T, or PROCESSES_TOKEN in the environment')
  const url = (values.url ?? env.PROCESSES_URL ?? `http://localhost:${env.PORT || 3000}`).replace(/\/+$/, '')
  try {
    const final = await watchProcess({ url, token, id: processId })
    process.stdout.write(`${JSON.stringify(final)}\n`)
    return exitCodeOf(final.status)
  } catch (error) {
    throw error instanceof WatchError ? new UsageError(error.message) : error
  }
}

/** `cli --help`, `cli help`, `cli create-token --help` (a flag's value can never be `--help`). */
const wantsHelp = (argv: string[]) => ['--help', '-h', 'help'].includes(argv[0] ?? '') || argv.includes('--help')

/** Runs one command; returns the exit code. Output: one JSON line on stdout, or an error on stderr. */
export async function runCli(argv: string[], env: Record<string, string | undefined> = process.env): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  let db: Awaited<ReturnType<typeof openDatabase>> | null = null
  try {
    if (argv[0] === 'watch') return await runWatch(argv.slice(1), env)
    const { command, work, argv: parsed } = parseCommand(argv, env)
    const config = loadConfig(env)
    try {
      db = await openDatabase({ url: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: 2 })
    } catch (error) {
      // A server holds the embedded database: it runs the command instead, over its admin channel.
      if ((error as { code?: string }).code !== DATA_DIR_LOCKED) throw error
      const result = await sendToAdminChannel(config.DATA_DIR, parsed).catch((reason) => {
        throw reason instanceof AdminChannelError ? reason : error
      })
      process.stdout.write(`${JSON.stringify(result)}\n`)
      return 0
    }
    const result = await (async () => {
      try {
        if (command !== 'migrate') await migrate(db!.sql)
        const result = await work(db!.sql)
        if (command === 'resume-type') await publishResume(config, result)
        return result
      } catch (error) {
        throw explainDatabaseError(error, config.DATABASE_URL)
      }
    })()
    process.stdout.write(`${JSON.stringify(result)}\n`)
    return 0
  } catch (error) {
    console.error(error instanceof UnknownCommand ? error.message : `error: ${describeError(error)}`)
    return 1
  } finally {
    await db?.close().catch(() => {})
  }
}

if (import.meta.main) process.exit(await runCli(process.argv.slice(2)))
