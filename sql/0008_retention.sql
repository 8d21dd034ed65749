-- Retention (docs/operations.md, "Retention"): old history is deleted in small batches. These
-- indexes let each batch find its oldest rows, and let the foreign-key checks of a deletion (and
-- retention's own "still referenced?" checks) look up the referencing rows instead of scanning.
CREATE INDEX events_by_receipt ON events (received_at);
CREATE INDEX jobs_finished ON jobs (completed_at)
    WHERE state IN ('done', 'failed', 'superseded');
CREATE INDEX grants_by_effective_end ON grants (effective_end);
CREATE INDEX grants_by_event ON grants (event_id);
CREATE INDEX grants_by_ending_event ON grants (ended_by);
CREATE INDEX provisioning_log_by_finish ON provisioning_log (finished_at);
CREATE INDEX provisioning_log_by_job ON provisioning_log (job_id);
CREATE INDEX graph_hints_finished ON graph_hints (completed_at)
    WHERE state IN ('done', 'failed');
