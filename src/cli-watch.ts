// `cli watch ID`: follow one process in the terminal, over the same SSE stream (and polling fallback) the
// dashboard uses, until it is done. A progress bar (cli-progress) on stderr when it is a terminal, else a
// line per change there; stdout gets one JSON object at the end, as every CLI command prints.
import { SingleBar } from 'cli-progress'
import { type MonitorError, monitorProcess, type Process } from '@processes/client'

/** 0: completed or waiting for review (the worker's part went well); 1: failed, cancelled, or the watch itself failed. */
export function exitCodeOf(status: string): number {
  return status === 'completed' || status === 'waiting_review' ? 0 : 1
}

export interface WatchOptions {
  url: string
  token: string
  id: number
  stderr?: NodeJS.WriteStream
}

export class WatchError extends Error {}

/** Resolves with the final process; rejects with WatchError (401, 403, 404) naming what the server said. */
export function watchProcess({ url, token, id, stderr = process.stderr }: WatchOptions): Promise<Process> {
  const tty = Boolean(stderr.isTTY)
  const bar = tty
    ? new SingleBar({
        stream: stderr,
        format: `#${id} [{bar}] {percentage}% | {status} | {message}`,
        barCompleteChar: '█',
        barIncompleteChar: '░',
        hideCursor: true,
        clearOnComplete: false,
      })
    : null
  let started = false
  let lastLine = ''
  const show = (p: Pick<Process, 'status' | 'progress' | 'message'>, connection?: string) => {
    const message = connection ?? p.message ?? ''
    if (bar) {
      if (!started) bar.start(100, p.progress, { status: p.status, message })
      else bar.update(p.progress, { status: p.status, message })
      started = true
      return
    }
    // Not a terminal (a CI log, a pipe): one line per change of status, tenth of progress, or message.
    const line = `#${id} ${p.status} ${p.progress}%${message ? ` ${message}` : ''}`
    const key = `${p.status} ${Math.floor(p.progress / 10)} ${message}`
    if (key !== lastLine) stderr.write(`${line}\n`)
    lastLine = key
  }
  let latest: Process | null = null
  return new Promise((resolve, reject) => {
    const monitor = monitorProcess(url, id, {
      token,
      onUpdate: (p) => {
        latest = p
        show(p)
      },
      onDone: (p) => {
        show(p)
        bar?.stop()
        resolve(p)
      },
      onError: (error: MonitorError) => {
        bar?.stop()
        reject(new WatchError(`${url}/processes/${id}: ${error.status ? `${error.status} ` : ''}${error.code}: ${error.message}`))
      },
      onConnectionState: (state, info) => {
        if ((state === 'reconnecting' && info.failures > 0) || state === 'polling') {
          show(
            latest ?? { status: 'pending', progress: 0, message: null },
            state === 'polling' ? 'polling (streaming failed)' : `reconnecting (${info.failures} failed)`,
          )
        }
      },
    })
    void monitor
  })
}
