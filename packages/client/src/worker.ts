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
import type { WebSocketConstructor, WorkerHandle, WorkerOptions } from './worker-api.ts'
import { chooseTransport, withQueryToken, workerSocketUrl } from './worker-connection.ts'
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
  const workerId = options.workerId ?? `worker-${crypto.randomUUID()}`
  const transport = chooseTransport({
    passed: options.WebSocket,
    global,
    isBun: 'Bun' in globalThis,
    isNode: typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node === 'string',
  })
  // The token in a header where the class is known to send one: Bun's own WebSocket, and the `ws` package
  // (loaded here on Node, also on Node 22+, whose global WebSocket sends no headers). Anywhere else (a browser,
  // a class passed in, Node 22+ without `ws`) `?token=`, which the server may refuse (WORKER_TOKEN_IN_QUERY=off):
  // a URL is more often logged than a header.
  const header = { Authorization: `Bearer ${token}` }
  const worker =
    transport.kind === 'header'
      ? new Worker(workerSocketUrl(url, null), workerId, transport.WebSocket, options, header)
      : transport.kind === 'query'
        ? new Worker(workerSocketUrl(url, token), workerId, transport.WebSocket, options)
        : new Worker(
            workerSocketUrl(url, null),
            workerId,
            // `ws` if it loads (the header), else the global class with `?token=` added to the URL it is given.
            transport.WebSocket.then(
              (loaded) => loaded,
              (error: unknown) => {
                if (!transport.fallback) throw error
                return withQueryToken(transport.fallback, token)
              },
            ),
            options,
            header,
          )
  worker.start()
  return { workerId, close: (closeOptions) => worker.close(closeOptions), stopped: worker.stopped }
}
