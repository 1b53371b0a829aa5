// A worker for tests, on the `ws` client: request/reply by `ref`, plus a queue of server pushes (cancel).
import WebSocket from 'ws'
import { waitFor } from './wait'

export type Frame = Record<string, any>

export class TestWorker {
  private nextRef = 1
  private readonly waiting = new Map<string, (frame: Frame) => void>()
  readonly pushes: Frame[] = []
  readonly unmatched: Frame[] = []
  closeCode: number | null = null
  private pushWaiters: Array<() => void> = []

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Frame
      const ref = frame.ref === undefined ? undefined : String(frame.ref)
      const waiter = ref === undefined ? undefined : this.waiting.get(ref)
      if (waiter) {
        this.waiting.delete(ref!)
        waiter(frame)
      } else if (frame.op === 'cancel') {
        this.pushes.push(frame)
        for (const w of this.pushWaiters.splice(0)) w()
      } else {
        this.unmatched.push(frame)
        for (const w of this.pushWaiters.splice(0)) w()
      }
    })
    ws.on('close', (code) => {
      this.closeCode = code
      for (const w of this.pushWaiters.splice(0)) w()
    })
  }

  static connect(baseUrl: string, token: string, o: { via?: 'header' | 'query' } = {}): Promise<TestWorker> {
    const url = `${baseUrl.replace(/^http/, 'ws')}/workers/ws${o.via === 'query' ? `?token=${encodeURIComponent(token)}` : ''}`
    const ws = new WebSocket(url, o.via === 'query' ? {} : { headers: { authorization: `Bearer ${token}` } })
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new TestWorker(ws)))
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode })))
      ws.once('error', reject)
    })
  }

  /** Sends a frame with a fresh ref and resolves with the reply that echoes it. */
  request(frame: Frame, timeoutMs = 35_000): Promise<Frame> {
    const ref = `r${this.nextRef++}`
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(ref)
        reject(new Error(`no reply to ${JSON.stringify(frame)}`))
      }, timeoutMs)
      this.waiting.set(ref, (reply) => {
        clearTimeout(timer)
        resolve(reply)
      })
      this.ws.send(JSON.stringify({ ...frame, ref }))
    })
  }

  /** Sends raw text and resolves with the next frame that is not a reply to a pending request. */
  async raw(text: string | Buffer): Promise<Frame> {
    const before = this.unmatched.length
    this.ws.send(text)
    await this.until(() => this.unmatched.length > before)
    return this.unmatched[before]!
  }

  /** Waits for `check`, looking again as each frame (or the close) arrives. */
  until(check: () => boolean, timeoutMs = 10_000) {
    return waitFor(check, timeoutMs, 'a worker frame', { pollMs: 50, wake: (resume) => this.pushWaiters.push(resume) })
  }

  async nextCancel(processId: number, timeoutMs = 10_000): Promise<Frame> {
    await this.until(() => this.pushes.some((f) => f.process_id === processId), timeoutMs)
    return this.pushes.find((f) => f.process_id === processId)!
  }

  close() {
    this.ws.close()
  }
}
