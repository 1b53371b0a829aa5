// Environment → typed config. The only module that reads process.env.
import { Type as T, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

const Int = (def: number, min: number, max: number) => T.Integer({ default: def, minimum: min, maximum: max })
const Days = (def?: number) => T.Number({ ...(def === undefined ? {} : { default: def }), minimum: 0, maximum: 36_500 })

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
  /**
   * Retention (src/db/retention.ts). Days may be fractional (0.01 ≈ 15 min, for soaks and tests); 0 keeps
   * forever. Finished processes go RETENTION_DAYS after they finished (per status where set), with their
   * idempotency keys; waiting_review, pending and running are never pruned.
   */
  RETENTION_DAYS: Days(30),
  RETENTION_DAYS_COMPLETED: T.Optional(Days()),
  RETENTION_DAYS_FAILED: T.Optional(Days()),
  RETENTION_DAYS_CANCELLED: T.Optional(Days()),
  /** process_events partitions whose whole range is older than this are dropped, whatever process they belong to. */
  EVENT_RETENTION_DAYS: Days(30),
  AUDIT_RETENTION_DAYS: Days(90),
  /** How often each instance runs retention (one at a time, under an advisory lock). */
  RETENTION_INTERVAL_MS: Int(3_600_000, 100, 86_400_000),
  /** Width of the partitions retention creates ahead (the migration's are daily). */
  PARTITION_INTERVAL_MS: Int(86_400_000, 1000, 2_592_000_000),
})

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {}

/** Reads the config from an environment (process.env by default); throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key]
    if (value === undefined || value === '') continue
    const type = ConfigSchema.properties[key as keyof Config].type
    const numeric = type === 'integer' ? /^-?\d+$/ : type === 'number' ? /^-?\d+(\.\d+)?$/ : null
    raw[key] = numeric?.test(value) ? Number(value) : value
  }
  const config = Value.Default(ConfigSchema, raw)
  const errors = [...Value.Errors(ConfigSchema, config)]
  if (errors.length > 0) {
    const lines = errors.map((e) => `${e.path.slice(1)}: ${e.message} (got ${JSON.stringify(e.value)})`)
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`)
  }
  return config as Config
}

export type RetainedStatus = 'completed' | 'failed' | 'cancelled'

/** Days a finished process of this status is kept (0: forever). */
export function retentionDays(config: Config, status: RetainedStatus): number {
  const own = { completed: config.RETENTION_DAYS_COMPLETED, failed: config.RETENTION_DAYS_FAILED, cancelled: config.RETENTION_DAYS_CANCELLED }[status]
  return own ?? config.RETENTION_DAYS
}

export function sweepIntervalMs(config: Config): number {
  return config.SWEEP_INTERVAL_MS ?? Math.max(50, Math.min(30_000, Math.floor(config.JOB_TIMEOUT_MS / 10)))
}
