// A worker process for tests/trees/kill.test.ts: runs tree parents (return at once) and children (a little
// progress, then complete) until it is killed.
import WebSocket from 'ws'
import { connectWorker, type WebSocketConstructor } from '@processes/client/worker'

const [url, token] = [process.env.SERVER_URL!, process.env.WORKER_TOKEN!]
connectWorker(url, token, {
  types: ['kill_parent', 'kill_child'],
  concurrency: 20,
  workerId: process.env.WORKER_ID,
  WebSocket: WebSocket as unknown as WebSocketConstructor,
  async handler(process, ctx) {
    if (process.type === 'kill_parent') return
    await ctx.progress(50)
    await Bun.sleep(10)
    return { result_summary: { ok: true } }
  },
})
