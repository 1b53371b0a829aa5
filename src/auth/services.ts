// What auth adds to the wiring (src/wiring.ts): credentials, their limits, the audit log.
import type { AuditLog } from './audit'
import type { Authenticator } from './authenticator'
import type { TrustedProxies } from './client-address'
import type { RateLimiter } from './limits'
import type { PublicTokens } from './public-tokens'
import type { CredentialWatch } from './revocation'

declare module '../wiring' {
  interface Services {
    auth: Authenticator
    audit: AuditLog
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
  }
}
