// The migrations, embedded as text so the compiled executable carries them (no sql/ folder needed).
// Add each new sql/NNN_name.sql here; tests/db/migrate.test.ts checks this list matches the folder.
import init from '../../sql/001_init.sql' with { type: 'text' }
import processJson from '../../sql/002_process_json.sql' with { type: 'text' }
import queue from '../../sql/003_queue.sql' with { type: 'text' }
import security from '../../sql/004_security.sql' with { type: 'text' }
import storage from '../../sql/005_storage.sql' with { type: 'text' }
import workers from '../../sql/006_workers.sql' with { type: 'text' }
import processesVacuum from '../../sql/007_processes_vacuum.sql' with { type: 'text' }
import claimPlan from '../../sql/008_claim_plan.sql' with { type: 'text' }
import liveState from '../../sql/009_live_state.sql' with { type: 'text' }
import queues from '../../sql/010_queues.sql' with { type: 'text' }
import schedules from '../../sql/011_schedules.sql' with { type: 'text' }
import webhooks from '../../sql/012_webhooks.sql' with { type: 'text' }
import trees from '../../sql/013_trees.sql' with { type: 'text' }
import liveOutput from '../../sql/014_live_output.sql' with { type: 'text' }
import boundedCost from '../../sql/015_bounded_cost.sql' with { type: 'text' }
import treeClaims from '../../sql/016_tree_claims.sql' with { type: 'text' }
import consoleViews from '../../sql/017_console.sql' with { type: 'text' }
import boundedReads from '../../sql/018_bounded_reads.sql' with { type: 'text' }
import scheduleQuotaSkips from '../../sql/019_schedule_quota_skips.sql' with { type: 'text' }

export interface Migration {
  name: string
  text: string
}

export const MIGRATIONS: Migration[] = [
  { name: '001_init.sql', text: init },
  { name: '002_process_json.sql', text: processJson },
  { name: '003_queue.sql', text: queue },
  { name: '004_security.sql', text: security },
  { name: '005_storage.sql', text: storage },
  { name: '006_workers.sql', text: workers },
  { name: '007_processes_vacuum.sql', text: processesVacuum },
  { name: '008_claim_plan.sql', text: claimPlan },
  { name: '009_live_state.sql', text: liveState },
  { name: '010_queues.sql', text: queues },
  { name: '011_schedules.sql', text: schedules },
  { name: '012_webhooks.sql', text: webhooks },
  { name: '013_trees.sql', text: trees },
  { name: '014_live_output.sql', text: liveOutput },
  { name: '015_bounded_cost.sql', text: boundedCost },
  { name: '016_tree_claims.sql', text: treeClaims },
  { name: '017_console.sql', text: consoleViews },
  { name: '018_bounded_reads.sql', text: boundedReads },
  { name: '019_schedule_quota_skips.sql', text: scheduleQuotaSkips },
]
