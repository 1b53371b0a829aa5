-- A schedule's tick past its workspace's quotas is recorded as skipped, naming the quota, instead of creating
-- a process: ticks count against WORKSPACE_MAX_PENDING and the rest like any create.
alter table schedule_runs drop constraint schedule_runs_skipped_check;
alter table schedule_runs add constraint schedule_runs_skipped_check check (skipped in ('overlap', 'quota'));
alter table schedule_runs add column skipped_quota text;
