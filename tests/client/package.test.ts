// The client as another repo gets it: `npm pack` in packages/client, the tarball installed into a project
// outside this repo, its three entry points imported and required from the built output under Node (no Bun),
// a worker connecting under Node without a global WebSocket (the SDK loads `ws` itself, or says to install it),
// and the README's client examples type-checked there by tsc as a consumer's code.
import { afterAll, describe, expect, it } from 'bun:test'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createTenant, listeningServer, ROOT, restAs, testDatabase, workerToken } from '../support/helpers'

const node = Bun.which('node')
const npm = Bun.which('npm')
const run = (cmd: string[], cwd: string) => {
  const result = Bun.spawnSync(cmd, { cwd, env: { ...process.env, npm_config_update_notifier: 'false' } })
  return { code: result.exitCode, out: result.stdout.toString(), err: result.stderr.toString() }
}

/** As `run`, without blocking this process: the server the child talks to runs here. */
const runAsync = async (cmd: string[], cwd: string) => {
  const proc = Bun.spawn(cmd, { cwd, env: { ...process.env, npm_config_update_notifier: 'false' }, stdout: 'pipe', stderr: 'pipe' })
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000)
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  clearTimeout(timer)
  return { code, out, err }
}

describe.skipIf(!node || !npm)('the @processes/client package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ps-client-consumer-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  let tarball = ''

  it('packs: dist/ with ESM, CommonJS and .d.ts for each entry point, and no runtime dependency', () => {
    const packed = run([npm!, 'pack', '--json', '--pack-destination', dir], join(ROOT, 'packages/client'))
    expect(packed.err).not.toContain('error TS')
    expect(packed.code).toBe(0)
    const [info] = JSON.parse(packed.out.slice(packed.out.indexOf('['))) as [{ filename: string; files: { path: string }[] }]
    tarball = join(dir, info.filename)
    const files = info.files.map((f) => f.path)
    for (const entry of ['monitor', 'worker', 'react']) {
      expect(files).toEqual(expect.arrayContaining([`dist/${entry}.js`, `dist/${entry}.d.ts`, `dist/cjs/${entry}.js`, `dist/cjs/${entry}.d.ts`]))
    }
    expect(files).toContain('dist/cjs/package.json')
    const manifest = JSON.parse(readFileSync(join(ROOT, 'packages/client/package.json'), 'utf8'))
    expect(manifest.private).toBeUndefined()
    expect(manifest.dependencies).toBeUndefined()
    expect(manifest.peerDependenciesMeta.react.optional).toBe(true)
    expect(manifest.peerDependenciesMeta.ws.optional).toBe(true)
  }, 120_000)

  it('installs into a project outside the repo and imports ., ./worker and ./react under Node', () => {
    const app = join(dir, 'app')
    mkdirSync(app)
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    const installed = run([npm!, 'install', '--offline', '--no-audit', '--no-fund', '--no-save', tarball], app)
    expect(installed.code).toBe(0)
    // The consumer's own React (the optional peer), as a React app would have it installed (after npm
    // install, which would prune what it did not install itself).
    mkdirSync(join(app, 'node_modules', '@types'), { recursive: true })
    symlinkSync(join(ROOT, 'node_modules/react'), join(app, 'node_modules/react'))
    symlinkSync(join(ROOT, 'node_modules/@types/react'), join(app, 'node_modules/@types/react'))

    const script = `
      const client = await import('@processes/client')
      const worker = await import('@processes/client/worker')
      const react = await import('@processes/client/react')
      console.log(JSON.stringify({
        monitor: [typeof client.monitorProcess, typeof client.monitorWorkspace, client.PROCESS_STATUSES.length],
        worker: [typeof worker.connectWorker, typeof worker.WorkerAuthError],
        react: [typeof react.useProcessMonitor],
        resolved: import.meta.resolve('@processes/client'),
      }))`
    const imported = run([node!, '--input-type=module', '-e', script], app)
    expect(imported.err).toBe('')
    const result = JSON.parse(imported.out)
    expect(result).toMatchObject({
      monitor: ['function', 'function', 6],
      worker: ['function', 'function'],
      react: ['function'],
    })
    expect(result.resolved).toContain('node_modules/@processes/client/dist/monitor.js')
  }, 120_000)

  it('requires ., ./worker and ./react under Node (the CommonJS build)', () => {
    const app = join(dir, 'app')
    const script = `
      const client = require('@processes/client')
      const worker = require('@processes/client/worker')
      const react = require('@processes/client/react')
      console.log(JSON.stringify({
        monitor: [typeof client.monitorProcess, typeof client.monitorWorkspace, client.PROCESS_STATUSES.length],
        worker: [typeof worker.connectWorker, typeof worker.WorkerAuthError],
        react: [typeof react.useProcessMonitor],
        resolved: require.resolve('@processes/client'),
      }))`
    const required = run([node!, '--input-type=commonjs', '-e', script], app)
    expect(required.err).toBe('')
    const result = JSON.parse(required.out)
    expect(result).toMatchObject({ monitor: ['function', 'function', 6], worker: ['function', 'function'], react: ['function'] })
    expect(result.resolved).toContain('node_modules/@processes/client/dist/cjs/monitor.js')
  }, 60_000)

  describe('a worker under Node without a global WebSocket', async () => {
    const { db } = await testDatabase()
    const server = await listeningServer({}, db)
    const tenant = await createTenant(db.sql)
    const rest = restAs(server.url, tenant.token)
    const wtoken = await workerToken(db.sql)
    /** Runs a worker in Node (ESM or CommonJS) that takes one `node_consumer` process, then prints what happened. */
    const workerScript = (format: 'esm' | 'cjs') => `
      ${format === 'esm' ? "import { connectWorker } from '@processes/client/worker'" : "const { connectWorker } = require('@processes/client/worker')"}
      delete globalThis.WebSocket // Node 22 has one; the SDK must do without it
      const errors = []
      const worker = connectWorker(${JSON.stringify(server.url)}, ${JSON.stringify(wtoken)}, {
        types: ['node_consumer'],
        handler: async (job, ctx) => {
          await ctx.progress(50, 'half way in ' + process.version)
          return { result_summary: { format: ${JSON.stringify(format)} } }
        },
        onError: (error) => errors.push(error.message),
        onEvent: (event) => { if (event.type === 'completed') void worker.close() },
      })
      worker.stopped.then(
        (outcome) => console.log(JSON.stringify({ outcome, errors })),
        (error) => console.log(JSON.stringify({ rejected: error.name + ': ' + error.message, errors })),
      )`
    const runWorker = (format: 'esm' | 'cjs') =>
      runAsync([node!, `--input-type=${format === 'esm' ? 'module' : 'commonjs'}`, '-e', workerScript(format)], join(dir, 'app'))
    // Node 22's global WebSocket, as far as the SDK can tell: a class that takes no headers (this Node is older,
    // so one stands in: it records how it was asked, then fails to connect, as a refused upgrade shows: 1006).
    const strict = await listeningServer({ WORKER_TOKEN_IN_QUERY: 'off' }, db)
    const node22Script = (target: string, type: string) => `
      import { connectWorker } from '@processes/client/worker'
      const asked = []
      globalThis.WebSocket = class HeaderlessWebSocket extends EventTarget {
        constructor(url, options) {
          super()
          asked.push({ query: new URL(url).searchParams.has('token'), headers: options !== undefined })
          this.readyState = 0
          setTimeout(() => {
            this.readyState = 3
            this.dispatchEvent(Object.assign(new Event('close'), { code: 1006, reason: '', wasClean: false }))
          }, 10)
        }
        send() {}
        close() {}
      }
      const errors = []
      const worker = connectWorker(${JSON.stringify(target)}, ${JSON.stringify(wtoken)}, {
        types: [${JSON.stringify(type)}],
        handler: async () => ({ result_summary: { via: 'node22' } }),
        onError: (error) => { errors.push(error.name); void worker.close() },
        onEvent: (event) => { if (event.type === 'completed') void worker.close() },
      })
      const timer = setTimeout(() => worker.close(), 8000)
      worker.stopped.then(
        (outcome) => { clearTimeout(timer); console.log(JSON.stringify({ outcome, asked, errors: [...new Set(errors)] })) },
        (error) => { clearTimeout(timer); console.log(JSON.stringify({ rejected: error.name, asked, errors: [...new Set(errors)] })) },
      )`
    const runNode22 = (target: string, type: string) => runAsync([node!, '--input-type=module', '-e', node22Script(target, type)], join(dir, 'app'))

    it('on a Node 22 global WebSocket without ws, falls back to ?token=, which WORKER_TOKEN_IN_QUERY=off refuses', async () => {
      const ran = await runNode22(strict.url, 'node22_query')
      expect({ err: ran.err }).toEqual({ err: '' })
      const result = JSON.parse(ran.out)
      // The global class was used, with the token in the URL and no headers offered to it.
      expect(result.asked.length).toBeGreaterThanOrEqual(1)
      expect(result.asked[0]).toEqual({ query: true, headers: false })
      expect(result.outcome).toMatchObject({ reason: 'unauthenticated', error: { status: 401 } })
    }, 60_000)

    it('says npm install ws when ws is not installed either, for ESM and CommonJS', async () => {
      for (const format of ['esm', 'cjs'] as const) {
        const ran = await runWorker(format)
        expect({ format, err: ran.err }).toEqual({ format, err: '' })
        const message =
          'no WebSocket in this runtime (Node before 22 has no global one): npm install ws (the SDK loads it by itself), or pass options.WebSocket'
        expect(JSON.parse(ran.out)).toEqual({ rejected: `TypeError: ${message}`, errors: [message] })
      }
    }, 60_000)

    it('loads ws by itself and runs a process to completed, for ESM and CommonJS', async () => {
      // The consumer installs the optional peer, as the message says.
      symlinkSync(join(ROOT, 'node_modules/ws'), join(dir, 'app/node_modules/ws'))
      for (const format of ['esm', 'cjs'] as const) {
        const created = await rest.create('node_consumer')
        const ran = await runWorker(format)
        expect({ format, err: ran.err }).toEqual({ format, err: '' })
        expect(JSON.parse(ran.out)).toEqual({ outcome: { reason: 'closed' }, errors: [] })
        expect(await rest.get(created.id)).toMatchObject({ status: 'completed', result_summary: { format } })
        const events = (await rest.events(created.id)).map((e: { status: string }) => e.status)
        expect(events).toEqual(['pending', 'running', 'completed'])
      }
    }, 60_000)

    it('on a Node 22 global WebSocket, uses ws when it is installed: the token in a header, accepted with WORKER_TOKEN_IN_QUERY=off', async () => {
      const created = await restAs(strict.url, tenant.token).create('node22_header')
      const ran = await runNode22(strict.url, 'node22_header')
      expect(ran.err).toBe('')
      const result = JSON.parse(ran.out)
      // The global class was never asked for: ws carried the header.
      expect(result).toEqual({ outcome: { reason: 'closed' }, asked: [], errors: [] })
      expect(await rest.get(created.id)).toMatchObject({ status: 'completed', result_summary: { via: 'node22' } })
    }, 60_000)
  })

  it("type-checks the README's client examples with tsc, as a consumer's code", () => {
    const app = join(dir, 'app')
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const section = readme.slice(readme.indexOf('## Client SDK'), readme.indexOf('\n## ', readme.indexOf('## Client SDK') + 5))
    const blocks = [...section.matchAll(/```(tsx?)\n([\s\S]*?)```/g)]
    expect(blocks.length).toBeGreaterThanOrEqual(3)
    // What the examples leave to the application.
    const prelude = [
      'declare const token: string',
      'declare function render(progress: number): void',
      'declare function showBadge(state: string): void',
      'declare function importRow(row: number): Promise<void>',
      'declare const process: { env: Record<string, string | undefined> }',
      '',
    ].join('\n')
    const files = blocks.map(([, lang, code], i) => {
      const name = `example${i}.${lang}`
      writeFileSync(join(app, name), `${prelude + code}\nexport {}\n`)
      return name
    })
    // A CommonJS consumer's types come from dist/cjs (the `require` condition).
    writeFileSync(
      join(app, 'consumer.cts'),
      [
        "import client = require('@processes/client')",
        "import worker = require('@processes/client/worker')",
        "import react = require('@processes/client/react')",
        'const follow: typeof client.monitorProcess = client.monitorProcess',
        "const stopped: Promise<{ reason: 'closed' | 'unauthenticated' }> = worker.connectWorker('http://x', 't', { handler: () => {} }).stopped",
        'export = { follow, stopped, hook: react.useProcessMonitor }',
        '',
      ].join('\n'),
    )
    files.push('consumer.cts')
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          lib: ['ES2022', 'DOM'],
          jsx: 'react-jsx',
          strict: true,
          noEmit: true,
          types: [],
        },
        files,
      }),
    )
    const checked = run([node!, join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', app], app)
    expect(checked.out + checked.err).toBe('')
    expect(checked.code).toBe(0)
  }, 120_000)
})
