// The console's one build: src/main.ts bundled for the browser (with @processes/client from its sources, the
// `bun` export condition), next to index.html and style.css. The server imports dashboardAssets() as a Bun
// macro (src/dashboard/routes.ts), so it runs once when the server's code is loaded or compiled, and its result
// is inlined as strings: the executable (`bun build --compile`) carries the console with no file beside it.
// `bun build.ts DIR` writes the three files to DIR for a look (or another web server).
// Bun.build cannot run inside a macro while the bundler waits on it, hence the CLI.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface DashboardAssets {
  html: string
  css: string
  script: string
}

const source = (name: string) => new URL(`./src/${name}`, import.meta.url).pathname

export function dashboardAssets(): DashboardAssets {
  const built = Bun.spawnSync([process.execPath, 'build', source('main.ts'), '--target=browser', '--format=esm', '--minify', '--conditions=bun'], {
    env: { ...process.env, BUN_BE_BUN: '1' },
  })
  if (built.exitCode !== 0) throw new Error(`bundling the dashboard failed:\n${built.stderr.toString()}`)
  return { html: readFileSync(source('index.html'), 'utf8'), css: readFileSync(source('style.css'), 'utf8'), script: built.stdout.toString() }
}

if (import.meta.main) {
  const dir = process.argv[2] ?? 'dist'
  const assets = dashboardAssets()
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'index.html'), assets.html)
  writeFileSync(join(dir, 'style.css'), assets.css)
  writeFileSync(join(dir, 'app.js'), assets.script)
  console.log(`wrote ${dir}/index.html, style.css, app.js (${assets.script.length} bytes of script)`)
}
