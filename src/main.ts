// The executable: `serve` (the default), `healthcheck`, or an admin command (see cli.ts).
import { openAdminChannel, type AdminChannel } from './admin-channel'
import { runCli, runCommand, describeError, CLI_COMMANDS } from './cli'
import { ConfigError, listenHost, loadConfig, metricsPort, urlHost } from './config'
import { seedDemoIfEmpty } from './seed'
import { MetricsPortInUseError, PortInUseError, startServer } from './server'

const USAGE = `usage: processes-server [command]
  serve                 the server (the default), on PORT; configured by environment variables only
                        (PORT, DATABASE_URL, DATA_DIR, REDIS_URL, ... : see README "Configuration")
  healthcheck           exit 0 when the server on PORT answers GET /health, else print why and exit 1
  ${CLI_COMMANDS.join(', ')}
                        the admin commands; \`<command> --help\` lists their options`

/**
 * A busy port fails at once, before the database is opened (creating an embedded one takes seconds). The
 * server's own listen refuses it again should the port be taken in between.
 */
function checkPortFree(hostname: string, port: number | null, inUse: (port: number) => Error) {
  if (port === 0 || port === null) return
  try {
    Bun.serve({ hostname, port, reusePort: false, fetch: () => new Response(null, { status: 503 }) }).stop(true)
  } catch (error) {
    if ((error as { code?: string }).code === 'EADDRINUSE') throw inUse(port)
    throw error
  }
}

async function serve() {
  const config = loadConfig()
  checkPortFree(listenHost(config), config.PORT, (port) => new PortInUseError(port))
  // Only fatal where the metrics port is the one place /metrics is served (server.ts listenForMetrics).
  if (config.METRICS_ON_API_PORT === 'off') checkPortFree(config.METRICS_HOST, metricsPort(config), (port) => new MetricsPortInUseError(port))
  const running = await startServer(config)
  const { services } = running
  let channel: AdminChannel | null = null
  if (services.db.kind === 'pglite') {
    const banner = await seedDemoIfEmpty(services.sql, running.server.port!)
    if (banner) console.log(banner)
    // The CLI cannot open the embedded database while this process holds it: it sends its commands here.
    const inMemory = config.DATA_DIR === 'memory://' || config.DATA_DIR === ':memory:'
    if (!inMemory) {
      try {
        channel = openAdminChannel(config.DATA_DIR, (argv) => runCommand(services.sql, argv, services.hub), describeError)
      } catch (error) {
        services.log.warn('admin channel not available; the CLI needs the server stopped', { error: String(error) })
      }
    }
  }
  services.log.info('listening', {
    host: listenHost(config),
    port: running.server.port,
    metrics: running.metricsUrl ?? 'off (METRICS_PORT=off)',
    database: services.db.kind,
    redis: !config.REDIS_URL
      ? 'off (in-process hub, one instance)'
      : running.bridge?.healthy
        ? 'on'
        : 'degraded: not reachable; retrying (changes reach only this instance until it is back)',
  })
  services.log.flush()
  const shutdown = (signal: string) => {
    services.log.info('shutting down', { signal })
    channel?.close()
    void running.stop().then(() => process.exit(0))
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
}

/** For the container's HEALTHCHECK: no curl needed. Says on stderr why it failed (`docker inspect` shows it). */
async function healthcheck() {
  const config = loadConfig()
  const url = `http://${urlHost(listenHost(config))}:${config.PORT}/health`
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(3000) })
    if (response.ok) process.exit(0)
    console.error(`unhealthy: GET ${url} answered ${response.status} ${(await response.text().catch(() => '')).slice(0, 200)}`)
  } catch (error) {
    const { name, code } = error as { name?: string; code?: string }
    const reason =
      name === 'TimeoutError'
        ? 'no answer within 3 s'
        : /refused/i.test(String(code))
          ? 'connection refused'
          : error instanceof Error
            ? error.message
            : String(error)
    console.error(`unhealthy: GET ${url} failed: ${reason} (is the server running on PORT=${config.PORT}?)`)
  }
  process.exit(1)
}

const [command = 'serve', ...args] = process.argv.slice(2)
try {
  if (command === '--help' || command === '-h' || command === 'help') console.log(USAGE)
  else if (command === 'serve') await serve()
  else if (command === 'healthcheck') await healthcheck()
  else if ((CLI_COMMANDS as readonly string[]).includes(command)) process.exit(await runCli([command, ...args]))
  else {
    console.error(`unknown command ${JSON.stringify(command)}\n${USAGE}`)
    process.exit(1)
  }
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error instanceof Error ? error.message : String(error))
  process.exit(1)
}
