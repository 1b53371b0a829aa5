// The process routes (README: API): reading, the two streams, and changing processes, one plugin each.
import { Elysia } from 'elysia'
import type { Services } from '../wiring'
import { processActions } from './routes/actions'
import { processReads } from './routes/read'
import { processStreams } from './routes/stream'
import { publicTokenRoutes } from './routes/public-tokens'
import { processWrites } from './routes/write'

export function processes(s: Services) {
  return new Elysia().use(processReads(s)).use(processStreams(s)).use(processWrites(s)).use(processActions(s)).use(publicTokenRoutes(s))
}
