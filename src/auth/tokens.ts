// Tokens are random, shown once, and stored only as their SHA-256.
import { randomBytes } from 'node:crypto'

export function newToken(kind: 'api' | 'worker'): string {
  return `${kind === 'api' ? 'ps' : 'psw'}_${randomBytes(32).toString('base64url')}`
}

export function hashToken(token: string): string {
  return new Bun.CryptoHasher('sha256').update(token).digest('hex')
}
