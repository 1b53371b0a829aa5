-- audit_log and process_events become range-partitioned on created_at, so retention drops whole partitions
-- instead of deleting rows (src/db/retention.ts). Existing rows, ids and sequences are kept.
--
-- Each table gets daily partitions from its oldest row's day to three days ahead, and a default partition
-- so an insert never fails for want of one; the retention job keeps creating partitions ahead
-- (PARTITION_INTERVAL_MS wide) and drops those past their retention. The new tables are built from the old
-- ones' columns (`like … including defaults`), so a column added by an earlier migration comes along.
--
-- process_events loses its foreign key to processes: finished processes are pruned by rows, their events by
-- partitions, and the append-only trigger refuses the row deletes a cascade would need.

create function partition_days(parent regclass, first_day date, last_day date) returns void language plpgsql as $$
declare
  d date := first_day;
  name text;
begin
  while d <= last_day loop
    name := parent::text || '_p' || to_char(d, 'YYYYMMDD"_"HH24MI');
    execute format('create table %I partition of %s for values from (%L) to (%L)', name, parent,
                   d::timestamp at time zone 'UTC', (d + 1)::timestamp at time zone 'UTC');
    d := d + 1;
  end loop;
end
$$;

-- audit_log ----------------------------------------------------------------------------------------------
alter table audit_log rename to audit_log_unpartitioned;
alter table audit_log_unpartitioned rename constraint audit_log_pkey to audit_log_unpartitioned_pkey;
alter index audit_log_created_idx rename to audit_log_unpartitioned_created_idx;

create table audit_log (like audit_log_unpartitioned including defaults) partition by range (created_at);
alter table audit_log add primary key (id, created_at);
create index audit_log_created_idx on audit_log (created_at);
alter sequence audit_log_id_seq owned by audit_log.id;
create table audit_log_default partition of audit_log default;

select partition_days('audit_log',
                      coalesce((select min(created_at) at time zone 'UTC' from audit_log_unpartitioned)::date,
                               (now() at time zone 'UTC')::date),
                      (now() at time zone 'UTC')::date + 3);
insert into audit_log select * from audit_log_unpartitioned;
drop table audit_log_unpartitioned;

-- process_events -----------------------------------------------------------------------------------------
alter table process_events rename to process_events_unpartitioned;
alter table process_events_unpartitioned rename constraint process_events_pkey to process_events_unpartitioned_pkey;
alter index process_events_process_idx rename to process_events_unpartitioned_process_idx;

create table process_events (like process_events_unpartitioned including defaults) partition by range (created_at);
alter table process_events add primary key (id, created_at);
create index process_events_process_idx on process_events (process_id, id);
alter sequence process_events_id_seq owned by process_events.id;

-- Append-only, as before: update and delete refused on every partition (row triggers are cloned to each),
-- truncate refused on the table and (below, and by the retention job) on each partition. Dropping an old
-- partition is retention's privilege.
create trigger process_events_append_only
  before update or delete on process_events
  for each row execute function process_events_append_only();
create trigger process_events_no_truncate
  before truncate on process_events
  for each statement execute function process_events_append_only();

create table process_events_default partition of process_events default;

select partition_days('process_events',
                      coalesce((select min(created_at) at time zone 'UTC' from process_events_unpartitioned)::date,
                               (now() at time zone 'UTC')::date),
                      (now() at time zone 'UTC')::date + 3);
do $$
declare part regclass;
begin
  for part in select inhrelid::regclass from pg_inherits where inhparent = 'process_events'::regclass loop
    execute format('create trigger process_events_no_truncate before truncate on %s
                    for each statement execute function process_events_append_only()', part);
  end loop;
end
$$;
insert into process_events select * from process_events_unpartitioned;
drop table process_events_unpartitioned;
drop function partition_days(regclass, date, date);

-- Retention reads finished processes by when they finished, and idempotency keys by age.
create index processes_finished_idx on processes (finished_at) where status in ('completed', 'failed', 'cancelled');
create index idempotency_keys_created_idx on idempotency_keys (created_at);
