// The executable: `serve` (the default), `healthcheck`, or an admin command (see cli.ts).
import { runCli, CLI_COMMANDS } from './cli'
import { ConfigError, loadConfig } from './config'
import { seedDemoIfEmpty } from './seed'
import { startServer } from './server'

async function serve() {
  const config = loadConfig()
  const running = await startServer(config)
  const { services } = running
  if (services.db.kind === 'pglite') {
    const banner = await seedDemoIfEmpty(services.sql, running.server.port!)
    if (banner) console.log(banner)
  }
  services.log.info('listening', {
    port: running.server.port,
    database: services.db.kind,
    redis: config.REDIS_URL ? 'on' : 'off (in-process hub, one instance)',
  })
  services.log.flush()
  const shutdown = (signal: string) => {
    services.log.info('shutting down', { signal })
    void running.stop().then(() => process.exit(0))
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
}

/** For the container's HEALTHCHECK: no curl needed. */
async function healthcheck() {
  const config = loadConfig()
  try {
    const response = await fetch(`http://127.0.0.1:${config.PORT}/health`, { signal: AbortSignal.timeout(3000) })
    process.exit(response.ok ? 0 : 1)
  } catch {
    process.exit(1)
  }
}

const [command = 'serve', ...args] = process.argv.slice(2)
try {
  if (command === 'serve') await serve()
  else if (command === 'healthcheck') await healthcheck()
  else if ((CLI_COMMANDS as readonly string[]).includes(command)) process.exit(await runCli([command, ...args]))
  else {
    console.error(`unknown command ${JSON.stringify(command)}; expected serve, healthcheck or one of: ${CLI_COMMANDS.join(', ')}`)
    process.exit(1)
  }
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error instanceof Error ? error.message : String(error))
  process.exit(1)
}
