-- Membership truth (docs/correctness.md): grants decide what a user should have, and pimbridge's
-- record of AWS says what AWS has, with where it came from. Replaces "the newest event decides".

-- The grant an activation starts or a deactivation ends: the PIM instance id where the source has
-- one, our event's `grantId`, or else the event's own id.
ALTER TABLE events ADD COLUMN grant_id text;

-- One grant per activation (an extension is a new end for the same grant). A user should be a
-- member of a group in an application iff at least one of the pair's grants is active.
CREATE TABLE grants (
    id           bigserial PRIMARY KEY,
    application  text NOT NULL REFERENCES applications (name),
    -- api | audit (Entra audit records, however delivered) | graph | operator
    source       text NOT NULL,
    grant_key    text NOT NULL,
    principal_id text NOT NULL,
    group_id     text NOT NULL,
    started_at   timestamptz NOT NULL,
    -- the requested end, bounded by the application's max_grant_duration
    ends_at      timestamptz NOT NULL,
    -- when the newest activation of this grant (the start, or its latest extension) happened:
    -- an extension delivered out of order never shortens a newer one
    activated_at timestamptz NOT NULL,
    -- set when a deactivation ended it early
    ended_at     timestamptz,
    effective_end timestamptz GENERATED ALWAYS AS (least(ends_at, ended_at)) STORED,
    -- the activation (or latest extension) and the deactivation that ended it
    event_id     bigint REFERENCES events (id),
    ended_by     bigint REFERENCES events (id),
    -- e.g. that the requested end was shortened to max_grant_duration
    note         text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (application, source, grant_key)
);
CREATE INDEX grants_by_pair ON grants (application, principal_id, group_id, effective_end);
CREATE INDEX grants_by_end ON grants (application, effective_end);

-- What pimbridge knows of one membership in AWS. `aws_state` is `unknown` whenever a request's
-- outcome was not confirmed; nothing is skipped on the strength of an unknown record.
-- `provenance`: `owned` when pimbridge added it while AWS did not hold it (only these are ever
-- removed), `standing` when AWS held it before pimbridge's first add; NULL when pimbridge never
-- sent an add for it.
CREATE TABLE aws_memberships (
    application  text NOT NULL REFERENCES applications (name),
    principal_id text NOT NULL,
    group_id     text NOT NULL,
    aws_state    text NOT NULL CHECK (aws_state IN ('present', 'absent', 'unknown')),
    provenance   text CHECK (provenance IN ('owned', 'standing')),
    -- when pimbridge last saw the membership in AWS itself (drift check)
    verified_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (application, principal_id, group_id)
);
CREATE INDEX aws_memberships_unsettled ON aws_memberships (application)
    WHERE aws_state <> 'absent';

-- Carry over what the previous model knew: memberships pimbridge confirmed, and the activations
-- behind them as grants (an activation without an end lasts 24 hours, the longest PIM allows).
INSERT INTO aws_memberships (application, principal_id, group_id, aws_state, provenance)
SELECT application, principal_id, group_id,
       CASE WHEN present THEN 'present' ELSE 'absent' END, 'owned'
FROM memberships;

INSERT INTO grants (application, source, grant_key, principal_id, group_id, started_at, ends_at,
                    activated_at, event_id)
SELECT j.application,
       CASE WHEN e.source = 'eventgrid' THEN 'audit' ELSE e.source END,
       e.source_event_id, e.principal_id, e.group_id, e.occurred_at,
       least(coalesce(e.ends_at, e.occurred_at + interval '24 hours'),
             e.received_at + interval '24 hours'),
       e.occurred_at, e.id
FROM events e JOIN jobs j ON j.event_id = e.id
WHERE e.kind = 'activation'
ON CONFLICT DO NOTHING;

UPDATE grants g SET (ended_at, ended_by) = (
    SELECT e.occurred_at, e.id FROM events e JOIN jobs j ON j.event_id = e.id
    WHERE e.kind = 'deactivation' AND j.application = g.application
      AND e.principal_id = g.principal_id AND e.group_id = g.group_id
      AND (CASE WHEN e.source = 'eventgrid' THEN 'audit' ELSE e.source END) = g.source
      AND e.occurred_at > g.started_at
    ORDER BY e.occurred_at LIMIT 1);

DROP TABLE memberships;

-- The provisioning log links every step to its event, grant, job and cycle, and names steps
-- beyond membership changes (users created or updated, groups created, checks, holds).
ALTER TABLE provisioning_log ADD COLUMN event_id bigint;
ALTER TABLE provisioning_log ADD COLUMN grant_id bigint;
ALTER TABLE provisioning_log DROP CONSTRAINT provisioning_log_action_check;
ALTER TABLE provisioning_log ADD CONSTRAINT provisioning_log_action_check
    CHECK (action IN ('add', 'remove', 'create_user', 'update_user', 'create_group', 'verify'));
ALTER TABLE provisioning_log DROP CONSTRAINT provisioning_log_status_check;
ALTER TABLE provisioning_log ADD CONSTRAINT provisioning_log_status_check
    CHECK (status IN ('succeeded', 'skipped', 'retrying', 'failed', 'superseded', 'held'));

-- Drift found by a cycle's check of AWS, per application and kind, for metrics that survive
-- restarts: a missing owned membership re-added, an ended one still present removed.
ALTER TABLE cycles ADD COLUMN drift_found integer NOT NULL DEFAULT 0;
