// The wiring: everything a feature needs (Services), built once by server.ts buildServices (or a test) and handed to each feature.
import type { AuditLog } from './auth/audit'
import type { Authenticator } from './auth/authenticator'
import type { RateLimiter } from './auth/limits'
import type { TrustedProxies } from './auth/client-address'
import type { PublicTokens } from './auth/public-tokens'
import type { CredentialWatch } from './auth/revocation'
import type { Config } from './config'
import type { Database, Sql } from './db/client'
import type { ProcessHub } from './processes/hub-rules'
import type { CreateBatcher } from './processes/create-batcher'
import type { LiveView } from './processes/live'
import type { Logger } from './ops/log'
import type { Metrics } from './ops/metrics'
import type { ProcessReader } from './processes/reader'
import type { QueuePolicy } from './workers/queue'

export interface Services {
  config: Config
  db: Database
  sql: Sql
  hub: ProcessHub
  auth: Authenticator
  audit: AuditLog
  log: Logger
  metrics: Metrics
  /** This instance's live states (the leases its worker gateway holds): reads show the newest. */
  live: LiveView
  /** Attempts, backoff, caps and fair turns of the queue (src/workers/queue.ts). */
  queue: QueuePolicy
  /** Single creates, group-committed (src/processes/create-batcher.ts). */
  creates: CreateBatcher
  /** Batched reads of one process by id (GET /processes/{id}, the stream snapshot). */
  reader: ProcessReader
  /** Open streams and worker sockets by credential: closed when it is revoked or expires. */
  credentials: CredentialWatch
  /** Public (end-user) tokens: their look-ups and their open streams (src/auth/public-tokens.ts). */
  publicTokens: PublicTokens
  /**
   * Request rates: per API token (its sessions included; a public token has its own) and per workspace;
   * failed authentications per client address, and sign-ins per API token.
   */
  limits: { token: RateLimiter; workspace: RateLimiter; failures: RateLimiter; signIn: RateLimiter }
  /** TRUSTED_PROXIES: whose X-Forwarded-For / X-Forwarded-Proto are believed (src/auth/client-address.ts). */
  proxies: TrustedProxies
  /** Set while shutting down: streams end, new ones are refused. */
  draining: { value: boolean }
}
