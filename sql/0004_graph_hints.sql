-- Microsoft Graph change notifications are hints: "this group's membership changed". Each is
-- stored here before the webhook answers, and a resolver asks Graph which PIM activations are
-- active in the group and turns the differences into events (DESIGN.md §2).

CREATE TABLE graph_hints (
    id               bigserial PRIMARY KEY,
    -- the Entra group whose membership changed
    group_id         text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'done', 'failed')),
    -- notifications folded into this hint while it waited
    notifications    integer NOT NULL DEFAULT 1,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    received_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at     timestamptz
);
-- One waiting hint per group: later notifications for it are folded in, as one look-up answers all.
CREATE UNIQUE INDEX graph_hints_one_pending ON graph_hints (group_id) WHERE state = 'pending';
CREATE INDEX graph_hints_ready ON graph_hints (next_attempt_at) WHERE state IN ('pending', 'running');

-- Graph-sourced events of one group, newest first per user (the resolver's comparison).
CREATE INDEX events_by_source_group ON events (source, group_id, principal_id, occurred_at DESC);
