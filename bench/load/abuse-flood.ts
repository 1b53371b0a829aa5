// A load-generator process for bench abuse: one attack's hostile requests, `count` of them at `concurrency`,
// from an event loop of its own (in the bench's process, building and reading them delayed the victim's own
// round trips, which were measured there). Random paths and User-Agents come from a pool made before the
// first request. Config: JSON in BENCH_ABUSE. Prints `{"ready": true}` once its pool is made, then `{"sent": n, "ms": t}`, and exits.
import { connect } from 'node:net'

interface Config {
  attack: '413' | 'huge' | 'sessions' | 'tokens'
  base: string
  port: number
  count: number
  concurrency: number
  hostileToken: string
  hugeId: number
}

const config = JSON.parse(process.env.BENCH_ABUSE!) as Config
const HOSTILE = { 'x-forwarded-for': '203.0.113.66' }
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'
const rnd = (n: number) => {
  let out = ''
  for (let i = 0; i < n; i++) out += ALPHABET[Math.floor(Math.random() * 36)]
  return out
}
const pool = (n: number, length: number) => Array.from({ length: n }, () => rnd(length))
const paths = pool(64, 8000)
const agents = pool(64, 8000)
const pick = (from: string[]) => from[Math.floor(Math.random() * from.length)]!
const auth = { authorization: `Bearer ${config.hostileToken}`, 'content-type': 'application/json', ...HOSTILE }

const big413 = () =>
  new Promise<void>((resolve) => {
    const s = connect(config.port, '127.0.0.1')
    s.on('data', () => {
      s.destroy()
      resolve()
    })
    s.on('error', () => resolve())
    s.on('close', () => resolve())
    s.write(
      `POST /${pick(paths)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${2 << 20}\r\nX-Forwarded-For: 203.0.113.${Math.floor(Math.random() * 250)}\r\n` +
        `User-Agent: ${pick(agents).slice(0, 4000)}\r\nAuthorization: Bearer ps_${rnd(40)}\r\n\r\n`,
    )
  })

const one: Record<Config['attack'], () => Promise<unknown>> = {
  '413': big413,
  huge: async () => (await fetch(`${config.base}/processes/${config.hugeId}`, { headers: auth })).arrayBuffer(),
  sessions: async () =>
    (await fetch(`${config.base}/auth/session`, { method: 'POST', headers: auth, body: JSON.stringify({ token: config.hostileToken }) })).arrayBuffer(),
  tokens: async () =>
    (await fetch(`${config.base}/processes`, { headers: { authorization: `Bearer ps_${rnd(40)}`, 'user-agent': pick(agents), ...HOSTILE } })).arrayBuffer(),
}

process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
let sent = 0
const started = performance.now()
await Promise.all(
  Array.from({ length: config.concurrency }, async () => {
    while (sent < config.count) {
      sent++
      await one[config.attack]().catch(() => {})
    }
  }),
)
process.stdout.write(`${JSON.stringify({ sent, ms: Math.round(performance.now() - started) })}\n`)
process.exit(0)
