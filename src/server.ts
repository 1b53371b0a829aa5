// Wires the services together and listens: Bun.serve with the HTTP handler and the worker WebSocket.
// main.ts runs it from the environment; end-to-end tests run it in-process or as a child process.
import type { Server } from 'bun'
import { createHandler } from './app'
import { AuditLog } from './auth/audit'
import { Authenticator } from './auth/authenticator'
import { clientAddress, parseTrustedProxies } from './auth/client-address'
import { RateLimiter } from './auth/limits'
import { CredentialWatch } from './auth/revocation'
import { PublicTokens } from './auth/public-tokens'
import { type Config, listenHost, metricsPort, redisPrefix, sweepIntervalMs, urlHost } from './config'
import { explainDatabaseError, openDatabase, SERVER_QUERY_TIMEOUT_MS, type Database } from './db/client'
import { migrate } from './db/migrate'
import { RetentionJob, retentionSettings } from './db/retention'
import { errorResponse, HttpError } from './errors'
import { metricsHandler } from './health'
import { RedisBridge } from './hub/redis'
import { resyncFromDatabase } from './processes/resync'
import { Logger } from './ops/log'
import { Metrics } from './ops/metrics'
import { createProcessHub } from './processes/hub-rules'
import type { Process } from './processes/model'
import { CreateBatcher } from './processes/create-batcher'
import { quotasOf } from './processes/quotas'
import { ProcessReader } from './processes/reader'
import { closeAllStreams, streamStats } from './processes/sse-session'
import type { Services } from './wiring'
import { WorkerGateway, type WorkerSocketData } from './workers/gateway'
import { WorkerSessions } from './workers/sessions'
import { LeaseSweeper } from './workers/leases'
import { HeldLeases } from './workers/held'
import { QueuePolicy } from './workers/queue'
import { ScheduleLoop } from './schedules/loop'
import { DeliveryLoop } from './webhooks/loop'
import { TreeRefresher } from './processes/tree-refresh'

export interface Running {
  services: Services
  server: Server<WorkerSocketData>
  gateway: WorkerGateway
  bridge: RedisBridge<Process> | null
  /** The tick loop (src/schedules/loop.ts) and the webhook delivery loop (src/webhooks/loop.ts). */
  scheduler: ScheduleLoop
  deliveries: DeliveryLoop
  url: string
  /** Where GET /metrics is served on its own port (METRICS_PORT), or null with METRICS_PORT=off. */
  metricsUrl: string | null
  stop(): Promise<void>
}

const SHUTDOWN_BUDGET_MS = 9000

export async function buildServices(
  config: Config,
  o: { db?: Database; log?: Logger } = {},
): Promise<{ services: Services; bridge: RedisBridge<Process> | null; sweeper: LeaseSweeper; held: HeldLeases }> {
  const log = o.log ?? new Logger(config.LOG_LEVEL)
  const db =
    o.db ??
    (await openDatabase({
      url: config.DATABASE_URL,
      dataDir: config.DATA_DIR,
      poolMax: config.DB_POOL_MAX,
      queryTimeoutMs: SERVER_QUERY_TIMEOUT_MS,
      statementTimeoutMs: config.DB_STATEMENT_TIMEOUT_MS,
    }))
  try {
    await migrate(db.sql)
  } catch (error) {
    if (!o.db) await db.close().catch(() => {})
    throw explainDatabaseError(error, config.DATABASE_URL)
  }
  const metrics = new Metrics()
  const hub = createProcessHub()
  // Parents' streams follow their children (src/processes/tree-refresh.ts).
  const trees = new TreeRefresher(db.sql, hub, log)
  hub.onPublish = (processes) => {
    metrics.jobs.observe(processes)
    trees.observe(processes)
  }
  const auth = new Authenticator(db.sql, config.AUTH_CACHE_MS)
  const audit = new AuditLog(db.sql, auth, config.AUDIT_FLUSH_MS, log)
  const held = new HeldLeases()
  const queue = new QueuePolicy(config)
  const credentials = new CredentialWatch(db.sql, log, config.AUTH_CACHE_MS)
  const limits = {
    token: new RateLimiter(config.RATE_LIMIT_PER_TOKEN_PER_S, config.RATE_LIMIT_BURST),
    workspace: new RateLimiter(config.RATE_LIMIT_PER_WORKSPACE_PER_S, Math.max(config.RATE_LIMIT_BURST, 2 * config.RATE_LIMIT_PER_WORKSPACE_PER_S)),
    failures: new RateLimiter(config.AUTH_FAILURES_PER_MIN / 60, Math.max(1, config.AUTH_FAILURES_PER_MIN)),
    signIn: new RateLimiter(config.SIGN_IN_PER_MIN / 60, Math.max(1, config.SIGN_IN_PER_MIN)),
  }
  const services: Services = {
    config,
    db,
    sql: db.sql,
    hub,
    auth,
    audit,
    log,
    metrics,
    live: held,
    queue,
    reader: new ProcessReader(db.sql, held, hub),
    creates: new CreateBatcher(db.sql, hub, quotasOf(config)),
    credentials,
    publicTokens: new PublicTokens(db.sql, log, config.AUTH_CACHE_MS),
    limits,
    proxies: parseTrustedProxies(config.TRUSTED_PROXIES),
    draining: { value: false },
  }

  let bridge: RedisBridge<Process> | null = null
  if (config.REDIS_URL) {
    bridge = new RedisBridge({
      url: config.REDIS_URL,
      prefix: redisPrefix(config),
      hub,
      log,
      metrics,
      onResync: (since) => resyncFromDatabase(db.sql, hub, since),
    })
    hub.attach(bridge)
    await bridge.connect()
  }
  const sweeper = new LeaseSweeper(db.sql, hub, log, metrics, config.JOB_TIMEOUT_MS, sweepIntervalMs(config), queue)
  return { services, bridge, sweeper, held }
}

export async function startServer(config: Config, o: { db?: Database; log?: Logger } = {}): Promise<Running> {
  // Bound first, so a taken METRICS_PORT fails before anything is opened; it answers 503 until the services are up.
  let serveMetrics: ((request: Request) => Promise<Response>) | null = null
  let metricsPortTaken: number | null = null
  const metricsServer = listenForMetrics(
    config,
    (request) => (serveMetrics ? serveMetrics(request) : Promise.resolve(errorResponse(503, 'unavailable', 'Starting', undefined, { 'Retry-After': '1' }))),
    (port) => (metricsPortTaken = port),
  )
  const built = await buildServices(config, o).catch((error) => {
    metricsServer?.stop(true)
    throw error
  })
  const { services, bridge, sweeper, held } = built
  serveMetrics = metricsHandler(services)
  if (metricsPortTaken !== null)
    services.log.warn('METRICS_PORT is taken (another instance on this host?); /metrics is served on PORT only', { metrics_port: metricsPortTaken })
  const { log, metrics, hub, audit } = services
  const gateway = new WorkerGateway(services, held)
  const sessions = new WorkerSessions(services.sql, gateway, log)
  const retention = new RetentionJob(services.sql, retentionSettings(config), log, config.RETENTION_INTERVAL_MS)
  metrics.storage.retention = retention.totals
  const { scheduler, deliveries } = startFeatureLoops(services)
  const handle = createHandler(services)

  metrics.gauge('sse_streams_open', () => streamStats.open)
  metrics.gauge('workers_connected', () => gateway.connected)
  metrics.gauge('worker_leases_watched', () => gateway.heldCount)
  metrics.gauge('hub_watched_processes', () => hub.counts().ids)
  metrics.gauge('hub_watched_workspaces', () => hub.counts().workspaces)
  metrics.gauge('hub_subscriptions', () => bridge?.subscriptions ?? 0)
  metrics.counter('events_published', 'Process states committed on this instance and published to its streams (and Redis).', () => hub.published)
  metrics.gauge('redis_up', () => (bridge ? (bridge.healthy ? 1 : 0) : -1))
  metrics.gauge('audit_rows_pending', () => audit.pending)
  metrics.gauge('progress_queued', () => held.dirtyCount)
  metrics.gauge('worker_send_buffered_bytes', () => gateway.bufferedBytes)
  metrics.gauge('worker_frames_in_flight', () => gateway.framesInFlight)
  metrics.counter('worker_sockets_closed_slow', 'Worker sockets closed because the worker did not read its replies.', () => gateway.closedSlow)
  metrics.counter('worker_frames_refused_busy', 'Worker frames refused at once: too many in hand or too many claims waiting.', () => gateway.refusedBusy)
  metrics.counter(
    'connections_closed_revoked',
    'Streams and worker sockets closed because their credential was revoked or expired.',
    () => services.credentials.closed,
  )

  const release = () => Promise.all([metricsServer?.stop(true), bridge?.close(), services.db.close()])
  const server = await listen(listenHost(config), config.PORT, release, {
    // SSE streams are quiet between keepalives; Bun's default (10 s) would cut them before 25 s.
    idleTimeout: Math.min(255, Math.max(30, Math.ceil((config.SSE_KEEPALIVE_MS * 2) / 1000) + 5)),
    // The 1 MiB limit is enforced by the handler (with the API's 413 error body); this is only a hard stop.
    maxRequestBodySize: 16 * 1024 * 1024,
    development: false,
    async fetch(request, server) {
      if (isWorkerPath(request.url)) return upgradeWorker(request, server)
      return handle(request, () => server.requestIP(request)?.address ?? null)
    },
    error(error) {
      log.error('unhandled server error', { error: String(error) })
      return errorResponse(500, 'internal', 'Internal server error')
    },
    websocket: {
      // Oversized frames are answered with an error by the gateway (64 KiB rule); this is only a hard stop.
      maxPayloadLength: 16 * 1024 * 1024, // as maxRequestBodySize; a bigger frame gets no reply: Bun closes the socket with 1009
      idleTimeout: 120,
      sendPings: true,
      perMessageDeflate: false,
      open: (ws) => gateway.open(ws),
      message: (ws, message) => gateway.message(ws, message),
      close: (ws) => gateway.close(ws),
    },
  })

  async function upgradeWorker(request: Request, server: Server<WorkerSocketData>): Promise<Response | undefined> {
    const started = performance.now()
    const url = new URL(request.url)
    const header = request.headers.get('authorization')
    const inQuery = !header && url.searchParams.has('token')
    const token = header ? (/^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] ?? null) : url.searchParams.get('token')
    let status = 101
    let workerTokenId: number | null = null
    const address = clientAddress(request, server.requestIP(request)?.address ?? null, services.proxies).address
    try {
      if (services.draining.value) throw new HttpError(503, 'unavailable', 'Server is shutting down')
      if (inQuery && config.WORKER_TOKEN_IN_QUERY === 'off')
        throw new HttpError(401, 'unauthenticated', 'WORKER_TOKEN_IN_QUERY is off: send the worker token as Authorization: Bearer, not ?token=', undefined, {
          'WWW-Authenticate': 'Bearer',
        })
      // Failed authentications per address, as on REST (src/auth/plugin.ts authenticateFrom).
      const wait = address === null ? 0 : services.limits.failures.peek(address)
      if (wait > 0)
        throw new HttpError(429, 'rate_limited', `Too many failed authentications from this address; retry after ${wait} s`, undefined, {
          'Retry-After': String(wait),
        })
      const worker = await services.auth.authenticateWorker(token).catch((error) => {
        if (address !== null && error instanceof HttpError && error.status === 401) services.limits.failures.take(address)
        throw error
      })
      workerTokenId = worker.tokenId
      if (!gateway.admitSocket(worker.tokenId)) {
        throw new HttpError(
          429,
          'rate_limited',
          `This worker token has ${config.MAX_SOCKETS_PER_WORKER_TOKEN} sockets open here (MAX_SOCKETS_PER_WORKER_TOKEN); close one first`,
          undefined,
          { 'Retry-After': '1' },
        )
      }
      if (!server.upgrade(request, { data: gateway.newSocketData(worker) })) {
        gateway.releaseSocket(worker.tokenId)
        status = 426
        return errorResponse(426, 'bad_request', 'Expected a WebSocket upgrade', undefined, { Upgrade: 'websocket' })
      }
      return undefined
    } catch (error) {
      const e = error instanceof HttpError ? error : new HttpError(503, 'unavailable', 'Database unavailable')
      status = e.status
      return errorResponse(e.status, e.code, e.message, undefined, e.headers)
    } finally {
      // The route, never the URL: a ?token= must not reach the logs.
      metrics.request('GET', '/workers/ws', status, performance.now() - started)
      // Every connect is audited, accepted (101) or refused, with the worker token when it was valid.
      const incoming = request.headers.get('x-request-id')
      audit.record({
        user_id: null,
        token_id: null,
        workspace_id: null,
        method: 'GET',
        route: '/workers/ws',
        status,
        ip: address,
        user_agent: request.headers.get('user-agent'),
        request_id: incoming !== null && /^[\w.:-]{1,128}$/.test(incoming) ? incoming : crypto.randomUUID(),
        request_id_from_client: incoming !== null && /^[\w.:-]{1,128}$/.test(incoming),
        created_at: new Date().toISOString(),
        worker_token_id: workerTokenId,
      })
      log.info('request', { method: 'GET', route: '/workers/ws', status, ms: Math.round((performance.now() - started) * 100) / 100 })
    }
  }

  audit.start()
  services.credentials.start()
  sweeper.start()
  retention.start()
  sessions.start()
  metrics.startLagMonitor()
  const url = `http://${urlHost(listenHost(config))}:${server.port}`
  const metricsUrl = metricsServer ? `http://${urlHost(config.METRICS_HOST)}:${metricsServer.port}/metrics` : null

  let stopping: Promise<void> | null = null
  const stop = () =>
    (stopping ??= (async () => {
      services.draining.value = true
      const deadline = setTimeout(() => {
        log.error('shutdown budget exceeded; exiting anyway')
        log.flush()
        process.exit(0)
      }, SHUTDOWN_BUDGET_MS)
      try {
        const stopped = server.stop()
        metricsServer?.stop(true)
        closeAllStreams()
        await sweeper.stop()
        await retention.stop()
        await scheduler.stop()
        await deliveries.stop()
        hub.work.close()
        services.credentials.stop()
        services.publicTokens.stop()
        metrics.stopLagMonitor()
        // Accepted live states are written before the workers' sockets close: a clean stop loses nothing acked.
        await gateway.stop().catch(() => {})
        await new Promise((resolve) => setImmediate(resolve)) // replies in hand have been made
        gateway.closeAll(1012, 'server restarting')
        await sessions.stop()
        await audit.stop()
        await Promise.race([stopped, Bun.sleep(3000)])
        server.stop(true)
        await bridge?.close()
        await services.db.close()
      } finally {
        clearTimeout(deadline)
        log.flush()
      }
    })())

  return { services, server, gateway, bridge, scheduler, deliveries, url, metricsUrl, stop }
}

/** Schedules' tick loop and webhooks' delivery loop, started, with their metrics. */
function startFeatureLoops(services: Services) {
  const { metrics } = services
  const scheduler = new ScheduleLoop(services)
  const deliveries = new DeliveryLoop(services.sql, services.config, services.log)
  metrics.counter('schedule_ticks_run', 'Schedule ticks that created a process on this instance.', () => scheduler.ticksRun)
  metrics.counter(
    'schedule_ticks_skipped',
    "Schedule ticks skipped on this instance because the last run was still pending or running (overlap 'skip').",
    () => scheduler.ticksSkipped,
  )
  metrics.counter(
    'schedule_ticks_skipped_quota',
    'Schedule ticks skipped on this instance because their workspace was at a quota (WORKSPACE_MAX_PENDING and the rest).',
    () => scheduler.ticksSkippedQuota,
  )
  metrics.counter('webhook_attempts', 'Webhook delivery attempts made from this instance.', () => deliveries.totals.attempts)
  metrics.counter('webhook_attempts_succeeded', 'Webhook delivery attempts answered 2xx.', () => deliveries.totals.succeeded)
  metrics.counter(
    'webhook_attempts_failed',
    'Webhook delivery attempts that failed (non-2xx, refused, timed out, unreachable).',
    () => deliveries.totals.failedAttempts,
  )
  metrics.gauge('webhook_deliveries_in_flight', () => deliveries.inFlight)
  scheduler.start()
  deliveries.start()
  return { scheduler, deliveries }
}

type ServeOptions = Parameters<typeof Bun.serve<WorkerSocketData>>[0]

export class PortInUseError extends Error {
  constructor(readonly port: number) {
    super(`port ${port} is already in use (another server running there?); stop it or set PORT to a free port`)
  }
}

/**
 * Bun.serve on `port`, refusing a port that is taken. Outside development mode Bun sets SO_REUSEPORT by
 * default, so a second server on a busy port started without a word and the kernel split connections between
 * the two (each with its own database and tokens: random 401s). `reusePort: false` makes the bind fail.
 */
async function listen(hostname: string, port: number, release: () => Promise<unknown>, options: Omit<ServeOptions, 'port'>): Promise<Server<WorkerSocketData>> {
  try {
    return Bun.serve<WorkerSocketData>({ ...options, hostname, port, reusePort: false } as ServeOptions)
  } catch (error) {
    await release().catch(() => {})
    if ((error as { code?: string }).code === 'EADDRINUSE') throw new PortInUseError(port)
    throw error
  }
}

export class MetricsPortInUseError extends Error {
  constructor(readonly port: number) {
    super(`METRICS_PORT ${port} is already in use (another instance on this host?); set METRICS_PORT to a free port, 0 for any free one, or off`)
  }
}

/**
 * The metrics port (METRICS_PORT on METRICS_HOST); null when off. A taken port is refused, as `listen` does,
 * when it is the only place /metrics is served (METRICS_ON_API_PORT=off). Otherwise (a second instance on one
 * host, say) the instance goes on without it: `onTaken` is told, and /metrics stays on PORT.
 */
export function listenForMetrics(
  config: Pick<Config, 'METRICS_PORT' | 'METRICS_HOST' | 'METRICS_ON_API_PORT'>,
  fetch: (request: Request) => Promise<Response>,
  onTaken: (port: number) => void = () => {},
): Server<undefined> | null {
  const port = metricsPort(config)
  if (port === null) return null
  try {
    return Bun.serve({ hostname: config.METRICS_HOST, port, reusePort: false, development: false, fetch })
  } catch (error) {
    if ((error as { code?: string }).code !== 'EADDRINUSE') throw error
    if (config.METRICS_ON_API_PORT === 'off') throw new MetricsPortInUseError(port)
    onTaken(port)
    return null
  }
}

/** `…/workers/ws` with or without a query, read off the URL without parsing it (every request asks). */
function isWorkerPath(url: string): boolean {
  const path = url.indexOf('/', url.indexOf('//') + 2)
  if (path === -1 || !url.startsWith('/workers/ws', path)) return false
  const end = path + '/workers/ws'.length
  return end === url.length || url[end] === '?'
}
