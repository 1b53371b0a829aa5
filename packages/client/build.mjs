// Build dist/: ESM + .d.ts with tsc, then point the declarations' relative `.ts` imports at `.js` as well
// (tsc's rewriteRelativeImportExtensions rewrites the JavaScript it emits, not the .d.ts files).
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const here = new URL('.', import.meta.url).pathname
const dist = join(here, 'dist')
rmSync(dist, { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.build.json')], { stdio: 'inherit' })
for (const name of readdirSync(dist).filter((file) => file.endsWith('.d.ts'))) {
  const file = join(dist, name)
  writeFileSync(file, readFileSync(file, 'utf8').replace(/(from\s+['"]\.{1,2}\/[^'"]+)\.ts(['"])/g, '$1.js$2'))
}
