-- Jobs by their event. Without it, deleting an old event (retention) made Postgres check the
-- foreign key from `jobs` by scanning the whole jobs table once per deleted row, and the events
-- retention statement's "no job references it" test scanned it once per batch.
CREATE INDEX jobs_by_event ON jobs (event_id);
