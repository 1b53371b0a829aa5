// Who a request comes from, for per-address throttling and the audit row. The socket's peer, unless that peer
// is a proxy listed in TRUSTED_PROXIES: then the right-most X-Forwarded-For entry that is not itself a trusted
// proxy (the left part of the header is whatever the client wrote, and is never believed). Without
// TRUSTED_PROXIES, X-Forwarded-For and X-Forwarded-Proto from anyone are ignored: a client cannot pick the
// address it is throttled under, nor claim https for the session cookie.

/** TRUSTED_PROXIES parsed: exact addresses (v4 or v6) and IPv4 CIDR ranges. */
export interface TrustedProxies {
  has(address: string): boolean
  readonly empty: boolean
}

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

function v4Number(address: string): number | null {
  const m = V4.exec(address)
  if (!m) return null
  const parts = m.slice(1).map(Number)
  if (parts.some((p) => p > 255)) return null
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) is `10.0.0.1`. */
const plain = (address: string) => (address.startsWith('::ffff:') && V4.test(address.slice(7)) ? address.slice(7) : address.toLowerCase())

/** Parses TRUSTED_PROXIES (comma-separated addresses and IPv4 CIDRs); throws on an entry it cannot read. */
export function parseTrustedProxies(text: string): TrustedProxies {
  const exact = new Set<string>()
  const ranges: Array<{ base: number; mask: number }> = []
  for (const raw of text.split(',')) {
    const entry = raw.trim()
    if (!entry) continue
    const slash = entry.indexOf('/')
    if (slash === -1) {
      exact.add(plain(entry))
      continue
    }
    const base = v4Number(entry.slice(0, slash))
    const bits = Number(entry.slice(slash + 1))
    if (base === null || !Number.isInteger(bits) || bits < 0 || bits > 32)
      throw new Error(`TRUSTED_PROXIES: cannot read ${JSON.stringify(entry)} (expected an address or an IPv4 CIDR)`)
    const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0
    ranges.push({ base: (base & mask) >>> 0, mask })
  }
  return {
    empty: exact.size === 0 && ranges.length === 0,
    has(address) {
      const a = plain(address)
      if (exact.has(a)) return true
      if (ranges.length === 0) return false
      const n = v4Number(a)
      return n !== null && ranges.some((r) => (n & r.mask) >>> 0 === r.base)
    },
  }
}

/** The client's address and whether a trusted proxy stands between (whose X-Forwarded-* headers may be read). */
export function clientAddress(request: Request, peer: string | null, trusted: TrustedProxies): { address: string | null; viaTrustedProxy: boolean } {
  if (peer === null || trusted.empty || !trusted.has(peer)) return { address: peer, viaTrustedProxy: false }
  const forwarded = request.headers.get('x-forwarded-for')
  if (!forwarded) return { address: peer, viaTrustedProxy: true }
  const hops = forwarded.split(',')
  // Right to left: the first hop a trusted proxy did not add itself is the client, as far as can be told.
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!.trim().slice(0, 64)
    if (hop && !trusted.has(hop)) return { address: hop, viaTrustedProxy: true }
  }
  return { address: hops[0]!.trim().slice(0, 64) || peer, viaTrustedProxy: true }
}
