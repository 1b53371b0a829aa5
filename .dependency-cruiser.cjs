// The house's layers (`npm test` runs `npm run lint:deps` first): no import cycles between files, and no
// import from a lower layer of src/ up to a higher one. From the ground up: the leaves (config, errors,
// validation), ops/ (log, metrics, loops), db/, auth/, hub/, the features (processes/, workers/, queues/,
// schedules/, webhooks/), then the app (with health.ts: the routes that read every layer), the server and
// the executable.
const leaves = '^src/(config|errors|validation|allowed-methods|admin-channel|text-imports)\\.ts$'
const features = '^src/(processes|workers|queues|schedules|webhooks|dashboard|me\\.ts|seed\\.ts|wiring\\.ts)'
const top = '^src/(app|health|server|main|cli|cli-watch)\\.ts$'

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'leaves-import-nothing-above',
      severity: 'error',
      from: { path: leaves },
      to: { path: '^src/', pathNot: leaves },
    },
    {
      name: 'ops-below-db',
      severity: 'error',
      from: { path: '^src/ops/' },
      to: { path: [features, top, '^src/(db|auth|hub)/'] },
    },
    {
      name: 'db-below-features',
      severity: 'error',
      from: { path: '^src/db/' },
      to: { path: [features, top, '^src/(auth|hub)/'] },
    },
    {
      name: 'hub-below-features',
      severity: 'error',
      from: { path: '^src/hub/' },
      to: { path: [features, top, '^src/auth/'] },
    },
    {
      name: 'auth-below-features',
      severity: 'error',
      from: { path: '^src/auth/' },
      to: { path: [top, '^src/(workers|queues|schedules|webhooks|dashboard)/'] },
    },
    {
      name: 'nothing-imports-the-top',
      severity: 'error',
      from: { path: '^src/', pathNot: top },
      to: { path: top },
    },
    { name: 'src-never-imports-tests-or-bench', severity: 'error', from: { path: '^(src|packages)/' }, to: { path: '^(tests|bench)/' } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/|^packages/client/dist/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
}
