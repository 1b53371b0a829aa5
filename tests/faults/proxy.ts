// A small TCP proxy for fault injection: listens on a free port and forwards each connection to a target
// (Postgres, Redis). `cut()` destroys every open connection and then refuses (closes the listener: the
// client sees ECONNREFUSED at once) or blackholes (accepts, then never forwards nor answers: the client
// waits for its own timeouts) new ones; `restore()` forwards again.
import { createServer, connect, type Server, type Socket } from 'node:net'

export type CutMode = 'refuse' | 'blackhole'

export class TcpProxy {
  private server: Server | null = null
  private readonly pairs = new Set<[Socket, Socket]>()
  private readonly held = new Set<Socket>()
  private mode: CutMode | null = null
  /** Connections accepted (forwarded or blackholed) since start: shows the client tried. */
  accepted = 0

  private constructor(
    readonly targetHost: string,
    readonly targetPort: number,
    public port: number,
  ) {}

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(target.host, target.port, 0)
    await proxy.listen()
    return proxy
  }

  /** `url` with its host and port replaced by this proxy's. */
  rewrite(url: string): string {
    const u = new URL(url)
    u.hostname = '127.0.0.1'
    u.port = String(this.port)
    return u.toString()
  }

  get isCut() {
    return this.mode !== null
  }

  private listen(): Promise<void> {
    const server = createServer({ pauseOnConnect: true }, (client) => this.accept(client))
    this.server = server
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      // The same port again after a refusing cut: the client's URL does not change.
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject)
        this.port = (server.address() as { port: number }).port
        resolve()
      })
    })
  }

  private accept(client: Socket) {
    this.accepted++
    client.on('error', () => {})
    if (this.mode === 'blackhole') {
      // Accepted and left paused: nothing read, nothing forwarded, nothing answered.
      this.held.add(client)
      client.on('close', () => this.held.delete(client))
      return
    }
    const upstream = connect(this.targetPort, this.targetHost)
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    const pair: [Socket, Socket] = [client, upstream]
    this.pairs.add(pair)
    const drop = () => {
      this.pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', drop)
    upstream.on('close', drop)
    upstream.once('connect', () => {
      client.pipe(upstream)
      upstream.pipe(client)
      client.resume()
    })
  }

  /** Destroys every connection; new ones are refused or blackholed until restore(). */
  async cut(mode: CutMode = 'blackhole') {
    if (this.mode) throw new Error('proxy already cut')
    this.mode = mode
    for (const [client, upstream] of this.pairs) {
      client.destroy()
      upstream.destroy()
    }
    this.pairs.clear()
    if (mode === 'refuse') await this.closeListener()
  }

  /** Forwards again. Blackholed connections are reset, as a peer that came back would: clients reconnect. */
  async restore() {
    const mode = this.mode
    if (!mode) return
    this.mode = null
    for (const socket of this.held) socket.destroy()
    this.held.clear()
    if (mode === 'refuse') await this.listen()
  }

  private closeListener(): Promise<void> {
    const server = this.server
    this.server = null
    return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()))
  }

  async close() {
    this.mode = null
    for (const [client, upstream] of this.pairs) {
      client.destroy()
      upstream.destroy()
    }
    for (const socket of this.held) socket.destroy()
    this.pairs.clear()
    this.held.clear()
    await this.closeListener()
  }
}
