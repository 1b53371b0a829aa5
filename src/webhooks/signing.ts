// Standard Webhooks signatures (standardwebhooks.com): a `whsec_<base64>` secret, and on every delivery
// `Webhook-Id`, `Webhook-Timestamp` (seconds) and `Webhook-Signature: v1,<base64 HMAC-SHA256 of
// "<id>.<timestamp>.<body>">`, keyed with the secret's decoded bytes. Any Standard Webhooks verifier checks
// them (tests/webhooks/webhooks.test.ts uses the `standardwebhooks` package).
import { createHmac, randomBytes } from 'node:crypto'

const PREFIX = 'whsec_'

/** A new secret: 24 random bytes (192 bits), as Standard Webhooks writes them. */
export function newSecret(): string {
  return PREFIX + randomBytes(24).toString('base64')
}

export function sign(secret: string, id: string, timestampS: number, body: string): string {
  const key = Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, 'base64')
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampS}.${body}`).digest('base64')}`
}

/** The headers of one delivery attempt (the id is the delivery's: the same on every attempt and redelivery). */
export function signedHeaders(secret: string, id: string, body: string, nowMs = Date.now()): Record<string, string> {
  const timestamp = Math.floor(nowMs / 1000)
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': sign(secret, id, timestamp, body),
    'user-agent': 'processes-webhooks/1',
  }
}
