// What a user is told to type works after `npm ci` with only Node and npm on PATH: no bare `bun …` in the
// README, the --help texts, the banner's and the demo worker's hints or any message; those commands run
// through npm with no bun on PATH; the quick start's three demo processes end as it says; and `npm ci` has
// no install script to warn about (checked in the lock file: a fresh clone's `npm ci` needs the network and
// ~20–60 s, too slow for the suite).
import { afterAll, describe, expect, it } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { collectOutput, createTenant, killTree, listeningServer, ownEnv, ROOT, testDatabase, waitFor, workerToken } from '../support/helpers'

/** Node and npm, and nothing else: where a user's shell finds them. No global bun there. */
const NODE_ONLY_PATH = [...new Set([Bun.which('node'), Bun.which('npm')].map((bin) => bin!.slice(0, bin!.lastIndexOf('/'))))].join(':')
const nodeOnly = (env: Record<string, string | undefined> = {}) => ownEnv({ PATH: NODE_ONLY_PATH, npm_config_update_notifier: 'false', ...env })

async function run(cmd: string[], env: Record<string, string | undefined> = {}) {
  const proc = Bun.spawn(cmd, { cwd: ROOT, env: nodeOnly(env), stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { code, stdout, stderr }
}

/** A command that starts with bun (after `VAR=value` prefixes): what a user without a global bun cannot run. */
const BARE_BUN = /^(?:[A-Z_]+=\S*\s+)*bunx?\s/

function filesUnder(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
}

describe('the commands a user is told to type', () => {
  it('never start with a bare bun: README code, and every string the sources print', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const told: string[] = []
    for (const [, block] of readme.matchAll(/```(?:sh|bash)?\n([\s\S]*?)```/g)) {
      for (const line of block!.split('\n')) if (BARE_BUN.test(line.trim())) told.push(`README: ${line.trim()}`)
    }
    for (const [, span] of readme.replace(/```[\s\S]*?```/g, '').matchAll(/`([^`\n]+)`/g)) {
      if (BARE_BUN.test(span!)) told.push(`README: \`${span}\``)
    }
    // Strings in code (not comments): usage texts, the banner, hints, error messages.
    for (const file of [...filesUnder('src'), ...filesUnder('packages/client/src'), ...filesUnder('bench')]) {
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        const code = line.trim()
        if (code.startsWith('//') || code.startsWith('*') || code.startsWith('/*')) continue
        for (const [, text] of code.matchAll(/['"`]([^'"`]*)/g))
          if (/(^|[\s(`'])bunx? (run|test|src\/|bench\/|packages\/|x )/.test(text!)) told.push(`${file}: ${code}`)
      }
    }
    expect(told).toEqual([])
  })

  it('run with only node and npm on PATH: the CLI, the server, the benchmarks and the demo worker', async () => {
    expect(Bun.which('bun', { PATH: NODE_ONLY_PATH })).toBeNull()
    const [cli, server, bench, demo] = await Promise.all([
      run(['npm', 'run', '--silent', 'cli', '--', '--help']),
      run(['npm', 'start', '--silent', '--', '--help']),
      run(['npm', 'run', '--silent', 'bench']),
      run(['npm', 'run', '--silent', 'worker:demo'], { WORKER_TOKEN: '' }),
    ])
    expect(cli).toMatchObject({ code: 0, stderr: '' })
    expect(cli.stdout).toContain('list-worker-tokens')
    expect(cli.stdout).toContain('with npm: npm run cli -- <command> [options]')
    expect(server).toMatchObject({ code: 0, stderr: '' })
    expect(server.stdout).toContain('usage: processes-server')
    expect(bench).toMatchObject({ code: 0, stderr: '' })
    expect(bench.stdout).toContain('usage: npm run bench -- <name>')
    // The demo worker's own hint is a command that works with npm.
    expect(demo.code).toBe(1)
    expect(demo.stderr).toContain('WORKER_TOKEN is not set: create one with `npm run cli -- create-worker-token --workspace 1`')
  }, 60_000)
})

describe("the quick start's demo processes", async () => {
  const { db } = await testDatabase()
  // A quick backoff, so the retried one runs its second attempt within the test.
  const server = await listeningServer({ RETRY_BASE_MS: '50', RETRY_MAX_MS: '100' }, db)
  const tenant = await createTenant(db.sql)
  const demo = Bun.spawn(['npm', 'run', '--silent', 'worker:demo'], {
    cwd: ROOT,
    env: nodeOnly({ PROCESSES_URL: server.url, WORKER_TOKEN: await workerToken(db.sql) }),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const output = collectOutput(demo)
  afterAll(async () => {
    // npm → sh → bun: the demo worker itself must go too, not only npm.
    killTree(demo.pid)
    await demo.exited
  })

  it('fail, retry then complete, and wait for review, as the README says, the demo printing "will retry (2 of 3)"', async () => {
    await waitFor(
      () => output().includes('connected as'),
      30_000,
      () => `the demo worker connecting:\n${output()}`,
    )
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const quickStart = readme.slice(readme.indexOf('## 60-second quick start'), readme.indexOf('\n## ', readme.indexOf('## 60-second quick start') + 5))
    const commands = [...quickStart.matchAll(/^curl -s localhost:3000\/processes .*$/gm)].map(([line]) => line)
    expect(commands).toHaveLength(3)
    const ids: number[] = []
    for (const command of commands) {
      const created = await run(['bash', '-c', command.replace('localhost:3000', server.url.replace('http://', ''))], { TOKEN: tenant.token })
      expect(created.code).toBe(0)
      ids.push(JSON.parse(created.stdout).id)
    }
    const status = async (id: number) =>
      (await (await fetch(`${server.url}/processes/${id}`, { headers: { authorization: `Bearer ${tenant.token}` } })).json()) as any
    const [failing, retried, review] = ids as [number, number, number]
    await waitFor(
      async () =>
        (await status(failing)).status === 'failed' && (await status(retried)).status === 'completed' && (await status(review)).status === 'waiting_review',
      30_000,
      () => `the three demo processes ending:\n${output()}`,
    )
    expect(await status(failing)).toMatchObject({ error: 'Row 20: unreadable postcode', attempts: 1 })
    expect(await status(retried)).toMatchObject({ attempts: 2, max_attempts: 3 })
    expect(output()).toContain(`#${retried} attempt 1 failed: Row 20: unreadable postcode; will retry (2 of 3)`)
    expect(output()).toContain(`#${failing} failed: Row 20: unreadable postcode`)
    expect(output()).toContain(`#${review} waiting for review`)
  }, 60_000)
})

describe('npm ci', () => {
  it('has no install script left to warn about: each one in the lock file is allowed or denied in allowScripts', () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean }> }
    const withScripts = Object.entries(lock.packages)
      .filter(([path, entry]) => path !== '' && entry.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length))
    expect(withScripts.length).toBeGreaterThan(0) // bun's own: the check checks something
    const uncovered = withScripts.filter((name) => typeof manifest.allowScripts?.[name] !== 'boolean')
    expect(uncovered).toEqual([])
  })
})
