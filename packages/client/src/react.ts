/**
 * `useProcessMonitor`: a React hook over `monitorProcess`. React is an optional
 * peer dependency, imported only here: nothing in the server imports this file.
 *
 * ```tsx
 * const { process, done, error } = useProcessMonitor(id)
 * return <progress value={process?.progress ?? 0} max={100} />
 * ```
 */
import { useEffect, useState } from 'react'
import { monitorProcess, type ConnectionState, type EventSourceConstructor, type FetchLike, type MonitorError, type Process } from './monitor.ts'
import type { ChildCounts, OutputChunk } from './shapes.ts'

export type { ConnectionState, MonitorError, OutputChunk, Process } from './monitor.ts'

export interface UseProcessMonitorOptions {
  /** The server's origin; default `''`, the page's own (the `ps_session` cookie then authenticates). */
  baseUrl?: string
  /** Bearer token, for pages that do not use the session cookie. */
  token?: string
  /** Default 2000. */
  pollIntervalMs?: number
  /** Keep these stable (module-level) values: a new one restarts the monitor. */
  fetch?: FetchLike
  EventSource?: EventSourceConstructor
  /** Cookie auth from another origin (see monitorProcess); the server lists this page's origin in CORS_ORIGINS. */
  withCredentials?: boolean
  /** Follow the process's live output too (`output` in the state). Default true. */
  output?: boolean
}

export interface ProcessMonitorState {
  /** The newest version seen; null until the first arrives. */
  process: Process | null
  /** The process reached completed, failed, cancelled or waiting_review; monitoring has stopped. */
  done: boolean
  /**
   * 401, 403, 404, no way to read the server, or `code: 'cors'` (this page's origin is not in the server's
   * CORS_ORIGINS); monitoring has stopped and `connection` is `closed`.
   */
  error: MonitorError | null
  /** The monitor's connection (`connecting`, `open`, `reconnecting`, `polling`, `closed`); null while idle. */
  connection: ConnectionState | null
  /** The process's live output so far, chunk by chunk in seq order (empty with `output: false`). */
  output: OutputChunk['chunk'][]
  /** A parent's children by status, from the newest version; null for a process without children. */
  children: ChildCounts | null
}

const IDLE: ProcessMonitorState = { process: null, done: false, error: null, connection: null, output: [], children: null }

/** Follow a process until it is done. Pass `null` (or `undefined`) to follow nothing. */
export function useProcessMonitor(id: number | string | null | undefined, options: UseProcessMonitorOptions = {}): ProcessMonitorState {
  const { baseUrl = '', token, pollIntervalMs, fetch, EventSource, withCredentials, output: withOutput = true } = options
  // State is tagged with the id it belongs to, so a new id shows IDLE at once
  // instead of the previous process for one render.
  const [state, setState] = useState<{ id: typeof id } & ProcessMonitorState>({ id, ...IDLE })

  useEffect(() => {
    // Drop what a previous subscription left (bails out when already idle).
    setState((previous) => (isIdleFor(previous, id) ? previous : { id, ...IDLE }))
    if (id === null || id === undefined) return
    const merge = (patch: Partial<ProcessMonitorState>) => setState((previous) => ({ ...(previous.id === id ? previous : { id, ...IDLE }), ...patch }))
    const monitor = monitorProcess(baseUrl, id, {
      token,
      pollIntervalMs,
      fetch,
      EventSource,
      withCredentials,
      onUpdate: (process) => merge({ process }),
      onDone: (process) => merge({ process, done: true }),
      onError: (error) => merge({ error }),
      onConnectionState: (connection) => merge({ connection }),
      ...(withOutput
        ? {
            onOutput: (chunk: OutputChunk) =>
              setState((previous) => {
                const base = previous.id === id ? previous : { id, ...IDLE }
                return { ...base, output: [...base.output, chunk.chunk] }
              }),
          }
        : {}),
    })
    return () => monitor.stop()
  }, [id, baseUrl, token, pollIntervalMs, fetch, EventSource, withCredentials, withOutput])

  if (state.id !== id) return IDLE
  return {
    process: state.process,
    done: state.done,
    error: state.error,
    connection: state.connection,
    output: state.output,
    children: state.process?.children ?? null,
  }
}

function isIdleFor(state: { id: unknown } & ProcessMonitorState, id: unknown): boolean {
  return state.id === id && state.process === null && !state.done && state.error === null && state.connection === null && state.output.length === 0
}
