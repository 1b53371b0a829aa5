-- The claim's plan must not depend on fresh statistics (src/processes/queries.ts claimPlanSettings). Right
-- after a bulk create, before analyze, the planner took 50,000 new pending rows for one, and any query that
-- says status = 'pending' could then read them all through this run_at index (a claim: 0.8 ms → 470 ms).
-- The index gets a predicate the claim never states, so only the queries that ask for it by that predicate
-- (when the next delayed process comes due; the oldest pending age) can use it.
drop index processes_pending_run_at_idx;
create index processes_pending_run_at_idx on processes (run_at) where status = 'pending' and run_at > '-infinity';
