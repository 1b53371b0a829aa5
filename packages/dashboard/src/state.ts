// What the page knows: who signed in, the active workspace and the caller's role in it.
import type { Me } from './types'

export const session = {
  me: null as Me | null,
  workspaceId: 0,
  role: 'viewer',
}

export const canChange = () => session.role !== 'viewer'
export const canAdmin = () => session.role === 'owner' || session.role === 'admin'
export const wsQuery = () => `workspace_id=${session.workspaceId}`
