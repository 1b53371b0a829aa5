/**
 * Worker SDK: claim processes over the worker WebSocket (README: Worker protocol), run a
 * handler for each, report progress, and complete or fail them — surviving
 * reconnects, server restarts (close code 1012) and cancellation.
 *
 * ```ts
 * const worker = connectWorker('http://localhost:3000', token, {
 *   types: ['csv_import'],
 *   async handler(process, ctx) {
 *     await ctx.progress(50, 'Halfway')
 *     if (ctx.signal.aborted) return
 *     return { result_summary: { rows_imported: 200 } }   // or { review: true, result_summary }
 *   },
 * })
 * await worker.close()
 * ```
 *
 * Delivery rules: `complete`/`fail` are kept until acked and re-sent after a
 * reconnect (the server acks a repeated terminal op without applying it twice);
 * `progress`, `heartbeat` and `log` are best effort — dropped if the connection
 * is down, since the next progress supersedes the last and a re-sent log could
 * be applied twice.
 *
 * No runtime dependency: the global `WebSocket` (browsers, Bun, Node 22+), an
 * injected one (`options.WebSocket`), or else the `ws` package (an optional peer
 * dependency), which the SDK loads by itself.
 */
import { loadWebSocket } from './node-websocket.ts'
import type { WebSocketConstructor, WorkerHandle, WorkerOptions } from './worker-api.ts'
import { workerSocketUrl } from './worker-connection.ts'
import { Worker } from './worker-runner.ts'

export type { Process } from './shapes.ts'
export {
  type ChildInfo,
  type ChildSpec,
  type CloseOptions,
  type JobContext,
  type JobHandler,
  type JobResult,
  JobStoppedError,
  type WebSocketConstructor,
  type WebSocketLike,
  WorkerAuthError,
  type WorkerEvent,
  type WorkerHandle,
  type WorkerOptions,
  WorkerProtocolError,
} from './worker-api.ts'

/** `url`: the server's base URL (http/https/ws/wss) or the full `…/workers/ws` URL. */
export function connectWorker(url: string, token: string, options: WorkerOptions): WorkerHandle {
  // Without one (Node before 22) the `ws` package is loaded: the worker connects once it is. Not installed
  // either: onError and a rejected `stopped` say `npm install ws`.
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  const WebSocketImpl = options.WebSocket ?? global ?? loadWebSocket<WebSocketConstructor>()
  const workerId = options.workerId ?? `worker-${crypto.randomUUID()}`
  // The token in a header where the class is known to send one: Bun's own WebSocket, and the `ws` package
  // loaded here. Anywhere else (a browser, a class passed in) `?token=`, which the server may refuse
  // (WORKER_TOKEN_IN_QUERY=off): a URL is more often logged than a header.
  const inHeader = options.WebSocket === undefined && ((global !== undefined && 'Bun' in globalThis) || WebSocketImpl instanceof Promise)
  const worker = inHeader
    ? new Worker(workerSocketUrl(url, null), workerId, WebSocketImpl, options, { Authorization: `Bearer ${token}` })
    : new Worker(workerSocketUrl(url, token), workerId, WebSocketImpl, options)
  worker.start()
  return { workerId, close: (closeOptions) => worker.close(closeOptions), stopped: worker.stopped }
}
