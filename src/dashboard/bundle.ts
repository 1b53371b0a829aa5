// A Bun macro: at bundle time (`bun build --compile`) and at load time (`bun src/main.ts`, `bun test`) it
// bundles browser.ts — with @processes/client from its sources (the `bun` export condition) — for the browser,
// and its output is inlined as a string, so the executable carries the dashboard with no build step of its own.
// Bun.build cannot run inside a macro while the bundler waits on it, hence the CLI.
export function dashboardScript(): string {
  const entry = new URL('./browser.ts', import.meta.url).pathname
  const built = Bun.spawnSync([process.execPath, 'build', entry, '--target=browser', '--format=esm', '--minify', '--conditions=bun'], {
    env: { ...process.env, BUN_BE_BUN: '1' },
  })
  if (built.exitCode !== 0) throw new Error(`bundling the dashboard failed:\n${built.stderr.toString()}`)
  return built.stdout.toString()
}
