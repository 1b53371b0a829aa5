// Build dist/: ESM + .d.ts (dist/), and CommonJS + .d.ts (dist/cjs/, marked "type": "commonjs"), both by tsc;
// then point the declarations' relative `.ts` imports at `.js` as well (tsc's rewriteRelativeImportExtensions
// rewrites the JavaScript it emits, not the .d.ts files).
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const here = new URL('.', import.meta.url).pathname
const dist = join(here, 'dist')
const cjs = join(dist, 'cjs')
rmSync(dist, { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
const build = (...flags) => execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.build.json'), ...flags], { stdio: 'inherit' })
build()
// `require('@processes/client')` under Node 20 and older, where require() cannot load ES modules.
build('--module', 'commonjs', '--moduleResolution', 'node10', '--verbatimModuleSyntax', 'false', '--outDir', cjs)
writeFileSync(join(cjs, 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`)
for (const folder of [dist, cjs]) {
  for (const name of readdirSync(folder).filter((file) => file.endsWith('.d.ts'))) {
    const file = join(folder, name)
    writeFileSync(file, readFileSync(file, 'utf8').replace(/(from\s+['"]\.{1,2}\/[^'"]+)\.ts(['"])/g, '$1.js$2'))
  }
}
