-- Live state (src/processes/live.ts): progress is acked once accepted and written behind, so a stream may have
-- shown versions the row does not hold yet. live_base is the version the current lease's live states count on
-- from; the holder's writes are guarded by it, and a takeover moves it past anything the last holder showed.
-- A constant default: no table rewrite.
alter table processes add column live_base bigint not null default 0;
