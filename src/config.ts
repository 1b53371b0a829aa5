// Environment → typed config. The only module that reads process.env.
import { Type as T, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

const Int = (def: number, min: number, max: number) => T.Integer({ default: def, minimum: min, maximum: max })

export const ConfigSchema = T.Object({
  PORT: Int(3000, 0, 65535),
  DATABASE_URL: T.Optional(T.String({ minLength: 1 })),
  DATA_DIR: T.String({ default: './data' }),
  REDIS_URL: T.Optional(T.String({ minLength: 1 })),
  /** Extension: prefix for every Redis channel, so test runs and tenants can share one Redis. */
  REDIS_PREFIX: T.String({ default: '' }),
  SSE_MAX_MS: Int(25_000, 100, 3_600_000),
  SSE_KEEPALIVE_MS: Int(10_000, 50, 600_000),
  SSE_RETRY_MS: Int(1000, 0, 600_000),
  JOB_TIMEOUT_MS: Int(300_000, 100, 86_400_000),
  /** How often each instance runs the lease sweep; defaults to a tenth of JOB_TIMEOUT_MS. */
  SWEEP_INTERVAL_MS: T.Optional(T.Integer({ minimum: 20, maximum: 3_600_000 })),
  PROGRESS_FLUSH_MS: Int(100, 0, 60_000),
  DB_POOL_MAX: Int(10, 1, 200),
  CORS_ORIGINS: T.String({ default: '' }),
  LOG_LEVEL: T.Union([T.Literal('debug'), T.Literal('info'), T.Literal('warn'), T.Literal('error'), T.Literal('silent')], { default: 'info' }),
  /** How long a token look-up may be served from memory; revocation takes effect within this. */
  AUTH_CACHE_MS: Int(4000, 0, 5000),
  AUDIT_FLUSH_MS: Int(250, 10, 250),
})

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {}

/** Reads the config from an environment (process.env by default); throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key]
    if (value === undefined || value === '') continue
    raw[key] = /^-?\d+$/.test(value) && ConfigSchema.properties[key as keyof Config].type === 'integer' ? Number(value) : value
  }
  const config = Value.Default(ConfigSchema, raw)
  const errors = [...Value.Errors(ConfigSchema, config)]
  if (errors.length > 0) {
    // A union of literals (LOG_LEVEL) says which values it takes, not "Expected union value".
    const expected = (e: (typeof errors)[number]) => {
      const options = (e.schema as { anyOf?: Array<{ const?: unknown }> }).anyOf?.map((option) => option.const)
      return options?.every((o) => typeof o === 'string') ? `Expected one of ${options.join(', ')}` : e.message
    }
    const lines = errors.map((e) => `${e.path.slice(1)}: ${expected(e)} (got ${JSON.stringify(e.value)})`)
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`)
  }
  return config as Config
}

export function sweepIntervalMs(config: Config): number {
  return config.SWEEP_INTERVAL_MS ?? Math.max(50, Math.min(30_000, Math.floor(config.JOB_TIMEOUT_MS / 10)))
}
