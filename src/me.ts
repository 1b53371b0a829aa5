// GET /me (extension): who the token belongs to and which workspaces it can see; the dashboard starts here.
import { Elysia, t } from 'elysia'
import { authPlugin } from './auth/plugin'
import { findUser, listWorkspacesOf } from './auth/queries'
import { documented } from './ops/docs'
import { ErrorSchema } from './processes/model'
import type { Services } from './wiring'

/** GET /me's answer (the client package's `Me` is checked against it). */
export const MeResponse = t.Object({
  user: t.Union([t.Object({ id: t.Integer(), email: t.String() }), t.Null()]),
  workspaces: t.Array(t.Object({ id: t.Integer(), name: t.String(), role: t.String() })),
})

export function me(s: Services) {
  return new Elysia().use(authPlugin(s)).get(
    '/me',
    async ({ principal }) => ({
      user: await findUser(s.sql, principal.userId),
      workspaces: await listWorkspacesOf(s.sql, principal.userId),
    }),
    {
      detail: {
        summary: 'The caller and their workspaces (extension)',
        tags: ['auth'],
        responses: documented({
          200: ['OK', MeResponse],
          401: ['unauthenticated', ErrorSchema],
          500: ['internal', ErrorSchema],
          503: ['unavailable', ErrorSchema],
        }),
      },
    },
  )
}
