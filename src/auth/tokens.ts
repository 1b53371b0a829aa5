// Tokens are random, shown once, and stored only as their SHA-256.
import { randomBytes } from 'node:crypto'

/** `ps_` API token, `psw_` worker token, `pss_` browser session secret (the ps_session cookie). */
export function newToken(kind: 'api' | 'worker' | 'session'): string {
  return `${kind === 'api' ? 'ps' : kind === 'worker' ? 'psw' : 'pss'}_${randomBytes(32).toString('base64url')}`
}

export function hashToken(token: string): string {
  return new Bun.CryptoHasher('sha256').update(token).digest('hex')
}
