// Environment → typed config. The only module that reads process.env.
import { Type as T, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { createHash } from 'node:crypto'
import { resolve } from 'node:path'

const Int = (def: number, min: number, max: number) => T.Integer({ default: def, minimum: min, maximum: max })
const Days = (def?: number) => T.Number({ ...(def === undefined ? {} : { default: def }), minimum: 0, maximum: 36_500 })

export const ConfigSchema = T.Object({
  PORT: Int(3000, 0, 65535),
  /** The address to listen on; default: see listenHost. */
  HOST: T.Optional(T.String({ minLength: 1 })),
  DATABASE_URL: T.Optional(T.String({ minLength: 1 })),
  DATA_DIR: T.String({ default: './data' }),
  REDIS_URL: T.Optional(T.String({ minLength: 1 })),
  /**
   * Extension: prefix for every Redis channel, so deployments and test runs can share one Redis. Unset: one
   * derived from the database's identity (redisPrefix), so two deployments on one Redis never see each
   * other's states, and every instance of one deployment (one database) agrees on it.
   */
  REDIS_PREFIX: T.Optional(T.String()),
  SSE_MAX_MS: Int(25_000, 100, 3_600_000),
  SSE_KEEPALIVE_MS: Int(10_000, 50, 600_000),
  SSE_RETRY_MS: Int(1000, 0, 600_000),
  JOB_TIMEOUT_MS: Int(300_000, 100, 86_400_000),
  /** How often each instance runs the lease sweep; defaults to a tenth of JOB_TIMEOUT_MS. */
  SWEEP_INTERVAL_MS: T.Optional(T.Integer({ minimum: 20, maximum: 3_600_000 })),
  /** Live state (progress) is written behind its ack at most once per this per process (src/workers/write-behind.ts). */
  PROGRESS_PERSIST_MS: Int(250, 0, 60_000),
  /** Live output (extension): what one process's output chunks may add up to (JSON bytes); past it a chunk is refused. */
  OUTPUT_MAX_BYTES: Int(1024 * 1024, 0, 64 * 1024 * 1024),
  /** Live output is written behind in one statement per this interval, for every process (src/workers/output-behind.ts). */
  OUTPUT_FLUSH_MS: Int(10, 1, 10_000),
  DB_POOL_MAX: Int(10, 1, 200),
  /**
   * Postgres's statement_timeout on the server's pool: a statement running longer is cancelled by Postgres
   * itself, so a request the server gave up on (503 after 3 s) does not keep its query running (0 = none).
   * Migrations run without it. The embedded database (PGlite) ignores it.
   */
  DB_STATEMENT_TIMEOUT_MS: Int(5000, 0, 3_600_000),
  /** A process's metadata at most this many bytes as JSON (413 beyond; 0 = only the 1 MiB body limit). */
  METADATA_MAX_BYTES: Int(64 * 1024, 0, 1024 * 1024),
  /**
   * Per-workspace quotas (src/processes/quotas.ts), refused with 429 naming the quota in details.quota; 0 = no
   * quota. Pending processes, distinct types among them, and the bytes of their metadata.
   */
  WORKSPACE_MAX_PENDING: Int(100_000, 0, 100_000_000),
  WORKSPACE_MAX_PENDING_TYPES: Int(1000, 0, 10_000_000),
  WORKSPACE_MAX_METADATA_BYTES: Int(1024 * 1024 * 1024, 0, Number.MAX_SAFE_INTEGER),
  /** POST /processes/bulk: a filter matching more processes than this is refused (422) before anything changes. */
  BULK_MAX: Int(100_000, 1, 10_000_000),
  /**
   * Processes a workspace stream's snapshot sends at most (then `event: truncated`; live changes go on); 0 = no
   * cap. GET /processes/stats reads at most STATS_MAX_ROWS rows per figure (then `truncated: true`).
   */
  WORKSPACE_STREAM_SNAPSHOT_MAX: Int(10_000, 0, 100_000_000),
  STATS_MAX_ROWS: Int(50_000, 1, 100_000_000),
  CORS_ORIGINS: T.String({ default: '' }),
  LOG_LEVEL: T.Union([T.Literal('debug'), T.Literal('info'), T.Literal('warn'), T.Literal('error'), T.Literal('silent')], { default: 'info' }),
  /** How long a token look-up may be served from memory; revocation takes effect within this. */
  AUTH_CACHE_MS: Int(4000, 0, 5000),
  AUDIT_FLUSH_MS: Int(250, 10, 250),
  /** Queue (extension): attempts a process gets unless its type or its creator says otherwise; 1 = fail → failed. */
  DEFAULT_MAX_ATTEMPTS: Int(1, 1, 100),
  /** Retry backoff: RETRY_BASE_MS × 2^(attempt−1), capped at RETRY_MAX_MS, then jittered to 50–100 %. */
  RETRY_BASE_MS: Int(1000, 0, 86_400_000),
  RETRY_MAX_MS: Int(3_600_000, 0, 604_800_000),
  /** JSON per type: {"<type>": {"max_attempts"?, "retry_base_ms"?, "retry_max_ms"?, "concurrency"?, "rate"?: {"max", "per_ms"}}}. */
  TYPE_DEFAULTS: T.String({ default: '' }),
  /** Running processes one workspace may hold at once (claims stop at it); 0 = no cap. */
  WORKSPACE_CONCURRENCY: Int(0, 0, 1_000_000),
  /** Extension: how long a browser session (POST /auth/session) lasts; never past its API token's expiry. */
  SESSION_TTL_MS: Int(8 * 3_600_000, 60_000, 30 * 86_400_000),
  /**
   * Extension: per-instance token buckets, in memory (README "Limits"). Requests per second per
   * API token (its browser sessions share its bucket) and per workspace, and the per-token bucket size; 0 = off. A
   * workspace's bucket holds RATE_LIMIT_BURST or two seconds of its rate, whichever is more.
   */
  RATE_LIMIT_PER_TOKEN_PER_S: Int(200, 0, 10_000_000),
  RATE_LIMIT_BURST: Int(1000, 1, 10_000_000),
  RATE_LIMIT_PER_WORKSPACE_PER_S: Int(1000, 0, 10_000_000),
  /**
   * Failed authentications (401) one client address may make per minute on this instance; past it, its
   * requests get 429 before any token look-up (0 = no limit). The address is the socket's peer, or the
   * X-Forwarded-For client when the peer is in TRUSTED_PROXIES.
   */
  AUTH_FAILURES_PER_MIN: Int(60, 0, 10_000_000),
  /**
   * A refusal (429, 401, or 413 to a caller without a valid credential) is sent this long after it is decided
   * (at most 2,000 held at once), so a flood's closed loop gets few answers a second (src/app.ts); 0 = at once.
   */
  REFUSAL_DELAY_MS: Int(250, 0, 10_000),
  /** Proxies (addresses, IPv4 CIDRs, comma-separated) whose X-Forwarded-For and X-Forwarded-Proto are believed; none by default. */
  TRUSTED_PROXIES: T.String({ default: '' }),
  /** Sign-ins (POST /auth/session) per API token per minute on this instance (0 = no limit). */
  SIGN_IN_PER_MIN: Int(10, 0, 10_000_000),
  /** Open sessions one API token may have; a sign-in past it revokes that token's oldest. */
  MAX_SESSIONS_PER_TOKEN: Int(20, 1, 1_000_000),
  /** Open SSE streams per API token on this instance, its browser sessions' streams included (0 = no cap). */
  MAX_STREAMS_PER_TOKEN: Int(100, 0, 10_000_000),
  /** `log` lines (events) one process may have; past it a log frame is refused with invalid_message (0 = no cap). */
  MAX_LOG_EVENTS_PER_PROCESS: Int(10_000, 0, 100_000_000),
  /** Open worker sockets per worker token on this instance (0 = no cap): a leaked token cannot open sockets without bound. */
  MAX_SOCKETS_PER_WORKER_TOKEN: Int(1000, 0, 10_000_000),
  /** `off`: a worker token in the URL (`/workers/ws?token=`) is refused; only the Authorization header is taken. */
  WORKER_TOKEN_IN_QUERY: T.Union([T.Literal('on'), T.Literal('off')], { default: 'on' }),
  /** `claim`s waiting for work on one worker socket at once (0 = no cap). */
  MAX_WAITING_CLAIMS_PER_SOCKET: Int(100, 0, 10_000_000),
  /** Frames one worker socket may have in hand (received, not yet answered); beyond it they are refused at once. */
  MAX_FRAMES_IN_FLIGHT_PER_SOCKET: Int(1000, 1, 10_000_000),
  /** Unsent reply bytes a worker socket may hold (a worker that does not read); beyond it the socket is closed. */
  MAX_WORKER_BUFFERED_BYTES: Int(4 * 1024 * 1024, 64 * 1024, 1024 * 1024 * 1024),
  /**
   * GET /metrics is served on this port of its own (Prometheus's convention, 9464 as OpenTelemetry's
   * exporter uses), on METRICS_HOST; `0`: any free port (logged at start); `off`: none. A port that is taken
   * (another instance on this host) fails the start, naming METRICS_PORT, when it is the only place /metrics
   * is served (METRICS_ON_API_PORT=off); otherwise the instance starts without it, with a warning.
   */
  METRICS_PORT: T.String({ default: '9464', pattern: '^(off|\\d{1,5})$' }),
  /** The metrics port's address: the loopback by default, so only this host (a local Prometheus or agent) reads it. */
  METRICS_HOST: T.String({ default: '127.0.0.1', minLength: 1 }),
  /**
   * GET /metrics on the API's port too (`on`, the default: the contract's operations route), or only on
   * METRICS_PORT (`off`: a 404 on the API's port, what a deployment that exposes PORT should set).
   */
  METRICS_ON_API_PORT: T.Union([T.Literal('on'), T.Literal('off')], { default: 'on' }),
  /** When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>` on either port. */
  METRICS_TOKEN: T.Optional(T.String({ minLength: 1 })),
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
  /** Schedules (src/schedules/): the shortest gap between two ticks a schedule may have. */
  SCHEDULE_MIN_INTERVAL_MS: Int(1000, 1000, 31_536_000_000),
  /** A tick handled up to this late is on time; later it was missed (what catch_up decides about). */
  SCHEDULE_GRACE_MS: Int(10_000, 0, 86_400_000),
  /** Each instance looks for due schedules at the next tick, and at least this often (new or changed schedules). */
  SCHEDULE_POLL_MS: Int(1000, 20, 60_000),
  /** Webhooks (src/webhooks/): `on` lets deliveries reach loopback, private, link-local and metadata addresses (on-premises). */
  WEBHOOK_ALLOW_PRIVATE: T.Union([T.Literal('on'), T.Literal('off')], { default: 'off' }),
  /** One delivery attempt's deadline (connect, send, response). */
  WEBHOOK_TIMEOUT_MS: Int(10_000, 100, 120_000),
  /** Deliveries one instance sends at once, over every endpoint. */
  WEBHOOK_CONCURRENCY: Int(256, 1, 10_000),
  /** Deliveries in flight to one webhook at once, over every instance: a slow endpoint holds no more slots than this. */
  WEBHOOK_ENDPOINT_CONCURRENCY: Int(16, 1, 1000),
  /** Retry backoff: WEBHOOK_RETRY_BASE_MS × 2^(attempt−1), capped at WEBHOOK_RETRY_MAX_MS, jittered to 50–100 %. */
  WEBHOOK_RETRY_BASE_MS: Int(5000, 0, 86_400_000),
  WEBHOOK_RETRY_MAX_MS: Int(3_600_000, 0, 86_400_000),
  /** How long a delivery is retried after its event (or its last redelivery) before it is marked failed. */
  WEBHOOK_RETRY_WINDOW_MS: Int(86_400_000, 0, 604_800_000),
  /** How often an idle instance looks for due deliveries. */
  WEBHOOK_POLL_MS: Int(200, 10, 60_000),
  /** Days finished deliveries (and their attempts) stay in the delivery log; 0 keeps them forever. */
  WEBHOOK_RETENTION_DAYS: Days(7),
})

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {}

/**
 * `HOST`, else the loopback for the embedded database (`npm start` on a laptop: one instance, nothing to share
 * with the network) and every interface with `DATABASE_URL` (a deployment: the executable, the container,
 * several instances behind a balancer).
 */
export function listenHost(config: Pick<Config, 'HOST' | 'DATABASE_URL'>): string {
  return config.HOST ?? (config.DATABASE_URL ? '0.0.0.0' : '127.0.0.1')
}

/** The metrics port, or null for `METRICS_PORT=off`; a number past 65535 is refused here. */
export function metricsPort(config: Pick<Config, 'METRICS_PORT'>): number | null {
  if (config.METRICS_PORT === 'off') return null
  const port = Number(config.METRICS_PORT)
  if (port > 65535)
    throw new ConfigError(`invalid configuration:\n  METRICS_PORT: Expected a port (0-65535) or off (got ${JSON.stringify(config.METRICS_PORT)})`)
  return port
}

/** How this machine reaches a server listening on `host`, for a URL (`healthcheck`, tests): the loopback for a wildcard. */
export function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '[::]') return '127.0.0.1'
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

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
    // A union of literals (LOG_LEVEL) says which values it takes, not "Expected union value".
    const expected = (e: (typeof errors)[number]) => {
      const options = (e.schema as { anyOf?: Array<{ const?: unknown }> }).anyOf?.map((option) => option.const)
      return options?.every((o) => typeof o === 'string') ? `Expected one of ${options.join(', ')}` : e.message
    }
    const lines = errors.map((e) => `${e.path.slice(1)}: ${expected(e)} (got ${JSON.stringify(e.value)})`)
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`)
  }
  typeDefaults(config as Config) // refuses a malformed TYPE_DEFAULTS at start
  metricsPort(config as Config)
  return config as Config
}

const TypeDefault = T.Object(
  {
    max_attempts: T.Optional(T.Integer({ minimum: 1, maximum: 100 })),
    retry_base_ms: T.Optional(T.Integer({ minimum: 0, maximum: 86_400_000 })),
    retry_max_ms: T.Optional(T.Integer({ minimum: 0, maximum: 604_800_000 })),
    /** Running processes of this type at once, over every workspace and instance; claims stop at it. */
    concurrency: T.Optional(T.Integer({ minimum: 1, maximum: 1_000_000 })),
    /** At most `max` claims of this type per window of `per_ms` (windows aligned to the epoch), over every instance. */
    rate: T.Optional(
      T.Object(
        { max: T.Integer({ minimum: 1, maximum: 1_000_000 }), per_ms: T.Integer({ minimum: 10, maximum: 86_400_000 }) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)
const TypeDefaults = T.Record(T.String({ pattern: '^[a-z][a-z0-9_.-]{0,63}$' }), TypeDefault)
export type TypeDefaults = Static<typeof TypeDefaults>

const parsedTypeDefaults = new WeakMap<Config, TypeDefaults>()

/** TYPE_DEFAULTS parsed and checked (once per config); throws ConfigError when it is not what it should be. */
export function typeDefaults(config: Config): TypeDefaults {
  let parsed = parsedTypeDefaults.get(config)
  if (parsed) return parsed
  let value: unknown = {}
  if (config.TYPE_DEFAULTS.trim() !== '') {
    try {
      value = JSON.parse(config.TYPE_DEFAULTS)
    } catch {
      throw new ConfigError('invalid configuration:\n  TYPE_DEFAULTS: not valid JSON')
    }
  }
  const first = Value.Errors(TypeDefaults, value).First()
  if (first) throw new ConfigError(`invalid configuration:\n  TYPE_DEFAULTS${first.path}: ${first.message}`)
  parsed = value as TypeDefaults
  parsedTypeDefaults.set(config, parsed)
  return parsed
}

export type RetainedStatus = 'completed' | 'failed' | 'cancelled'

/** Days a finished process of this status is kept (0: forever). */
export function retentionDays(config: Config, status: RetainedStatus): number {
  const own = { completed: config.RETENTION_DAYS_COMPLETED, failed: config.RETENTION_DAYS_FAILED, cancelled: config.RETENTION_DAYS_CANCELLED }[status]
  return own ?? config.RETENTION_DAYS
}

/**
 * REDIS_PREFIX, or `ps:<8 hex>:` from the database's identity: DATABASE_URL's user, host, port and database
 * (not its password or options), or the embedded DATA_DIR's absolute path.
 */
export function redisPrefix(config: Pick<Config, 'REDIS_PREFIX' | 'DATABASE_URL' | 'DATA_DIR'>): string {
  if (config.REDIS_PREFIX !== undefined) return config.REDIS_PREFIX
  let identity = `embedded ${resolve(config.DATA_DIR)}`
  if (config.DATABASE_URL) {
    try {
      const url = new URL(config.DATABASE_URL)
      identity = `postgres ${decodeURIComponent(url.username)}@${url.hostname}:${url.port || '5432'}${url.pathname}`
    } catch {
      identity = `postgres ${config.DATABASE_URL}`
    }
  }
  return `ps:${createHash('sha256').update(identity).digest('hex').slice(0, 8)}:`
}

export function sweepIntervalMs(config: Config): number {
  return config.SWEEP_INTERVAL_MS ?? Math.max(50, Math.min(30_000, Math.floor(config.JOB_TIMEOUT_MS / 10)))
}
