-- Sync cycles (DESIGN.md §5): the deferred lane, deactivations and expiry, with a provisioning log.

-- When each application's next cycle is due. NULL: never cycled, so its initial cycle is due now.
ALTER TABLE applications ADD COLUMN next_cycle_at timestamptz;
-- Quarantine, as Entra does it: set when AWS refuses the credentials or nearly every change
-- fails; cycles then back off (6 h, 12 h, 24 h, then daily) until one succeeds or an operator
-- clears it. `quarantine_count` is how many cycles in a row ended in quarantine.
ALTER TABLE applications ADD COLUMN quarantined_at timestamptz;
ALTER TABLE applications ADD COLUMN quarantine_reason text;
ALTER TABLE applications ADD COLUMN quarantine_count integer NOT NULL DEFAULT 0;

-- A job that a newer event made pointless (e.g. an activation followed by a deactivation) ends
-- 'superseded'; `note` says why, without calling it an error.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('pending', 'running', 'done', 'failed', 'superseded'));
ALTER TABLE jobs ADD COLUMN note text;
-- The cycle that last handled a deferred job.
ALTER TABLE jobs ADD COLUMN cycle_id bigint;
CREATE INDEX jobs_deferred_pending ON jobs (application, created_at)
    WHERE lane = 'deferred' AND state = 'pending';

-- The net desired state looks up the latest event of one user in one group.
CREATE INDEX events_by_pair ON events (principal_id, group_id, occurred_at DESC, id DESC);

CREATE TABLE cycles (
    id              bigserial PRIMARY KEY,
    application     text NOT NULL REFERENCES applications (name),
    -- initial: the application's first cycle; incremental: every later one
    kind            text NOT NULL CHECK (kind IN ('initial', 'incremental')),
    -- the replica that ran it
    owner           text NOT NULL,
    -- events received up to this instant are in the cycle (Postgres clock)
    cutoff          timestamptz NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    -- running → succeeded | partial (some changes failed) | failed | interrupted (replica died)
    outcome         text NOT NULL DEFAULT 'running'
                    CHECK (outcome IN ('running', 'succeeded', 'partial', 'failed', 'interrupted')),
    changes_planned integer NOT NULL DEFAULT 0,
    changes_applied integer NOT NULL DEFAULT 0,
    changes_skipped integer NOT NULL DEFAULT 0,
    changes_failed  integer NOT NULL DEFAULT 0,
    -- transient failures: their jobs stay pending for the next cycle
    changes_retrying integer NOT NULL DEFAULT 0,
    error           text
);
CREATE INDEX cycles_by_application ON cycles (application, id DESC);

-- What pimbridge last confirmed in AWS for one user in one group of one application, and the
-- event that state came from. Expiry removes present memberships whose activation has ended.
CREATE TABLE memberships (
    application  text NOT NULL REFERENCES applications (name),
    principal_id text NOT NULL,
    group_id     text NOT NULL,
    present      boolean NOT NULL,
    event_id     bigint NOT NULL REFERENCES events (id),
    occurred_at  timestamptz NOT NULL,
    ends_at      timestamptz,
    confirmed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (application, principal_id, group_id)
);
CREATE INDEX memberships_expiring ON memberships (application, ends_at) WHERE present;

-- One entry per membership change attempted in AWS (immediate lane and cycles), for operators.
CREATE TABLE provisioning_log (
    id           bigserial PRIMARY KEY,
    application  text NOT NULL REFERENCES applications (name),
    cycle_id     bigint REFERENCES cycles (id),
    job_id       bigint REFERENCES jobs (id),
    action       text NOT NULL CHECK (action IN ('add', 'remove')),
    principal_id text NOT NULL,
    group_id     text NOT NULL,
    -- succeeded | skipped (AWS already in the desired state) | retrying | failed
    status       text NOT NULL CHECK (status IN ('succeeded', 'skipped', 'retrying', 'failed')),
    -- a short machine-readable code for failures, e.g. scim_400, missing_attributes
    error_code   text,
    reason       text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX provisioning_log_by_application ON provisioning_log (application, id DESC);
CREATE INDEX provisioning_log_by_cycle ON provisioning_log (cycle_id) WHERE cycle_id IS NOT NULL;
