// The embedded database's local admin channel. PGlite belongs to one process, so while a server holds DATA_DIR
// the CLI cannot open it; the server listens on a unix socket inside DATA_DIR instead (mode 0600: its owner
// only, like the database files beside it), runs the CLI's commands there and answers with the same JSON.
// This is how tokens lost after the first start are replaced without stopping the server.
import { chmodSync, rmSync } from 'node:fs'
import { join } from 'node:path'

export const adminSocketPath = (dataDir: string) => join(dataDir, 'admin.sock')

/** A refusal by the server (a bad id, a missing user): reported as it is, like the CLI's own errors. */
export class AdminChannelError extends Error {}

export interface AdminChannel {
  path: string
  close(): void
}

/**
 * Listens on DATA_DIR/admin.sock. Only `POST /` with `{"argv": [command, ...flags]}` is answered: 200 with the
 * command's JSON, or 400 `{"error": message}`. `run` parses the argv exactly as the CLI does, so nothing but the
 * CLI's own commands can be run.
 */
export function openAdminChannel(dataDir: string, run: (argv: string[]) => Promise<object>, describe: (error: unknown) => string): AdminChannel {
  const path = adminSocketPath(dataDir)
  // The caller holds DATA_DIR's lock: a socket file left there is a dead server's.
  rmSync(path, { force: true })
  const umask = process.umask(0o177)
  let server: ReturnType<typeof Bun.serve>
  try {
    server = Bun.serve({
      unix: path,
      async fetch(request) {
        if (request.method !== 'POST' || new URL(request.url).pathname !== '/') return Response.json({ error: 'not found' }, { status: 404 })
        let argv: unknown
        try {
          argv = ((await request.json()) as { argv?: unknown }).argv
        } catch {
          return Response.json({ error: 'expected {"argv": [...]}' }, { status: 400 })
        }
        if (!Array.isArray(argv) || !argv.every((arg) => typeof arg === 'string')) return Response.json({ error: 'expected {"argv": [...]}' }, { status: 400 })
        try {
          return Response.json(await run(argv))
        } catch (error) {
          return Response.json({ error: describe(error) }, { status: 400 })
        }
      },
    })
  } finally {
    process.umask(umask)
  }
  chmodSync(path, 0o600)
  return {
    path,
    close() {
      server.stop(true)
      rmSync(path, { force: true })
    },
  }
}

/** Sends one command to the server holding `dataDir`; rejects with AdminChannelError when it refuses it. */
export async function sendToAdminChannel(dataDir: string, argv: string[]): Promise<object> {
  const response = await fetch('http://localhost/', {
    unix: adminSocketPath(dataDir),
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ argv }),
    signal: AbortSignal.timeout(30_000),
  } as RequestInit)
  const body = (await response.json()) as { error?: string }
  if (!response.ok) throw new AdminChannelError(body.error ?? `the server answered ${response.status}`)
  return body
}
