// The wiring: everything a feature needs (Services), built once by server.ts buildServices (or a test) and handed
// to each feature. This file names the ground floor (config, database, log, metrics); each layer above adds what
// it provides in a `services.ts` of its own, by declaration merging (as Fastify's decorators do), so the wiring
// never imports up: src/auth/services.ts, src/processes/services.ts, src/workers/services.ts.
import type { Config } from './config'
import type { Database, Sql } from './db/client'
import type { Logger } from './ops/log'
import type { Metrics } from './ops/metrics'

export interface Services {
  config: Config
  db: Database
  sql: Sql
  log: Logger
  metrics: Metrics
  /** Set while shutting down: streams end, new ones are refused. */
  draining: { value: boolean }
}
