// Where a delivery may go. A webhook URL is the customer's, but the request leaves from inside our network:
// unless WEBHOOK_ALLOW_PRIVATE is on, an address on loopback, a private or shared (CGNAT) range, link-local
// (cloud metadata at 169.254.169.254 among them), multicast, reserved or documentation ranges, or the IPv6
// equivalents (and IPv4 addresses carried inside IPv6: mapped, NAT64, 6to4) is refused. The host is resolved
// on every attempt and the request is sent to the address that was checked (not resolved again by the HTTP
// client), so a name that changes its answer between the check and the connect (DNS rebinding) gets nowhere.
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

export class RefusedTarget extends Error {}

const V4_BLOCKED: Array<[string, number]> = [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // shared address space (CGNAT); Alibaba's metadata 100.100.100.200
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local: cloud metadata services
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and 255.255.255.255
]

function v4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0)
}

function v4Blocked(ip: string): boolean {
  const n = v4ToInt(ip)
  return V4_BLOCKED.some(([base, bits]) => {
    const size = 2 ** (32 - bits)
    const start = v4ToInt(base)
    return n >= start && n < start + size
  })
}

/** An IPv6 address as 8 groups of 16 bits (:: expanded, a trailing dotted quad read as two groups). */
function v6Groups(ip: string): number[] {
  let text = ip.toLowerCase().split('%')[0]!
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (quad) {
    const n = v4ToInt(quad[1]!)
    text = `${text.slice(0, -quad[1]!.length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined]
  const h = head ? head.split(':').filter(Boolean) : []
  const t = tail ? tail.split(':').filter(Boolean) : []
  const fill = tail === undefined ? [] : new Array(8 - h.length - t.length).fill('0')
  return [...h, ...fill, ...t].map((g) => Number.parseInt(g, 16))
}

function v6Blocked(ip: string): boolean {
  const g = v6Groups(ip)
  if (g.length !== 8 || g.some((x) => !Number.isFinite(x))) return true
  const embedded = (hi: number, lo: number) => `${hi >>> 8}.${hi & 0xff}.${lo >>> 8}.${lo & 0xff}`
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0)
  if (zeros(0, 8)) return true // :: unspecified
  if (zeros(0, 7) && g[7] === 1) return true // ::1 loopback
  if (zeros(0, 5) && g[5] === 0xffff) return v4Blocked(embedded(g[6]!, g[7]!)) // ::ffff:a.b.c.d, IPv4-mapped
  if (zeros(0, 6)) return true // ::a.b.c.d, IPv4-compatible (deprecated)
  if (g[0] === 0x64 && g[1] === 0xff9b) return v4Blocked(embedded(g[6]!, g[7]!)) // 64:ff9b::/96 NAT64
  if (g[0] === 0x2002) return v4Blocked(embedded(g[1]!, g[2]!)) // 6to4
  if (g[0] === 0x2001 && g[1] === 0x0db8) return true // documentation
  if (g[0] === 0x0100 && zeros(1, 4)) return true // discard prefix 100::/64
  const first = g[0]!
  if ((first & 0xfe00) === 0xfc00) return true // fc00::/7 unique local (AWS metadata fd00:ec2::254)
  if ((first & 0xffc0) === 0xfe80) return true // fe80::/10 link-local
  if ((first & 0xffc0) === 0xfec0) return true // fec0::/10 site-local (deprecated)
  if ((first & 0xff00) === 0xff00) return true // multicast
  return false
}

/** Whether a delivery may not go to this IP address (v4 or v6). */
export function isBlockedAddress(ip: string): boolean {
  const family = isIP(ip)
  if (family === 4) return v4Blocked(ip)
  if (family === 6) return v6Blocked(ip)
  return true
}

export interface Target {
  /** The address to connect to: checked, and not resolved again. */
  address: string
  family: 4 | 6
}

/**
 * Resolves a webhook URL's host and checks every address it has (one blocked address refuses the host: which
 * one a client would use is not ours to guess). Throws RefusedTarget with the reason.
 */
export async function resolveTarget(url: URL, allowPrivate: boolean): Promise<Target> {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  const literal = isIP(host)
  const addresses = literal
    ? [{ address: host, family: literal }]
    : await lookup(host, { all: true, verbatim: true }).catch((error) => {
        throw new RefusedTarget(`cannot resolve ${host}: ${(error as { code?: string }).code ?? String(error)}`)
      })
  if (addresses.length === 0) throw new RefusedTarget(`cannot resolve ${host}: no address`)
  if (!allowPrivate) {
    const blocked = addresses.find((a) => isBlockedAddress(a.address))
    if (blocked)
      throw new RefusedTarget(`${host} resolves to ${blocked.address}, a private, loopback, link-local or reserved address (WEBHOOK_ALLOW_PRIVATE is off)`)
  }
  const first = addresses[0]!
  return { address: first.address, family: first.family === 6 ? 6 : 4 }
}
