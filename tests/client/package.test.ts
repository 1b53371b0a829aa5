// The client as another repo gets it: `npm pack` in packages/client, the tarball installed into a project
// outside this repo, its three entry points imported from the built output under Node (no Bun), and the
// README's client examples type-checked there by tsc as a consumer's code.
import { afterAll, describe, expect, it } from 'bun:test'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from '../helpers'

const node = Bun.which('node')
const npm = Bun.which('npm')
const run = (cmd: string[], cwd: string) => {
  const result = Bun.spawnSync(cmd, { cwd, env: { ...process.env, npm_config_update_notifier: 'false' } })
  return { code: result.exitCode, out: result.stdout.toString(), err: result.stderr.toString() }
}

describe.skipIf(!node || !npm)('the @processes/client package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ps-client-consumer-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  let tarball = ''

  it('packs: dist/ with ESM and .d.ts for each entry point, and no runtime dependency', () => {
    const packed = run([npm!, 'pack', '--json', '--pack-destination', dir], join(ROOT, 'packages/client'))
    expect(packed.err).not.toContain('error TS')
    expect(packed.code).toBe(0)
    const [info] = JSON.parse(packed.out.slice(packed.out.indexOf('['))) as [{ filename: string; files: { path: string }[] }]
    tarball = join(dir, info.filename)
    const files = info.files.map((f) => f.path)
    for (const entry of ['monitor', 'worker', 'react']) expect(files).toEqual(expect.arrayContaining([`dist/${entry}.js`, `dist/${entry}.d.ts`]))
    const manifest = JSON.parse(readFileSync(join(ROOT, 'packages/client/package.json'), 'utf8'))
    expect(manifest.private).toBeUndefined()
    expect(manifest.dependencies).toBeUndefined()
    expect(manifest.peerDependenciesMeta.react.optional).toBe(true)
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
