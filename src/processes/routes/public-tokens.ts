// Public (end-user) tokens (README: Public tokens): `POST /tokens/public` mints one for a browser to follow some
// processes (member role or more), `DELETE /tokens/public/{id}` revokes it; what it may read is checked by
// src/auth/public-tokens.ts (the routes) and by scope.ts (the processes).
import { Elysia, t } from 'elysia'
import { activeWorkspace, auditRowFor, authPlugin, requireWriter } from '../../auth/plugin'
import { PUBLIC_TTL_DEFAULT_S, PUBLIC_TTL_MAX_S } from '../../auth/public-tokens'
import { writeAuditRows } from '../../auth/audit'
import { forbidden, invalidRequest, notFound } from '../../errors'
import type { Services } from '../../wiring'
import { Id, IdParams, Tags } from '../model'
import { JSON_BODY, noBody } from './body'
import { bodyErrors, errors, responses } from './docs'

const MintBody = t.Object(
  {
    workspace_id: t.Optional(Id),
    process_ids: t.Optional(t.Array(Id, { minItems: 1, maxItems: 100 })),
    tags: t.Optional(Tags()),
    ttl_s: t.Optional(t.Integer({ minimum: 1, maximum: PUBLIC_TTL_MAX_S })),
  },
  { additionalProperties: false },
)
const Minted = t.Object({ id: t.Integer(), token: t.String(), expires_at: t.String({ format: 'date-time' }) })

export function publicTokenRoutes(s: Services) {
  return new Elysia({ prefix: '/tokens/public' })
    .use(authPlugin(s))
    .post(
      '',
      async ({ body, principal, state, request, set }) => {
        // A public token cannot mint another (it never reaches here: its routes are the reads), nor a session.
        if (principal.scope || principal.sessionId !== null) throw forbidden('Public tokens are minted with an API token')
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireWriter(principal, workspaceId)
        if (!body.process_ids && (!body.tags || body.tags.length === 0))
          throw invalidRequest('Invalid body: give process_ids or tags (what the token may read)', [{ path: '/', message: 'process_ids or tags' }])
        const minted = await s.publicTokens.mint({
          workspaceId,
          userId: principal.userId,
          apiTokenId: principal.tokenId,
          processIds: body.process_ids ? [...new Set(body.process_ids)] : null,
          tags: body.tags && body.tags.length > 0 ? [...new Set(body.tags)] : null,
          ttlS: body.ttl_s ?? PUBLIC_TTL_DEFAULT_S,
        })
        await writeAuditRows(s.sql, [auditRowFor(request, state, 201)])
        state.audited = true
        set.status = 201
        set.headers['cache-control'] = 'no-store'
        return minted
      },
      {
        parse: JSON_BODY,
        body: MintBody,
        detail: {
          summary: 'Mint a read-only public token scoped to process ids and/or tags (extension; member role or more)',
          tags: ['auth'],
          responses: responses({ 201: Minted, ...errors, ...bodyErrors }),
        },
      },
    )
    .delete(
      '/:id',
      async ({ params: { id }, principal, state, request }) => {
        if (principal.scope) throw forbidden('A public token cannot revoke tokens')
        const revoked = await s.publicTokens.revoke(id, principal.writableWorkspaceIds)
        if (!revoked) throw notFound('Public token not found')
        await writeAuditRows(s.sql, [auditRowFor(request, state, 200)])
        state.audited = true
        return { id, revoked: true }
      },
      {
        parse: noBody,
        params: IdParams,
        detail: {
          summary: 'Revoke a public token (extension); its streams close within AUTH_CACHE_MS',
          tags: ['auth'],
          responses: responses({ 200: t.Object({ id: t.Integer(), revoked: t.Boolean() }), ...errors }),
        },
      },
    )
}
