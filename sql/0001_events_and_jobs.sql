-- Every accepted event, and one job per application its group is assigned to.
-- Never edit a migration that has been applied; add a new file.

-- Applications known to the service (from configuration). Intake locks an application's row to
-- serialise admission decisions across replicas (DESIGN.md §3).
CREATE TABLE applications (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id              bigserial PRIMARY KEY,
    -- where it came from: api | graph | eventgrid | audit
    source          text NOT NULL,
    -- the sender's id: the idempotency key within a source
    source_event_id text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('activation', 'deactivation')),
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    group_id        text NOT NULL,
    principal_id    text NOT NULL,
    ends_at         timestamptz,
    -- user and group attributes as sent (optional; the SCIM mapping reads them)
    user_attributes  jsonb,
    group_attributes jsonb,
    -- routed: jobs exist; unrouted: the group is assigned to no application
    routing         text NOT NULL CHECK (routing IN ('routed', 'unrouted')),
    UNIQUE (source, source_event_id)
);

CREATE TABLE jobs (
    id              bigserial PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES events (id),
    application     text NOT NULL REFERENCES applications (name),
    action          text NOT NULL CHECK (action IN ('add', 'remove')),
    lane            text NOT NULL CHECK (lane IN ('immediate', 'deferred')),
    -- when admission put it in the immediate lane (Postgres clock); the admission window counts these
    admitted_at     timestamptz,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner     text,
    lease_expires_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at    timestamptz,
    UNIQUE (event_id, application),
    CHECK ((lane = 'immediate') = (admitted_at IS NOT NULL))
);

-- The admission window query: immediate admissions of one application, newest first.
CREATE INDEX jobs_admissions ON jobs (application, admitted_at) WHERE lane = 'immediate';
-- The dispatcher's claim query.
CREATE INDEX jobs_immediate_ready ON jobs (next_attempt_at)
    WHERE lane = 'immediate' AND state IN ('pending', 'running');
CREATE INDEX jobs_by_state ON jobs (application, lane, state);
