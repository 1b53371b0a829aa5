// Request bodies of the process routes: JSON whatever the Content-Type says, refused before parsing when it
// nests too deep.
import { badRequest, invalidRequest } from '../../errors'
import { MAX_METADATA_DEPTH, tooDeeplyNested } from '../model'

/**
 * The body of a route that takes one: JSON whatever the Content-Type says (so `curl -d '{"type":"x"}'` works
 * without `-H`), refused before JSON.parse and TypeBox see it when it nests too deep (see tooDeeplyNested).
 * Empty or not JSON → 400. Runs after the auth plugin's parse hook, so an anonymous caller gets 401 first.
 */
export async function jsonBody({ request }: { request: Request }): Promise<unknown> {
  const text = await request.text()
  if (text.length === 0) throw badRequest('Request body is empty; expected JSON')
  const field = tooDeeplyNested(text, MAX_METADATA_DEPTH)
  if (field !== null) {
    const path = `/${field.replaceAll('~', '~0').replaceAll('/', '~1')}`
    const message = `nested deeper than ${MAX_METADATA_DEPTH} levels`
    throw invalidRequest(`Invalid body${field ? ` ${path}` : ''}: ${message}`, [{ path: field ? path : '/', message }])
  }
  try {
    return JSON.parse(text)
  } catch {
    throw badRequest('Request body is not valid JSON')
  }
}

/**
 * `parse` for a route with a body. 'json' after jsonBody never runs (jsonBody answers or throws); it is what tells
 * the OpenAPI document the body is application/json.
 */
export const JSON_BODY: [typeof jsonBody, 'json'] = [jsonBody, 'json']

export { noBody } from '../../validation'
