// One Process as the API shows it, for the client tests that serve their own answers: every field the type
// has, so a field added to Process is added here once.
import type { Process } from '@processes/client'

export function processFixture(fields: Partial<Process> = {}): Process {
  return {
    id: 1,
    workspace_id: 1,
    type: 'csv_import',
    status: 'pending',
    progress: 0,
    message: null,
    metadata: {},
    result_summary: null,
    error: null,
    attempts: 0,
    version: 1,
    worker_id: null,
    created_by: 1,
    created_at: '',
    updated_at: '',
    started_at: null,
    finished_at: null,
    priority: 0,
    run_at: '',
    max_attempts: 1,
    tags: [],
    parent_id: null,
    root_id: 1,
    children: null,
    error_stack: null,
    ...fields,
  }
}
