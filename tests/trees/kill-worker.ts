// A worker process for tests/trees/kill.test.ts: runs tree parents (return at once; again for a finalize) and
// children (one progress frame, then complete) at concurrency 50 until it is killed.
import WebSocket from 'ws'
import { connectWorker, type WebSocketConstructor } from '@processes/client/worker'

const [url, token] = [process.env.SERVER_URL!, process.env.WORKER_TOKEN!]
connectWorker(url, token, {
  types: ['kill_parent', 'kill_child'],
  concurrency: 50,
  workerId: process.env.WORKER_ID,
  WebSocket: WebSocket as unknown as WebSocketConstructor,
  async handler(process, ctx) {
    if (process.type === 'kill_parent') return process.attempts > 1 ? { result_summary: { finalized: true } } : undefined
    await ctx.progress(50)
    return { result_summary: { ok: true } }
  },
})
